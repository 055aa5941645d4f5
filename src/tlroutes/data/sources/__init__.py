"""Where a user's data comes from: tables, ``.npz`` archives, Hugging Face ``datasets`` folders,
image folders and Python objects, each read into a :class:`~tlroutes.problem.Problem`.

Shared by every source: :mod:`~tlroutes.data.sources.labels` (class labels and task kinds read
safely) and :mod:`~tlroutes.data.sources.splitting` (automatic, seeded, stratified splits kept in
the run folder, and the Problem assembled from them).
"""
