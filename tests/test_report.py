"""The run report: report.html (self-contained), report.md (its twin), the demo index, the rows.

Most tests craft run folders by hand (a run.yaml, metrics lines, a summary), which is enough to
check what the report shows; one slow test trains a tiny Domain Adaptation run end to end.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from tlroutes.errors import ConfigError
from tlroutes.reporting import SUMMARY_COLUMNS, summary_rows
from tlroutes.reporting.build import build_index, build_report

IDS = ("cube", "metrics", "curves", "route-details", "run-file", "metrics-table")


def make_run(folder: Path, route: str, summary: dict | None = None, *, seeds: int = 1,
             stages: tuple[str, ...] = ("source", "target"), epochs: int = 3,
             recipe: dict | None = None) -> Path:
    """A run folder as ``tlroutes run`` leaves it (without checkpoints)."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"route": route, "seed": 0, "seeds": seeds, "recipe": recipe or {}}
    (folder / "run.yaml").write_text(yaml.safe_dump(spec))
    subs = [folder] if seeds == 1 else [folder / f"seed-{s}" for s in range(seeds)]
    for k, sub in enumerate(subs):
        sub.mkdir(exist_ok=True)
        lines = [{"stage": st, "epoch": e, "train_loss": 1.0 / (e + 1 + k),
                  "val_accuracy": 0.5 + 0.1 * e, "lr": 1e-3, "time_s": 0.1}
                 for st in stages for e in range(epochs)]
        (sub / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def summary(route: str, title: str, gain: float = 0.1, **extra) -> dict:
    base = 0.7
    return {"route": route, "route_title": title, "primary_metric": "accuracy",
            "higher_is_better": True, "metrics": {"accuracy": base + gain},
            "baseline": {"accuracy": base}, "gain": gain, "negative_transfer": gain < 0,
            "carried_over": "stem and trunk", "also": {}, "seed": 0, **extra}


def html_of(result) -> str:
    return result.html.read_text()


def test_report_is_self_contained_with_key_ids(tmp_path):
    run = make_run(tmp_path / "run", "task_fine_tuning",
                   summary("task_fine_tuning", "Task Fine-Tuning"))
    result = build_report(run)
    page = html_of(result)
    assert result.html == run / "report.html" and result.missing == []
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "<script" not in page and "<link rel=\"stylesheet\"" not in page
    for element in IDS:
        assert f'id="{element}"' in page, element
    # the cube and one figure per stage, inline
    assert page.count('src="data:image/png;base64,') == 3
    assert "Task Fine-Tuning" in page and str(run) in page
    assert "carried over" in page and "Transfer helped" in page


def test_markdown_twin_links_existing_images(tmp_path):
    run = make_run(tmp_path / "run", "task_fine_tuning",
                   summary("task_fine_tuning", "Task Fine-Tuning"))
    result = build_report(run, tmp_path / "out")
    text = result.markdown.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) == 3
    for link in links:
        assert not Path(link).is_absolute() and (result.markdown.parent / link).is_file()
    assert sorted(result.images) == sorted(result.markdown.parent / link for link in links)
    assert "| accuracy |" in text and "## Learning curves" in text


def test_negative_transfer_is_labelled(tmp_path):
    run = make_run(tmp_path / "run", "task_fine_tuning",
                   summary("task_fine_tuning", "Task Fine-Tuning", gain=-0.05))
    result = build_report(run)
    page = html_of(result)
    assert 'class="notice bad"' in page and "NEGATIVE TRANSFER" in page
    assert re.search(r'<td class="bad">-0\.050 \(negative transfer\)</td>', page)
    assert "negative transfer" in result.markdown.read_text()


def test_seeds_show_mean_and_spread(tmp_path):
    per_seed = [summary("task_fine_tuning", "Task Fine-Tuning", gain=g, seed=s)
                for s, g in enumerate((0.1, -0.02))]
    top = summary("task_fine_tuning", "Task Fine-Tuning", gain=0.04,
                  metrics_std={"accuracy": 0.085}, baseline_std={"accuracy": 0.0},
                  gain_std=0.085, per_seed=per_seed, seeds=[0, 1])
    run = make_run(tmp_path / "run", "task_fine_tuning", top, seeds=2)
    page = html_of(build_report(run))
    assert "0.740 ± 0.085" in page and "+0.040 ± 0.085" in page
    assert 'id="per-seed"' in page and "-0.020 (negative transfer)" in page
    assert "seed 0 val" in _curve_labels(run)


def _curve_labels(run: Path) -> str:
    from tlroutes.reporting.collect import collect

    return " ".join(f"{label} val" for label in collect(run).curves)


def _features(path: Path, n: int = 40) -> None:
    rng = np.random.default_rng(0)
    before = np.concatenate([rng.normal(0, 1, (n, 8)), rng.normal(4, 1, (n, 8))])
    np.savez(path, before=before.astype(np.float32), after=(before / 4).astype(np.float32),
             domain=np.repeat([0, 1], n).astype(np.int8), label=np.arange(2 * n) % 3,
             domain_names=np.array(["source: a", "target: b"]))


