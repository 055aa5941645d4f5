"""Atomic writes into a run folder, refusing symlinks that lead out of it.

Every file tlroutes writes into a run folder goes through :func:`atomic_write`: the bytes go to a
temporary file in the target's own folder, are flushed and fsynced, the temporary file is renamed
over the target (``os.replace``, atomic on POSIX) and the folder is fsynced so that the rename
itself survives a power cut. A kill at any moment leaves either the old file or the new one,
never a torn one; a leftover temporary file (``.<name>.<random>.tmp``) is harmless.

Before writing, the target and every folder between it and its run folder are checked: none may
be a symlink, so that a link planted in ``--out`` (``report.html -> ~/.bashrc``) cannot redirect a
write outside the folder. The run folder itself may be a symlink (the user chose it). The run
folder of a path is the outermost registered folder above it (:func:`register_root`; the runner
and every :class:`~tlroutes.train.engine.Trainer` register theirs), so that a seed's or a job's
folder inside a run folder is checked as well, or ``root=`` when given; with neither, only the
target itself is checked.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from tlroutes.errors import RunFolderError

__all__ = ["atomic_write", "check_no_symlink", "fsync_dir", "register_root", "write_json",
           "write_text"]

#: Run folders registered in this process (absolute, unresolved paths). Only ever grows: a
#: registered folder adds checks, never removes them.
_ROOTS: set[str] = set()


def register_root(folder: str | Path) -> None:
    """Declare ``folder`` a run folder: writes below it check every path component below it."""
    _ROOTS.add(os.path.abspath(folder))


def _root_of(path: str, root: str | Path | None) -> str | None:
    if root is not None:
        return os.path.abspath(root)
    # The outermost registered folder: a seed's or a job's folder inside a run folder is checked
    # too (a planted ``seed-3 -> /elsewhere`` is refused); only the run folder may be a link.
    best = None
    for r in _ROOTS:
        if (path == r or path.startswith(r + os.sep)) and (best is None or len(r) < len(best)):
            best = r
    return best


def check_no_symlink(path: str | Path, root: str | Path | None = None) -> None:
    """Raise :class:`RunFolderError` when ``path``, or a folder between it and its run folder,
    is a symlink.

    Args:
        path: the file about to be written.
        root: its run folder; None (default) finds it among the registered roots.
    """
    target = os.path.abspath(path)
    top = _root_of(target, root)
    current = target
    while current != top:  # the run folder itself may be a link: the user chose it
        if os.path.islink(current):
            raise RunFolderError(
                f"{current} is a symbolic link; tlroutes never writes through a link in a run "
                f"folder (it could lead outside {top or os.path.dirname(target)}). Remove the "
                "link, or choose a new --out folder."
            )
        parent = os.path.dirname(current)
        if top is None or parent == current or not (parent == top
                                                    or parent.startswith(top + os.sep)):
            return  # without a run folder, only the target itself is checked
        current = parent


def fsync_dir(path: str | Path) -> None:
    """fsync a folder, so that a rename inside it is on disk (a no-op where folders can't be
    opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(
    path: str | Path,
    data: bytes | str | Callable[[IO[bytes]], Any],
    *,
    root: str | Path | None = None,
) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename, fsync the folder).

    Args:
        path: the target; its folder is created when missing.
        data: the content: bytes, text (written as UTF-8), or a function that writes into the
            open binary file (e.g. ``lambda f: np.savez(f, **arrays)``).
        root: the run folder the target belongs to; None (default) uses the registered one.

    Returns:
        ``path``.

    Raises:
        RunFolderError: the target or a folder between it and the run folder is a symlink.
    """
    path = Path(path)
    check_no_symlink(path, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); a run folder's files get the usual permissions.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return path


def write_text(path: str | Path, text: str, *, root: str | Path | None = None) -> Path:
    """:func:`atomic_write` of UTF-8 text."""
    return atomic_write(path, text, root=root)


def write_json(path: str | Path, data: Any, *, root: str | Path | None = None) -> Path:
    """:func:`atomic_write` of ``data`` as indented JSON."""
    return atomic_write(path, json.dumps(data, indent=2), root=root)
