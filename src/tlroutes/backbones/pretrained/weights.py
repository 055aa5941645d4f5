"""Loading weights into a trunk from a safetensors or torch file, without unpickling code."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from tlroutes.errors import CheckpointError


def _read_weights(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise CheckpointError(f"Cannot read safetensors file {path}: {exc}") from exc
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"Cannot read {path} as weights ({exc}). Only safetensors files and torch files that "
            "load with weights_only=True (tensors, no pickled code) are accepted."
        ) from exc
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict (a mapping of names to tensors).")
    return dict(obj)


def state_differences(
    own: Mapping[str, Tensor], saved: Mapping[str, Tensor], source: str = "file"
) -> dict[str, list[str]]:
    """How a saved state dict differs from a module's own: the keys ``missing`` from ``saved``,
    the ``unexpected`` ones it adds, and the ``mismatched`` shapes (each as ``"key: <source>
    (shape) vs model (shape)"``), every list sorted and empty when the two fit."""
    return {
        "missing": sorted(set(own) - set(saved)),
        "unexpected": sorted(set(saved) - set(own)),
        "mismatched": [
            f"{k}: {source} {tuple(saved[k].shape)} vs model {tuple(own[k].shape)}"
            for k in sorted(set(own) & set(saved))
            if tuple(own[k].shape) != tuple(saved[k].shape)
        ],
    }


def describe_differences(differences: Mapping[str, list[str]], source: str = "file",
                         n: int = 6) -> str:
    """What :func:`state_differences` found, in words (the first ``n`` keys of each kind)."""

    def few(items: list[str]) -> str:
        more = f" (+{len(items) - n} more)" if len(items) > n else ""
        return ", ".join(items[:n]) + more

    labels = {"missing": f"missing from the {source}", "unexpected": "not in the model",
              "mismatched": "shape differs"}
    return "; ".join(f"{label}: {few(differences[key])}"
                     for key, label in labels.items() if differences[key])


def load_pretrained(
    trunk: nn.Module, path: str | Path, strict: bool = True, prefix: str = ""
) -> dict[str, list[str]]:
    """Load weights from a safetensors file or a torch file (``weights_only=True``) into
    ``trunk``; never unpickles code.

    Args:
        trunk: any module (a trunk or the network inside it).
        path: ``*.safetensors`` or a torch file holding a state dict (also accepted: a dict
            whose ``"state_dict"``, ``"model_state_dict"`` or ``"model"`` entry is one).
        strict: every key of the module must be in the file with the same shape and vice
            versa. Default ``True``. With ``False`` the matching tensors are loaded and the rest
            reported; at least one must match.
        prefix: keep only the file's keys starting with this prefix and strip it, e.g.
            ``"trunk."`` to take the trunk out of a saved :class:`~tlroutes.model.TransferModel`
            or ``"module."`` for a DistributedDataParallel save. Default ``""``.

    Returns ``{"missing": [...], "unexpected": [...], "mismatched": [...]}`` (all empty when
    strict). Raises :class:`CheckpointError` for a missing or unreadable file, or — naming the
    missing, unexpected and shape-mismatched keys — when the file does not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No weights file at {path}.")
    saved = _read_weights(path)
    if prefix:
        saved = {k[len(prefix) :]: v for k, v in saved.items() if k.startswith(prefix)}
        if not saved:
            raise CheckpointError(f"No key in {path} starts with prefix {prefix!r}.")
    own = trunk.state_dict()
    report = state_differences(own, saved)
    usable = {k: v for k, v in saved.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if (strict and any(report.values())) or not usable:
        hint = (
            " Check that the file was saved from the same architecture; use prefix= to strip a "
            "leading name (e.g. 'trunk.' or 'module.') or strict=False to load what fits."
        )
        raise CheckpointError(
            f"Weights {path} do not fit {type(trunk).__name__} "
            f"({describe_differences(report) or 'no tensor matches'}).{hint}"
        )
    trunk.load_state_dict(usable, strict=False)
    return report
