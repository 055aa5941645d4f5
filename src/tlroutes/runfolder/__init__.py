"""A run folder is a small database: locked, written atomically, hashed, read with validation.

- :mod:`~tlroutes.runfolder.lock`: one run at a time per folder (``.tlroutes.lock``, an OS file
  lock the kernel releases when its process dies, holding the process id for the refusal);
- :mod:`~tlroutes.runfolder.atomic`: every write is temporary file, fsync, rename, fsync the
  folder, and never through a symlink below the run folder;
- :mod:`~tlroutes.runfolder.reads`: every read of a side file is validated (pydantic shapes) and
  damage is one :class:`~tlroutes.errors.RunFolderError` naming the file and what to do;
- :mod:`~tlroutes.runfolder.fingerprint`: the inputs' hashes (``inputs.json``), saved at start
  and checked on resume.

Weights and checkpoints carry their own sha256 (see :mod:`tlroutes.train.checkpoint`).
This package sits in the foundation layer: it imports only :mod:`tlroutes.errors` and
:mod:`tlroutes.summary`, so every layer above may use it.
"""

from tlroutes.runfolder.atomic import (
    atomic_write,
    check_no_symlink,
    fsync_dir,
    register_root,
    write_json,
    write_text,
)
from tlroutes.runfolder.lock import LOCK_FILE, RunLock

__all__ = ["LOCK_FILE", "RunLock", "atomic_write", "check_no_symlink", "fsync_dir",
           "register_root", "write_json", "write_text"]
