"""One run at a time per run folder: an OS file lock held for the run's life.

The lock is ``fcntl.flock`` on ``<run folder>/.tlroutes.lock``, taken without waiting. The kernel
releases it when the holding process ends, however it ends (SIGKILL, power loss of the process),
so a stale lock file never blocks a resume: only a live holder does. The holder writes its
process id into the file, so the refusal names it. ``flock`` locks an open file description, so
two opens in one process exclude each other too (a notebook cannot start two runs into one
folder either). A process forked by the run (a DataLoader worker) inherits the open file
description, and would keep the lock alive after the run is killed until it noticed (or for
ever, when it hangs on a full queue); every forked child closes it at fork time
(:func:`close_inherited`, registered with ``os.register_at_fork``), before any of its own code
runs, so a kill releases the lock at once. (A DataLoader ``worker_init_fn`` closing it left a
window: a worker still starting when the run was killed held the lock; seen under a loaded
parallel test run.)

On systems without ``fcntl`` (Windows) the lock is not taken: a warning-free no-op, as tlroutes'
multi-process features are POSIX-only anyway.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from tlroutes.errors import ConfigError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILE", "RunLock", "close_inherited"]

#: The lock file's name inside the run folder.
LOCK_FILE = ".tlroutes.lock"

#: File descriptors of the locks this process holds (what a forked child inherits).
_HELD: set[int] = set()


def close_inherited() -> None:
    """In a forked child: close the run locks' descriptors inherited from the parent.

    Closing (not unlocking) drops only the child's reference, so the parent keeps its lock and
    the kernel releases it when the parent ends, however it ends.
    """
    for fd in list(_HELD):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=close_inherited)


class RunLock:
    """The lock of one run folder, taken by :meth:`acquire` and released by :meth:`release`.

    Use as ``with RunLock.acquire(folder): ...`` or keep the object for the run's life.
    """

    def __init__(self, folder: Path, fd: int | None) -> None:
        self.folder, self._fd = folder, fd

    @classmethod
    def acquire(cls, folder: str | Path) -> RunLock:
        """Take ``folder``'s lock at once (creating the folder), or refuse.

        Raises:
            ConfigError: another live process holds the lock; the message names its process id.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if fcntl is None:  # pragma: no cover - Windows
            return cls(folder, None)
        path = folder / LOCK_FILE
        if path.is_symlink():
            raise ConfigError(f"{path} is a symbolic link; remove it, or choose a new --out.")
        # O_NOFOLLOW: a link planted after the check is refused by the kernel too.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"process {holder}" if holder else "another process"
            raise ConfigError(
                f"{folder} is in use: {who} is running or resuming a run there (it holds "
                f"{LOCK_FILE}). Wait for it to end (or stop it), or choose another --out folder."
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _HELD.add(fd)
        return cls(folder, fd)

    @property
    def held(self) -> bool:
        """Whether this object still holds the lock."""
        return self._fd is not None

    def release(self) -> None:
        """Let go of the lock (idempotent). The file stays: removing it would race a newcomer."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        _HELD.discard(fd)
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None
