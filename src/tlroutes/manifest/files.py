"""Reading a run folder's manifests, with the errors a user sees."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tlroutes.errors import ConfigError, RunFolderError
from tlroutes.runfolder.reads import read_json

#: The manifest's file name, beside the weights it describes.
MANIFEST_FILE = "manifest.json"
#: The manifest's ``format`` field, and the version this tlroutes writes and reads.
MANIFEST_FORMAT = "tlroutes-manifest"
MANIFEST_VERSION = 1


def find_manifests(run_dir: str | Path) -> dict[str, Path]:
    """The models a run folder holds, by name: ``""`` for the folder's own, ``seed-<s>`` for
    each seed of a multi-seed run, ``<job>`` for each Parallel Training job (and
    ``seed-<s>/<job>``), each the folder that holds ``model.safetensors``.

    Raises:
        ConfigError: the folder does not exist, or holds no trained model; or a model has no
            manifest (an older run), saying how to rebuild it.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is not a run folder: it does not exist.")
    found = sorted(p.parent for p in run_dir.rglob("model.safetensors")
                   if "checkpoints" not in p.relative_to(run_dir).parts)
    if not found:
        raise ConfigError(f"{run_dir} holds no trained model (model.safetensors): the run has not "
                          "finished. Finish it with `tlroutes run RUN.yaml --out "
                          f"{run_dir} --resume`.")
    missing = [f for f in found if not (f / MANIFEST_FILE).is_file()]
    if missing:
        shown = missing[0]
        raise ConfigError(
            f"{shown} holds model.safetensors but no {MANIFEST_FILE}: the run was made by a "
            "tlroutes from before manifests. Rebuild it with `tlroutes manifest "
            f"{run_dir}`: it resumes the run from its finished checkpoints (nothing is trained "
            "again) and writes the manifest beside the weights.")
    return {("" if f == run_dir else f.relative_to(run_dir).as_posix()): f for f in found}


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest in ``folder``, checked for its format and version.

    Raises:
        ConfigError: no manifest there (see :func:`find_manifests`).
        RunFolderError: it is damaged, or from a newer tlroutes.
    """
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        find_manifests(folder)  # says why: no model, or an older run
        raise ConfigError(f"{folder} holds no {MANIFEST_FILE}.")
    data = read_json(path, "manifest")
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise RunFolderError(f"{path} is not a tlroutes manifest (no format: "
                             f"{MANIFEST_FORMAT}); rebuild it with `tlroutes manifest`.")
    if data.get("version") != MANIFEST_VERSION:
        raise RunFolderError(f"{path} is manifest version {data.get('version')}; this tlroutes "
                             f"reads version {MANIFEST_VERSION}. Use the tlroutes that wrote it.")
    return data