def test_domain_adaptation_feature_maps(tmp_path):
    s = summary("domain_adaptation", "Domain Adaptation", method="dann", selection="im",
                baseline_kind="source_only", selection_uses_target_labels=False,
                target_labels=0.0, baselines={"source_only": {"accuracy": 0.7}})
    run = make_run(tmp_path / "run", "domain_adaptation", s, stages=("source", "adapt"))
    _features(run / "features.npz")
    result = build_report(run)
    page = html_of(result)
    assert result.missing == []
    assert 'id="feature-maps"' in page and "before adaptation" in page and "t-SNE" in page
    assert (run / "report_files" / "feature-maps.png").is_file()
    assert "baseline (source only)" in page


def test_domain_adaptation_without_features_says_so(tmp_path):
    s = summary("domain_adaptation", "Domain Adaptation", method="dann")
    run = make_run(tmp_path / "run", "domain_adaptation", s)
    result = build_report(run)
    assert result.missing == ["features.npz"]
    assert "No feature maps" in html_of(result)


def test_multi_task_learning_delta_m(tmp_path):
    s = {"route": "multi_task_learning", "route_title": "Multi-Task Learning",
         "primary_metric": "delta_m", "higher_is_better": True, "metrics": {"delta_m": -3.5},
         "baseline": {"delta_m": 0.0}, "gain": -3.5, "negative_transfer": True,
         "carried_over": "stem and trunk shared; one head per task", "also": {}, "seed": 0,
         "per_task": {"digit": {"accuracy": 0.8}, "position": {"mse": 0.02, "mae": 0.1}},
         "per_task_baseline": {"digit": {"accuracy": 0.85}, "position": {"mse": 0.021,
                                                                         "mae": 0.1}},
         "weighting": "ew", "delta_m": -3.5}
    run = make_run(tmp_path / "run", "multi_task_learning", s, stages=("joint",))
    page = html_of(build_report(run))
    assert 'id="per-task"' in page and "Δm = -3.50 %" in page
    assert "multi-task learning hurt on average" in page
    # lower mse is better: 0.020 against 0.021 is a gain
    assert '<td class="good">+0.001</td>' in page and '<td class="bad">-0.050</td>' in page


def test_dataset_merging_per_source_and_leakage(tmp_path):
    leak = {"threshold": 0.99, "decimals": 4,
            "leaking_train": {"a": {"cross": 3, "within": 0, "all": 3}},
            "cross": [{"train": "a", "other": "b", "split": "test", "n_exact": 2, "n_near": 1,
                       "n_train_samples": 3, "pairs": [], "exact": [], "similarity": []},
                      {"train": "b", "other": "a", "split": "val", "n_exact": 0, "n_near": 0,
                       "n_train_samples": 0, "pairs": [], "exact": [], "similarity": []}],
            "within": []}
    s = summary("dataset_merging", "Dataset Merging",
                per_source={"pooled": {"accuracy": 0.8}, "a": {"accuracy": 0.9},
                            "b": {"accuracy": 0.7}},
                per_source_baseline={"a": {"accuracy": 0.85}, "b": {"accuracy": 0.72}},
                mixing={"policy": "proportional", "probabilities": {"a": 0.6, "b": 0.4}},
                leakage=leak, leakage_summary="Leakage report (...)")
    run = make_run(tmp_path / "run", "dataset_merging", s, stages=("merged",),
                   recipe={"deduplicate": "report"})
    page = html_of(build_report(run))
    assert 'id="per-source"' in page and 'id="leakage"' in page
    assert "a.train vs b.test" in page and "<td>2</td><td>1</td><td>3</td>" in page
    assert "reported only" in page and "60%" in page
    assert "-0.020 (negative transfer)" in page


def test_parallel_training_job_table(tmp_path):
    jobs = {"digits": {"name": "digits", "status": "ok", "metrics": {"accuracy": 0.9},
                       "primary_metric": "accuracy", "time_s": 3.2, "task": "digit",
                       "trunk": "cnn2d"},
            "broken": {"name": "broken", "status": "failed", "error": "DataError: bad file",
                       "time_s": None}}
    s = {"route": "parallel_training", "route_title": "Parallel Training",
         "primary_metric": "mean_accuracy", "higher_is_better": True,
         "metrics": {"mean_accuracy": 0.9, "jobs_ok": 1, "jobs_failed": 1}, "baseline": None,
         "gain": None, "negative_transfer": None, "carried_over": "nothing",
         "backend": "interleaved", "backend_reason": "interleaved: small jobs",
         "wall_time_s": 5.0, "jobs": jobs, "failed": {"broken": "DataError: bad file"},
         "also": {"digits accuracy": 0.9}, "baseline_note": "none trained", "seed": 0}
    run = make_run(tmp_path / "run", "parallel_training", s, stages=("digits",))
    page = html_of(build_report(run))
    assert 'id="jobs"' in page and "DataError: bad file" in page
    assert "accuracy 0.900" in page and "3.2 s" in page
    assert "interleaved: small jobs" in page and "No gain" in page


