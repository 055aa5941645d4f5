"""Trunks named by origin: ``timm:<name>``, ``module:<package.module:factory>``, entry points."""

import importlib.metadata

import pytest
import torch
import yaml

from tlroutes.backbones import create_trunk
from tlroutes.backbones.inputs import trunk_input_config
from tlroutes.errors import ConfigError

timm = pytest.importorskip("timm")


def test_timm_trunk_reads_its_widths_and_input_config():
    trunk = create_trunk("timm:test_resnet")
    model = timm.create_model("test_resnet", num_classes=0)
    assert (trunk.input_kind, trunk.in_width, trunk.out_dim) == ("image", 3, model.num_features)
    assert trunk(torch.zeros(2, 3, 32, 32)).shape == (2, model.num_features)
    cfg = timm.models.get_pretrained_cfg("test_resnet").to_dict()
    config = trunk_input_config("timm:test_resnet")
    assert config.size == tuple(cfg["input_size"][1:])
    assert config.mean == tuple(cfg["mean"]) and config.std == tuple(cfg["std"])


def test_timm_weights_from_a_file_are_loaded(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    first = create_trunk("timm:test_resnet")
    save_file(first.model.state_dict(), tmp_path / "w.safetensors")
    torch.manual_seed(1)
    second = create_trunk("timm:test_resnet", weights=str(tmp_path / "w.safetensors"))
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name


def test_timm_bad_names_and_offline_weights_are_clear(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="timm has no model 'resnet1888'.*resnet18"):
        create_trunk("timm:resnet1888")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ConfigError, match="not in the local Hugging Face cache.*weights:"):
        create_trunk("timm:test_resnet", pretrained=True)


def test_module_factories_are_wrapped_or_refused():
    trunk = create_trunk("module:tests.plugins.factories:small_cnn", width=6)
    assert (trunk.in_width, trunk.out_dim) == (3, 6)
    with pytest.raises(ConfigError, match="not a torch nn.Module"):
        create_trunk("module:tests.plugins.factories:not_a_module")
    with pytest.raises(ConfigError, match="no callable 'small_cn'.*small_cnn"):
        create_trunk("module:tests.plugins.factories:small_cn")
    with pytest.raises(ConfigError, match="cannot import"):
        create_trunk("module:no_such_package_here:f")
    with pytest.raises(ConfigError, match="package.module:factory"):
        create_trunk("module:just_a_name")
    with pytest.raises(ConfigError, match="cannot be called with"):
        create_trunk("module:tests.plugins.factories:small_cnn", depth=3)


def test_unknown_name_says_how_to_name_by_origin():
    with pytest.raises(ConfigError, match="timm:<model>"):
        create_trunk("resnet18")


def test_entry_points_name_trunks(monkeypatch):
    point = importlib.metadata.EntryPoint(
        name="plugin_cnn", value="tests.plugins.factories:small_cnn", group="tlroutes.trunks")
    real = importlib.metadata.entry_points

    def entry_points(**kwargs):
        if kwargs.get("group") == "tlroutes.trunks":
            return importlib.metadata.EntryPoints([point])
        return real(**kwargs)

    monkeypatch.setattr("tlroutes.backbones.named.entry_points", entry_points)
    assert create_trunk("plugin_cnn", width=5).out_dim == 5


def _run(tmp_path, route_file: dict, name: str):
    from typer.testing import CliRunner

    from tlroutes.cli import app

    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(route_file))
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / name)])
    assert result.exit_code == 0, result.output
    import json

    return json.loads((tmp_path / name / "summary.json").read_text())


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_timm_and_module_trunks_run_from_run_files(tmp_path):
    """A timm model (random weights: timm ships none) through Task Fine-Tuning and Task
    Adaptation, and a module: factory through Task Fine-Tuning, from run files."""
    small = {"epochs": 1, "batch_size": 32}
    fine_tuning = {
        "route": "task_fine_tuning", "seed": 0,
        "source": {"dataset": "digits", "task": "digit", "classes": [0, 1, 2, 3, 4], "n": 200},
        "target": {"dataset": "digits", "task": "digit", "classes": [5, 6, 7, 8, 9], "n": 120},
        "model": {"trunk": "timm:test_resnet"},
        "source_training": small, "target_training": small,
    }
    summary = _run(tmp_path, fine_tuning, "tft")
    assert summary["route"] == "task_fine_tuning"
    adaptation = dict(fine_tuning, route="task_adaptation",
                      source={"dataset": "digits", "task": "digit", "n": 200},
                      target={"dataset": "digits", "task": "properties", "n": 120})
    assert _run(tmp_path, adaptation, "ta")["route"] == "task_adaptation"
    factory = dict(fine_tuning, model={"trunk": "module:tests.plugins.factories:small_cnn",
                                       "trunk_args": {"width": 8}})
    assert _run(tmp_path, factory, "mod")["route"] == "task_fine_tuning"


def test_timm_width_counts_a_head_hidden_layer():
    """MobileNetV3 pools, then widens with its conv_head: the features are head_hidden_size
    wide, not num_features."""
    trunk = create_trunk("timm:mobilenetv3_small_050").eval()
    with torch.no_grad():
        assert trunk(torch.zeros(2, 3, 32, 32)).shape == (2, trunk.out_dim)
    assert trunk.out_dim == trunk.model.head_hidden_size != trunk.model.num_features
