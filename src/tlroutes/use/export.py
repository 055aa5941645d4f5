"""Export a trained model to ONNX, TorchScript or a merged safetensors file.

The exported graph is one head of the model (with its stem and the trunk): it takes the
**preprocessed** input tensor — what :mod:`tlroutes.use.inputs` makes of new data, shape
``(batch, *input_shape)`` with any batch size — and returns the head's **raw outputs**: logits
for classification (apply softmax) and multilabel (apply a sigmoid per label), values for
regression. The manifest's ``outputs`` says the same.

LoRA adapters are merged into their base layers first (:func:`tlroutes.lora.merge_lora`, PEFT's
merge), so the exported model has the original architecture and no PEFT dependency.

- ``onnx``: :func:`torch.onnx.export` with ``dynamo=True`` (``torch.export`` then ONNX), the
  batch dimension dynamic; checked after writing: onnxruntime's outputs on a random batch must
  match PyTorch's within :data:`ONNX_TOLERANCE`. Needs the ``export`` extra.
- ``torchscript``: :func:`torch.jit.trace` (the forward pass of one head has no data-dependent
  control flow), saved with :func:`torch.jit.save`; checked the same way.
- ``safetensors``: the merged weights alone, with the manifest's short JSON in the metadata.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from tlroutes.backbones.sharing import TaskSharing
from tlroutes.errors import ConfigError, did_you_mean, require_extra

if TYPE_CHECKING:
    from tlroutes.use.predictor import Predictor

#: The export formats and their default file suffixes.
FORMATS: dict[str, str] = {"onnx": ".onnx", "torchscript": ".pt", "safetensors": ".safetensors"}
#: Largest absolute difference allowed between an exported model's outputs and PyTorch's.
ONNX_TOLERANCE = 1e-4


class HeadGraph(nn.Module):
    """One head of a :class:`~tlroutes.model.TransferModel` as a plain ``forward(x)``.

    Args:
        model: the model.
        stem: the stem that reads the input.
        head: the head whose outputs are returned.
    """

    def __init__(self, model: nn.Module, stem: str, head: str) -> None:
        super().__init__()
        self.stem = model.stems[stem]
        self.trunk = model.trunk
        self.head = model.heads[head]
        self.name = head
        # a multi-task architecture (MMoE, PLE, ...) gives each task its own features
        self.per_task = isinstance(model.trunk, TaskSharing)

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x)
        if self.per_task:
            return self.head(self.trunk(h, [self.name]).per_task[self.name])
        return self.head(self.trunk(h))


def example_input(predictor: Predictor, head: str, batch: int = 4, seed: int = 0) -> Tensor:
    """A random batch shaped as ``head``'s inputs: standard normal floats, or token ids below
    the stem's vocabulary size for text."""
    pre = predictor.manifest["heads"][head]["preprocessing"] or {}
    stem = predictor.manifest["heads"][head]["stem"]
    shape = tuple(predictor.model.domains[stem].input_shape)
    g = torch.Generator().manual_seed(seed)
    dtype = getattr(torch, pre.get("dtype") or "float32")
    if dtype.is_floating_point:
        return torch.randn((batch, *shape), generator=g, dtype=dtype)
    vocab = int(predictor.manifest["model"]["stems"][stem]["args"].get("vocab_size", 2))
    return torch.randint(0, vocab, (batch, *shape), generator=g, dtype=dtype)


def export_graph(predictor: Predictor, head: str | None = None) -> HeadGraph:
    """The head's graph, on the CPU in eval mode, LoRA merged (a copy: the predictor keeps its
    own model), in float32: it reads float32 inputs, as the manifest's preprocessing gives
    them. Weights trained in "bf16-true" are cast exactly, in "64-true" rounded to float32; a
    mixed-precision model runs without its autocast (a graph file holds none)."""
    name = predictor._head(head)
    model = copy.deepcopy(predictor.model).cpu().float().eval()
    if predictor.manifest["model"].get("lora"):
        from tlroutes.lora import merge_lora

        merge_lora(model)
    return HeadGraph(model, predictor.manifest["heads"][name]["stem"], name).eval()


