"""``tlroutes export``: ONNX and TorchScript give PyTorch's outputs, LoRA merged; bad input.

Tolerance 1e-4 (absolute, on logits of order 1): the exported graphs run the same float32
operations, but onnxruntime and TorchScript may fuse and order them differently, which moves
float32 sums by a few ulps (~1e-6 here); 1e-4 leaves two orders of margin and still catches a
wrong weight or a missed layer (differences of order 1e-1).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn

import tlroutes
from tests.conftest import small_run
from tlroutes.cli import main
from tlroutes.config import parse_run
from tlroutes.errors import ConfigError
from tlroutes.runner import run
from tlroutes.use.export import ONNX_TOLERANCE, export_model, onnx_outputs

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytestmark = pytest.mark.usefixtures("one_thread")


class EigenTrunk(nn.Module):
    """A trunk whose features are eigenvalues (``aten._linalg_eigh``, which ONNX lacks)."""

    input_kind = "vector"

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.in_width, self.out_dim = width, 4
        self.proj = nn.Linear(width, 16)

    def forward(self, x):
        h = self.proj(x).view(-1, 4, 4)
        return torch.linalg.eigvalsh(h @ h.transpose(1, 2))


def eigen_trunk(width: int = 16) -> nn.Module:
    """The factory a run file names as ``module:tests.test_export:eigen_trunk``."""
    return EigenTrunk(width)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A CNN fine-tuned fully, and an MLP fine-tuned through LoRA adapters (their folders)."""
    root = tmp_path_factory.mktemp("export")
    cnn = small_run(model={"trunk": "cnn2d", "trunk_args": {"channels": [8, 16]}},
                    source_training={"epochs": 1}, target_training={"epochs": 1})
    lora = small_run(recipe={"lora_rank": 2}, source_training={"epochs": 1})
    for name, spec in (("cnn", cnn), ("lora", lora)):
        run(parse_run(spec), root / name, progress=False)
    return root


@pytest.mark.parametrize("name", ["cnn", "lora"])
def test_onnx_and_torchscript_give_pytorchs_outputs(runs, name, tmp_path):
    predictor = tlroutes.load(runs / name)
    x = predictor.split("test").x[:7]  # another batch size than the export's example
    expected = predictor.outputs(x)
    onnx_file = export_model(predictor, format="onnx", out=tmp_path / "m.onnx")
    got = torch.as_tensor(onnx_outputs(onnx_file, x))
    assert (got - expected).abs().max() <= ONNX_TOLERANCE
    script = torch.jit.load(str(export_model(predictor, format="torchscript",
                                             out=tmp_path / "m.pt")))
    assert (script(x) - expected).abs().max() <= ONNX_TOLERANCE
    # a real difference is caught: another run's model is far off
    other = tlroutes.load(runs / ("lora" if name == "cnn" else "cnn"))
    assert (other.outputs(x) - expected).abs().max() > 100 * ONNX_TOLERANCE


def test_lora_is_merged_and_safetensors_export_loads_into_the_head_graph(runs, tmp_path):
    predictor = tlroutes.load(runs / "lora")
    assert predictor.manifest["model"]["lora"] is not None
    out = export_model(predictor, format="safetensors", out=tmp_path / "m.safetensors")
    with safe_open(str(out), framework="pt") as f:
        keys = list(f.keys())
        meta = f.metadata()
    assert not any("lora_" in k for k in keys), "LoRA must be merged into the base layers"
    assert {k.split(".")[0] for k in keys} == {"stem", "trunk", "head"}
    assert json.loads(meta["tlroutes.manifest"])["heads"]["target"]["kind"] == "classification"
    from tlroutes.use.export import export_graph

    graph = export_graph(predictor)
    from safetensors.torch import load_file

    graph.load_state_dict(load_file(out))
    x = predictor.split("test").x[:5]
    assert (graph(x) - predictor.outputs(x)).abs().max() <= ONNX_TOLERANCE


def test_export_cli_writes_into_the_run_folder(runs, capsys):
    main(["export", str(runs / "cnn"), "--format", "onnx"])
    assert (runs / "cnn" / "export" / "model.onnx").is_file()
    assert "exported (onnx)" in capsys.readouterr().out


def test_an_unknown_format_is_named(runs):
    with pytest.raises(ConfigError, match="Unknown export format 'onx'.*'onnx'"):
        export_model(tlroutes.load(runs / "cnn"), format="onx")
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(runs / "cnn"), "--format", "tflite"])
    assert exit_.value.code == 2


def test_an_operator_onnx_lacks_is_named(tmp_path):
    spec = small_run(source=None, target_training={"epochs": 1},
                     model={"trunk": "module:tests.test_export:eigen_trunk", "trunk_args": {}})
    run(parse_run(spec), tmp_path / "run", progress=False)
    predictor = tlroutes.load(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"ONNX has no function for the operator "
                                          r"aten\._linalg_eigh.*--format torchscript"):
        export_model(predictor, format="onnx", out=tmp_path / "m.onnx")
    # TorchScript records the operator and runs it
    script = torch.jit.load(str(export_model(predictor, format="torchscript",
                                             out=tmp_path / "m.pt")))
    x = predictor.split("test").x[:4]
    np.testing.assert_allclose(script(x).detach(), predictor.outputs(x), atol=ONNX_TOLERANCE)