def test_other_routes_show_extra_blocks(tmp_path):
    s = summary("modality_transfer", "Modality Transfer", control={"accuracy": 0.75},
                trainable_patterns=["*norm*"], trainable_parameters=100,
                also={"random-init control": 0.75})
    run = make_run(tmp_path / "run", "modality_transfer", s)
    page = html_of(build_report(run))
    assert 'id="also"' in page and "random-init control" in page
    assert 'id="route-metrics"' in page and "accuracy 0.750" in page
    assert "*norm*" in page and "trainable parameters" in page


def test_not_a_run_folder(tmp_path):
    with pytest.raises(ConfigError) as info:
        build_report(tmp_path)
    message = str(info.value)
    assert "not a run folder" in message and "run.yaml" in message
    assert "summary.json" in message and "tlroutes run RUN.yaml --out DIR" in message


def test_unfinished_run_gets_a_report_of_what_exists(tmp_path):
    run = make_run(tmp_path / "run", "task_fine_tuning", None, stages=("source",))
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"stage": "source", "epo')  # a torn last line
    result = build_report(run)
    page = html_of(result)
    assert result.missing == ["summary.json"]
    assert "unfinished: missing summary.json" in page and 'class="notice warn"' in page
    assert page.count("data:image/png") == 2  # cube + the stage's curves
    assert "--resume" in page and "unfinished: missing summary.json" in result.markdown.read_text()


def test_run_without_any_epoch(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.yaml").write_text("route: domain_adaptation\n")
    result = build_report(run)
    assert set(result.missing) == {"summary.json", "metrics.jsonl", "features.npz"}
    assert "No learning curves" in html_of(result)


def test_summary_rows_match_the_command_line_table():
    from tlroutes.cli import summary_table

    runs = [summary("task_fine_tuning", "Task Fine-Tuning"),
            summary("domain_adaptation", "Domain Adaptation", gain=-0.1,
                    also={"target_supervised": 0.5})]
    rows = summary_rows(runs)
    table = summary_table(runs)
    for i, column in enumerate(SUMMARY_COLUMNS):
        assert [r[column] for r in rows] == list(table.columns[i]._cells), column
    assert rows[1]["negative_transfer"] and rows[1]["route_id"] == "domain_adaptation"


def test_summary_rows_with_seeds():
    row = summary_rows([summary("task_fine_tuning", "Task Fine-Tuning", gain=-0.01,
                                gain_std=0.02, metrics_std={"accuracy": 0.03})])[0]
    assert row["gain"] == "-0.010 ± 0.020 (negative transfer)"
    assert row["transfer"] == "0.690 ± 0.030"


def test_build_index_links_reports(tmp_path):
    demo = tmp_path / "demo"
    good = make_run(demo / "task_fine_tuning", "task_fine_tuning",
                    summary("task_fine_tuning", "Task Fine-Tuning"))
    bad = make_run(demo / "domain_adaptation", "domain_adaptation",
                   summary("domain_adaptation", "Domain Adaptation", gain=-0.2))
    stopped = make_run(demo / "weight_sharing", "weight_sharing", None)
    build_report(good)
    index = build_index(demo, [("task_fine_tuning", good), ("domain_adaptation", bad),
                               ("weight_sharing", stopped)])
    page = index.read_text()
    assert index == demo / "index.html" and 'id="demo-table"' in page
    assert 'href="task_fine_tuning/report.html"' in page
    assert "domain_adaptation/report.html" not in page  # no report built: no link
    assert "-0.200 (negative transfer)" in page and "unfinished" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)


@pytest.mark.slow
def test_domain_adaptation_run_saves_features_and_reports_them(tmp_path):
    from tlroutes.runner import run

    spec = {
        "route": "domain_adaptation", "seed": 1,
        "source": {"dataset": "digits", "n": 300},
        "target": {"dataset": "digits", "n": 300, "shift": {"rotation": 30}},
        "model": {"trunk": "mlp"},
        "source_training": {"epochs": 1, "batch_size": 64},
        "target_training": {"epochs": 1, "batch_size": 64},
        "recipe": {"method": "coral"},
        "hardware": {"accelerator": "cpu"},
    }
    out = tmp_path / "da"
    run(spec_file(tmp_path, spec), out, progress=False)
    data = np.load(out / "features.npz")
    assert data["before"].shape == data["after"].shape
    assert len(data["domain"]) == len(data["label"]) == len(data["before"]) == 120
    assert set(data["domain"].tolist()) == {0, 1}
    assert not np.allclose(data["before"], data["after"])
    result = build_report(out, tsne=False)
    assert result.missing == [] and 'id="feature-maps"' in html_of(result)


def spec_file(folder: Path, spec: dict) -> Path:
    path = folder / "run-file.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path
