"""Measurements that place a project on the cube: domains, tasks, transferability."""
