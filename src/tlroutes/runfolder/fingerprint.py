"""The fingerprint of a run's input files, saved at start and checked on resume.

``inputs.json`` in the run folder lists every file or folder the resolved run file names (a data
``.npz``, ``model.weights``, a Dataset Merging label map, a Parallel Training job's data …: every
string of the run file, outside the :data:`NOT_INPUTS` blocks, that names an existing path with a
folder separator or a file suffix) and,
for built-in data, its declared spec (built-in data is generated from the spec, which ``run.yaml``
fixes too). A file up to :data:`FULL_HASH_LIMIT` bytes is hashed (sha256); a larger one, and every
file of a folder, is recorded by size and modification time, so that fingerprinting costs at most
a read of each small input, once per start or resume, and nothing per step.

On resume the fingerprint is taken again and compared: a file that changed or vanished is refused,
naming it, because a resumed run on other data is not the run that was stopped.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from tlroutes.errors import ConfigError

__all__ = ["FINGERPRINT_FILE", "FULL_HASH_LIMIT", "Fingerprint", "InputEntry", "check_inputs",
           "fingerprint", "sha256_file"]

#: The file in the run folder.
FINGERPRINT_FILE = "inputs.json"

#: Files up to this many bytes (1 GiB) are hashed in full (about 1-2 s per GB); larger ones are
#: recorded by size and modification time only.
FULL_HASH_LIMIT = 2**30

#: Top-level run-file blocks that name no inputs: where results go (tracking's MLflow store and
#: artifact folder are written by the run) and which devices run it.
NOT_INPUTS = frozenset({"tracking", "hardware"})

#: A folder of more files than this is recorded by its file count and total size only.
MAX_FOLDER_FILES = 100_000


class InputEntry(BaseModel):
    """One input: a file, a folder or a built-in data set, by the run-file field that names it."""

    model_config = ConfigDict(extra="forbid")

    field: str
    kind: Literal["file", "folder", "builtin"]
    path: str | None = None
    sha256: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    files: dict[str, tuple[int, int]] | None = None
    spec: dict[str, Any] | None = None


class Fingerprint(BaseModel):
    """``inputs.json``."""

    model_config = ConfigDict(extra="forbid")

    version: int = 1
    inputs: list[InputEntry]


def sha256_file(path: str | Path, chunk: int = 2**20) -> str:
    """The sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _strings(data: Any, where: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _strings(value, f"{where}.{key}" if where else str(key))
    elif isinstance(data, (list, tuple)):
        for i, value in enumerate(data):
            yield from _strings(value, f"{where}[{i}]")
    elif isinstance(data, str):
        yield where, data


def _names_a_path(text: str) -> bool:
    if not text or len(text) > 4096 or "\n" in text or "://" in text:
        return False
    if "/" not in text and os.sep not in text and not Path(text).suffix:
        return False  # 'digits', 'mlp', 'adamw': names, not paths
    try:
        return os.path.exists(text)
    except (OSError, ValueError):
        return False


def _entry(field: str, text: str) -> InputEntry:
    path = Path(text)
    if path.is_dir():
        files: dict[str, tuple[int, int]] = {}
        total = count = 0
        for found in sorted(path.rglob("*")):
            if found.is_file():
                st = found.stat()
                count, total = count + 1, total + st.st_size
                if count <= MAX_FOLDER_FILES:
                    files[str(found.relative_to(path))] = (st.st_size, st.st_mtime_ns)
        if count > MAX_FOLDER_FILES:
            return InputEntry(field=field, kind="folder", path=text, size=total,
                              files={"<files>": (count, 0)})
        return InputEntry(field=field, kind="folder", path=text, size=total, files=files)
    st = path.stat()
    if st.st_size <= FULL_HASH_LIMIT:
        return InputEntry(field=field, kind="file", path=text, size=st.st_size,
                          sha256=sha256_file(path))
    return InputEntry(field=field, kind="file", path=text, size=st.st_size,
                      mtime_ns=st.st_mtime_ns)


def fingerprint(spec: dict[str, Any]) -> Fingerprint:
    """The fingerprint of the inputs ``spec`` (a resolved run, as JSON data) names."""
    inputs = []
    read = {k: v for k, v in spec.items() if k not in NOT_INPUTS}
    for field, text in _strings(read):
        if _names_a_path(text):
            inputs.append(_entry(field, text))
        elif field.endswith("dataset"):
            # Built-in data: generated from its declared spec (the enclosing data block).
            block: Any = spec
            for part in field.split(".")[:-1]:
                block = block.get(part, {}) if isinstance(block, dict) else {}
            inputs.append(InputEntry(field=field, kind="builtin", spec=block or {"dataset": text}))
    return Fingerprint(inputs=inputs)


def check_inputs(saved: Fingerprint, now: Fingerprint, folder: Path) -> None:
    """Refuse a resume whose inputs differ from the saved ones, naming the first changed file.

    Raises:
        ConfigError: an input file changed, vanished or appeared.
    """
    before = {e.field: e for e in saved.inputs}
    after = {e.field: e for e in now.inputs}
    for field, old in before.items():
        new = after.get(field)
        what = f"{old.path} ({field})" if old.path else f"the built-in data of {field}"
        if new is None:
            problem = f"{what} no longer exists" if old.path else f"{what} is gone"
        elif new.kind != old.kind or new.path != old.path:
            problem = f"{what} is now {new.path or new.kind}"
        elif old.kind == "file" and (old.sha256 != new.sha256 or old.size != new.size
                                     or old.mtime_ns != new.mtime_ns):
            how = (f"sha256 {old.sha256[:12]}… then, {new.sha256[:12]}… now"
                   if old.sha256 and new.sha256 else f"{old.size} bytes then, {new.size} now")
            problem = f"{what} has changed since the run started ({how})"
        elif old.kind == "folder" and old.files != new.files:
            changed = sorted(set(old.files or {}) ^ set(new.files or {})) or sorted(
                k for k in (old.files or {}) if (old.files or {})[k] != (new.files or {}).get(k))
            problem = (f"{what} has changed since the run started (first: "
                       f"{changed[0] if changed else '?'})")
        elif old.kind == "builtin" and old.spec != new.spec:
            problem = f"{what} is declared differently"
        else:
            continue
        raise ConfigError(
            f"The data differs from what {folder} was started with: {problem}. A resumed run "
            "must read the same data: put the original back, or start a new --out folder."
        )
    for field, new in after.items():
        if field not in before:
            raise ConfigError(
                f"The data differs from what {folder} was started with: {new.path or field} "
                f"({field}) was not an input then. Resume with the same run file and data, or "
                "start a new --out folder.")
