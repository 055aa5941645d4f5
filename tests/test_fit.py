"""``tlroutes.fit``: Python data and models through the same runner as ``tlroutes run``; the
README's example; resume keyed by content; bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

import tlroutes
from tlroutes.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

README = Path(__file__).resolve().parents[1] / "README.md"


def digits_arrays():
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16).astype(np.float32)[:, None], digits.target


def test_fit_on_numpy_arrays_runs_the_runner_and_resumes_by_content(tmp_path):
    x, y = digits_arrays()
    low = y < 5
    args = dict(route="task_fine_tuning", source=(x[low][:300], y[low][:300]),
                target=(x[~low][:150], y[~low][:150]), model="cnn2d", epochs=1,
                batch_size=32, out=tmp_path / "run")
    result = tlroutes.fit(**args)
    assert result.summary.route == "task_fine_tuning"
    assert set(result.summary.metrics) >= {"accuracy"} and result.summary.baseline
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["metrics"] == result.summary.metrics
    assert result.report == tmp_path / "run" / "report.html" and result.report.is_file()
    run_yaml = yaml.safe_load((tmp_path / "run" / "run.yaml").read_text())
    assert re.fullmatch(r"python:arrays-[0-9a-f]{16}", run_yaml["source"]["dataset"])
    assert run_yaml["target_training"]["epochs"] == 1 and run_yaml["source_training"][
        "batch_size"] == 32
    assert isinstance(result.model, nn.Module)
    predicted = result.predict(x[~low][:7])
    assert len(predicted) == 7 and set(map(str, predicted)) <= {"5", "6", "7", "8", "9"}
    # The predictor's test metrics are the summary's: the model is the run's own
    test = result.predictor.split("test")
    accuracy = float((result.predict(test) == np.array(result.predictor.tasks["target"]
                                                       .labels)[test.y.numpy()]).mean())
    assert accuracy == pytest.approx(result.summary.metrics["accuracy"], abs=1e-6)
    # The same arrays again (copies: keyed by content) resume the finished run
    again = tlroutes.fit(**{**args, "source": (x[low][:300].copy(), y[low][:300].copy()),
                            "resume": True})
    assert again.summary.metrics == result.summary.metrics
    with pytest.raises(ConfigError, match="differs from the one"):  # other data: not this run
        tlroutes.fit(**{**args, "target": (x[~low][:150] * 0.5, y[~low][:150]),
                        "resume": True})


def test_fit_on_a_dataframe_plans_and_takes_a_module(tmp_path):
    pd = pytest.importorskip("pandas")
    gen = np.random.default_rng(0)
    frames = []
    for shift in (0.0, 0.3):
        feats = gen.normal(size=(240, 6)).astype(np.float32) + shift
        label = np.where(feats[:, 0] + feats[:, 1] > 2 * shift, "high", "low")
        frames.append(pd.DataFrame(feats, columns=[f"f{i}" for i in range(6)]).assign(
            kind=label))
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    result = tlroutes.fit(source=frames[0], target=frames[1], label="kind", model=net,
                          epochs=2, out=tmp_path / "auto")
    assert (tmp_path / "auto" / "plan.json").is_file()  # route="auto" planned first
    assert result.summary.route in tlroutes.list_routes()
    run_yaml = yaml.safe_load((tmp_path / "auto" / "run.yaml").read_text())
    assert run_yaml["source"]["dataset"].startswith("python:dataframe-")
    assert run_yaml["model"]["trunk"].startswith("python:module-")
    for key, value in net.state_dict().items():  # the caller's module is left untouched
        assert torch.equal(value, before[key]), key
    assert list(result.predict(frames[1].drop(columns="kind").head(4))) != []


def test_fit_takes_problems_for_a_simultaneous_route(tmp_path):
    gen = np.random.default_rng(1)

    def table(shift):
        x = gen.normal(size=(150, 5)).astype(np.float32) + shift
        return x, (x[:, 0] > shift).astype(int)

    result = tlroutes.fit(route="dataset_merging", problems={"a": table(0.0), "b": table(0.1)},
                          epochs=1, out=tmp_path / "dm")
    assert result.summary.route == "dataset_merging" and result.spec.model.trunk == "mlp"
    saved = yaml.safe_load((tmp_path / "dm" / "run.yaml").read_text())
    assert saved["training"]["epochs"] == 1  # the joint stage, the only one this route reads
    assert all(p["dataset"].startswith("python:arrays-") for p in saved["problems"].values())


def test_default_trunk_follows_the_target(tmp_path):
    from tlroutes.fitting import _trunk_name

    assert _trunk_name(None, (np.zeros((4, 3)), np.zeros(4))) == "mlp"
    assert _trunk_name(None, (np.zeros((4, 1, 8, 8)), np.zeros(4))) == "cnn2d"
    assert _trunk_name(None, (np.zeros((4, 1, 40)), np.zeros(4))) == "cnn1d"


def test_bad_input_is_one_clear_error(tmp_path):
    x, y = digits_arrays()
    data = (x[:60], y[:60])
    with pytest.raises(ConfigError, match="task_fine_tunin.*task_fine_tuning"):
        tlroutes.fit(route="task_fine_tunin", source=data, target=data, out=tmp_path / "a")
    with pytest.raises(ConfigError, match="target must be a path or built-in name.*got int"):
        tlroutes.fit(route="task_fine_tuning", source=data, target=42, out=tmp_path / "b")
    with pytest.raises(ConfigError, match="y must be an array.*got set"):
        tlroutes.fit(route="task_fine_tuning", source=data, target=(x, {1, 2}),
                     out=tmp_path / "c")
    with pytest.raises(ConfigError, match="model must be a trunk name .*got float"):
        tlroutes.fit(route="task_fine_tuning", source=data, target=data, model=3.5,
                     out=tmp_path / "d")
    with pytest.raises(ConfigError, match="Unknown trunk 'cnn3d'.*cnn2d"):
        tlroutes.fit(route="task_fine_tuning", source=data, target=data, model="cnn3d",
                     out=tmp_path / "e")
    with pytest.raises(ConfigError, match="has no Conv2d, Conv1d or Linear"):
        tlroutes.fit(route="task_fine_tuning", source=data, target=data, model=nn.ReLU(),
                     out=tmp_path / "f")
    with pytest.raises(ConfigError, match="epochs must be a positive integer"):
        tlroutes.fit(route="task_fine_tuning", source=data, target=data, epochs=0)
    with pytest.raises(ConfigError, match="target .and source., or problems"):
        tlroutes.fit(route="task_fine_tuning", source=data)
    with pytest.raises(TypeError):  # keyword-only
        tlroutes.fit("task_fine_tuning", data, data)
    # a run file naming Python data this process does not hold (e.g. resumed from a shell)
    with pytest.raises(ConfigError, match="does not hold.*tlroutes.fit again"):
        tlroutes.run({"route": "task_fine_tuning",
                      "source": {"dataset": "python:arrays-0123456789abcdef"},
                      "target": {"dataset": "digits"}}, tmp_path / "g", progress=False)


def _readme_fit_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    found = [b for b in blocks if "tlroutes.fit(" in b]
    assert len(found) == 1, "README.md should hold one tlroutes.fit example"
    return found[0]


@pytest.mark.slow
def test_readme_fit_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(_readme_fit_example(), "README.md", "exec"), {})
    assert (tmp_path / "runs" / "fit-digits" / "report.html").is_file()
    assert "report.html" in capsys.readouterr().out
