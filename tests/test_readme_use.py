"""README's "Use what you trained" example runs as written, on a run it names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import small_run
from tlroutes.config import parse_run
from tlroutes.runner import run

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    found = [b for b in blocks if "tlroutes.load(" in b]
    assert len(found) == 1, "README.md should hold one tlroutes.load example"
    return found[0]


@pytest.mark.usefixtures("one_thread")
def test_readme_use_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # the example's run: examples/task_fine_tuning.yaml's problem (digits 5-9), a short budget
    run(parse_run(small_run()), Path("runs/task_fine_tuning"), progress=False)
    exec(compile(_example(), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "Predictor(" in printed and "task_fine_tuning" in printed
    header = (tmp_path / "predictions.csv").read_text().splitlines()[0]
    assert header == "id,label,p_5,p_6,p_7,p_8,p_9"
    assert (tmp_path / "model.pt").is_file()
