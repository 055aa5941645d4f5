"""tlroutes: transfer learning by all eight of its routes, on PyTorch."""

__version__ = "0.1.0"