def export_model(predictor: Predictor, *, format: str, out: str | Path | None = None,
                 head: str | None = None) -> Path:
    """Write ``predictor``'s model (one head) in ``format``; returns the file's path.

    Args:
        predictor: a loaded run (:func:`tlroutes.load`).
        format: ``"onnx"``, ``"torchscript"`` or ``"safetensors"``.
        out: the file. Default None: ``<run folder>/export/model.<suffix>`` (the head's name
            added when the model has several).
        head: the head to export. Default None: the only head.

    Raises:
        ConfigError: an unknown format or head; an operator the format lacks (named), or
            outputs that differ from PyTorch's by more than :data:`ONNX_TOLERANCE`.
        MissingExtraError: ONNX without the ``export`` extra.
    """
    if format not in FORMATS:
        raise ConfigError(f"Unknown export format '{format}'.{did_you_mean(format, FORMATS)} "
                          f"Formats: {', '.join(FORMATS)}.")
    name = predictor._head(head)
    if out is None:
        stem = "model" if len(predictor.heads) == 1 else f"model.{name}"
        out = predictor.folder / "export" / f"{stem}{FORMATS[format]}"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    graph = export_graph(predictor, name)
    if format == "safetensors":
        _safetensors(graph, predictor, name, out)
        return out
    x = example_input(predictor, name)
    with torch.no_grad():
        expected = graph(x)
    if format == "onnx":
        _onnx(graph, x, out)
        got = onnx_outputs(out, x)
    else:
        _torchscript(graph, x, out)
        got = torch.jit.load(str(out))(x).detach().numpy()
    _check_close(expected, got, format, out)
    return out


def _safetensors(graph: HeadGraph, predictor: Predictor, head: str, out: Path) -> None:
    from safetensors.torch import save as save_safetensors

    from tlroutes.manifest.record import short_manifest
    from tlroutes.runfolder import atomic_write

    tensors = {k: v.detach().contiguous().clone() for k, v in graph.state_dict().items()}
    meta = {"tlroutes.manifest": short_manifest(predictor.manifest), "tlroutes.head": head,
            "tlroutes.layout": "stem.*, trunk.*, head.* of tlroutes.use.export.HeadGraph"}
    atomic_write(out, save_safetensors(tensors, metadata=meta))


_MISSING_OP = re.compile(r"No ONNX function found for <OpOverload\(op='([^']+)'")


def _onnx(graph: HeadGraph, x: Tensor, out: Path) -> None:
    require_extra("onnx", "export", "ONNX export")
    require_extra("onnxscript", "export", "ONNX export")
    batch = torch.export.Dim("batch", min=1)
    try:
        torch.onnx.export(graph, (x,), str(out), dynamo=True, input_names=["input"],
                          output_names=["output"], dynamic_shapes=({0: batch},),
                          external_data=False, verbose=False)
    except Exception as exc:
        text = str(exc)
        missing = _MISSING_OP.search(text)
        if missing:
            raise ConfigError(
                f"ONNX has no function for the operator {missing.group(1)}, which this model "
                "uses: the model cannot be exported to ONNX as it is. Export it with --format "
                "torchscript, or replace the layer that uses that operator.") from None
        first = next((ln for ln in text.splitlines() if ln.strip()), type(exc).__name__)
        raise ConfigError(f"ONNX export failed: {first[:400]}") from exc


def _torchscript(graph: HeadGraph, x: Tensor, out: Path) -> None:
    import warnings

    try:
        with warnings.catch_warnings():
            # the stems' shape checks read the traced shape: known, and true for every batch
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace(graph, (x,), check_trace=False)
    except Exception as exc:
        first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise ConfigError(f"TorchScript export (torch.jit.trace) failed: {first[:400]}") from exc
    torch.jit.save(traced, str(out))


def onnx_outputs(path: str | Path, x: Tensor) -> Any:
    """The outputs of the ONNX model at ``path`` on ``x``, computed by onnxruntime (CPU)."""
    require_extra("onnxruntime", "export", "running an ONNX model")
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def _check_close(expected: Tensor, got: Any, format: str, out: Path) -> None:
    got = torch.as_tensor(got)
    if got.shape != expected.shape:
        raise ConfigError(f"The {format} model at {out} returns shape {tuple(got.shape)}, "
                          f"PyTorch {tuple(expected.shape)}.")
    diff = float((got.float() - expected.float()).abs().max()) if got.numel() else 0.0
    if diff > ONNX_TOLERANCE:
        raise ConfigError(f"The {format} model at {out} differs from PyTorch by up to {diff:.2e} "
                          f"(> {ONNX_TOLERANCE}); it is not a faithful export.")
