"""One placement for plan and run; the classes present on each side; verdicts over seeds.

Known answers: a pair of files with different names drawn from one distribution measures "same
domain", so ``route: auto`` plans Task Adaptation for it and the run does not refuse its plan;
a declared label list that names a class with no sample does not make two islands "identical";
a too-small sample says how many samples the positive control needs.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tlroutes.config import DataSpec, parse_run
from tlroutes.data.load import load_problem
from tlroutes.demo import example_files
from tlroutes.errors import ConfigError
from tlroutes.matrix import Route
from tlroutes.measure.domain import VERDICT_SEEDS, compare_domains
from tlroutes.measure.evidence import run_problems
from tlroutes.measure.placement import clear_cache, content_key, measure_pair
from tlroutes.measure.task import compare_tasks, label_presence, label_presence_from_y
from tlroutes.planner import plan
from tlroutes.problem import Domain, Problem, Split, Task
from tlroutes.routes.common import require_fit, require_same_cell

FAST = {"permutations": 100, "max_samples": 400}
SPECIES = ("Adelie", "Chinstrap", "Gentoo")


def tabular(y: torch.Tensor, labels: tuple[str, ...] = SPECIES, *, seed: int = 0,
            name: str = "island", d: int = 4, kind: str = "classification") -> Problem:
    """Gaussian inputs (one distribution whatever the seed), targets ``y`` in three splits."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(y), d, generator=g)
    n = len(y)
    a, b = int(0.6 * n), int(0.8 * n)
    return Problem(name, Task(kind, labels), Domain(name, "tabular", (d,)),
                   Split(x[:a], y[:a]), Split(x[a:b], y[a:b]), Split(x[b:], y[b:]))


# ------------------------------------------------------------------------------------------
# Label presence
# ------------------------------------------------------------------------------------------


def test_class_counts_per_split_every_declared_label_and_cached():
    y = torch.tensor([0, 0, 2, 2, 2, 0, 2, 0, 2, 2])
    problem = tabular(y)
    counts = problem.class_counts
    assert counts["train"] == {"Adelie": 3, "Chinstrap": 0, "Gentoo": 3}
    assert set(counts) == {"train", "val", "test"}
    assert problem.present_labels() == ("Adelie", "Gentoo")
    assert problem.train.class_counts(3) is problem.train.class_counts(3)  # cached
    problem.train.y = torch.tensor([1, 1, 1, 1, 1, 1])  # a new y is counted afresh
    assert problem.class_counts["train"]["Chinstrap"] == 6
    multilabel = Split(torch.zeros(3, 1), torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]))
    assert multilabel.class_counts() == (2, 1)
    regression = tabular(torch.randn(10, 1), ("row",), kind="regression")
    assert regression.class_counts == {} and regression.present_labels() == ()


def test_a_declared_label_without_samples_is_not_identical():
    # Two islands, both declaring all three species; the second has no Chinstrap.
    dream = tabular(torch.arange(30) % 3, name="dream")
    biscoe = tabular(torch.tensor([0, 2] * 15), name="biscoe", seed=1)
    evidence = compare_tasks(dream, biscoe)
    assert evidence.label_relation == "superset"  # source ⊃ target over the classes present
    assert evidence.jaccard == pytest.approx(2 / 3)
    labels = evidence.labels
    assert labels.declared_relation == "identical" and labels.declared_jaccard == 1.0
    assert labels.source_only == ("Chinstrap",) and labels.target_only == ()
    assert labels.declared_without_samples == {"source": (), "target": ("Chinstrap",)}
    assert labels.target_counts["Chinstrap"] == 0
    assert "no sample" in evidence.label_reason and "declared lists" in labels.describe()
    json.dumps(evidence.to_dict())
    # the other direction: a target class the source never saw
    back = label_presence(biscoe, dream)
    assert (back.relation, back.target_only) == ("subset", ("Chinstrap",))


def test_names_inferred_from_max_y_do_not_fake_a_superset(tmp_path):
    """Without `labels`, names come from max(y): {0, 2} reads as 0, 1, 2 — by declared names
    a superset of {0, 1}; by the classes present an overlap."""
    rng = np.random.default_rng(0)

    def write(path: Path, classes: list[int]) -> Path:
        # the class ids 0..max named, so that a declared id may have no sample
        arrays = {"labels": np.array([str(i) for i in range(max(classes) + 1)])}
        for split, n in (("train", 30), ("val", 10), ("test", 10)):
            arrays[f"x_{split}"] = rng.normal(size=(n, 3)).astype("float32")
            arrays[f"y_{split}"] = np.array([classes[i % len(classes)] for i in range(n)])
        np.savez(path, **arrays)
        return path

    source = load_problem(DataSpec(dataset=str(write(tmp_path / "a.npz", [0, 2]))), 0, "s")
    target = load_problem(DataSpec(dataset=str(write(tmp_path / "b.npz", [0, 1]))), 0, "t")
    assert source.task.labels == ("0", "1", "2") and target.task.labels == ("0", "1")
    evidence = compare_tasks(source, target)
    assert evidence.labels.declared_relation == "superset"
    assert (evidence.label_relation, evidence.shared_labels) == ("overlap", ["0"])
    assert evidence.labels.target_only == ("1",) and evidence.labels.source_only == ("2",)


def test_label_presence_from_raw_targets_and_prior_shift():
    presence = label_presence_from_y(torch.tensor([0, 0, 0, 1, 2]), torch.tensor([0, 1, 1, 1]))
    assert presence.relation == "superset" and presence.shared == ("0", "1")
    # shared classes renormalised: source (3/4, 1/4), target (1/4, 3/4): TV = 0.5
    assert presence.prior_shift == pytest.approx(0.5)
    named = label_presence_from_y(torch.tensor([0, 1]), torch.tensor([1, 0]), ("cat", "dog"),
                                  ("dog", "cat"))
    assert named.relation == "identical" and named.prior_shift == pytest.approx(0.0)


# ------------------------------------------------------------------------------------------
# One placement
# ------------------------------------------------------------------------------------------


def write_pair(tmp_path: Path) -> tuple[Path, Path]:
    """Two files, one distribution: x ~ N(0, I) in 6 dims; the source labels by the sign of the
    first feature (classification), the target regresses the sum of the features."""
    rng = np.random.default_rng(0)
    paths = []
    for name, kind in (("lab_a", "classification"), ("clinic_b", "regression")):
        arrays = {}
        for split, n in (("train", 240), ("val", 80), ("test", 80)):
            x = rng.normal(size=(n, 6)).astype("float32")
            arrays[f"x_{split}"] = x
            arrays[f"y_{split}"] = ((x[:, 0] > 0).astype("int64") if kind == "classification"
                                    else x.sum(1, keepdims=True))
        path = tmp_path / f"{name}.npz"
        np.savez(path, **arrays)
        paths.append(path)
    return paths[0], paths[1]


def pair_run(tmp_path: Path, **extra) -> dict:
    a, b = write_pair(tmp_path)
    return {
        "route": "auto",
        "source": {"dataset": str(a)},
        "target": {"dataset": str(b), "task": "regression"},
        "model": {"trunk": "mlp"},
        "source_training": {"epochs": 1}, "target_training": {"epochs": 1},
        "hardware": {"accelerator": "cpu"},
        **extra,
    }


def test_two_files_of_one_distribution_plan_and_run_alike(tmp_path, monkeypatch):
    """The issue's case: plan measured "same domain" and chose Task Adaptation; run refused it
    by the file names. Now run checks the cell with plan's placement (cached: measured once)."""
    from tlroutes.runner import resolve
    from tlroutes.train.from_spec import load

    clear_cache()
    spec = parse_run(pair_run(tmp_path))
    resolved = resolve(spec)
    assert resolved.plan is not None and resolved.plan.route is Route.TASK_ADAPTATION
    assert resolved.plan.domain.value == "same" and resolved.plan.domain.source == "measured"
    names_warning = [w for w in resolved.plan.warnings if "data names suggest" in w]
    assert names_warning  # names differ, measurement says same: a warning, in plan ...
    source = load(spec.source, spec.seed, "source")
    target = load(spec.target, spec.seed, "target")
    import tlroutes.measure.placement as placement

    calls: list[int] = []
    real = placement.compare_domains
    monkeypatch.setattr(placement, "compare_domains",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    with pytest.warns(UserWarning) as caught:
        require_fit(Route.TASK_ADAPTATION, source, target)  # no refusal
    assert calls == []  # the plan's measurement was reused
    # ... and in run, worded the same
    assert names_warning[0] in [str(w.message) for w in caught]


@pytest.mark.slow
def test_route_auto_runs_the_two_file_pair_end_to_end(tmp_path):
    from tlroutes.runner import run

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = run(parse_run(pair_run(tmp_path, baseline=False)), tmp_path / "run",
                      progress=False)
    assert summary.route == "task_adaptation"
    saved = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert saved["axes"]["domain"]["value"] == "same"


def test_a_declared_route_the_measurement_contradicts_warns_in_plan_and_run():
    """plan names the placed route and warns; run warns that the measurement fits plan's route
    and runs the declared one (a measured domain is evidence, not a fact: only facts refuse, see
    test_facts_refuse_a_cell); declaring `domain:` places the pair where the user says."""
    from tlroutes.train.from_spec import load

    run = {
        "route": "task_fine_tuning",
        "source": {"dataset": "digits", "n": 600},
        "target": {"dataset": "digits", "n": 600, "shift": {"rotation": 40}},
    }
    spec = parse_run(run)
    said = plan(spec)
    assert said.route is Route.DOMAIN_ADAPTATION
    assert said.warnings[0].startswith("The run file declares Task Fine-Tuning")
    source = load(spec.source, spec.seed, "source")
    target = load(spec.target, spec.seed, "target")
    with pytest.warns(UserWarning, match=r"measure as the different domain .*Domain "
                      r"Adaptation would fit.*declare `domain:`"):
        require_fit(Route.TASK_FINE_TUNING, source, target)
    # one domain by declaration: plan places it on Task Fine-Tuning, run accepts it, and both
    # warn in the same words that the tests disagree
    for block in ("source", "target"):
        run[block] = {**run[block], "domain": "digits"}
    spec = parse_run(run)
    declared = plan(spec)
    assert declared.route is Route.TASK_FINE_TUNING and declared.domain.source == "declared"
    disagree = [w for w in declared.warnings if "declared one domain, but the tests say" in w]
    assert disagree
    with pytest.warns(UserWarning) as caught:
        require_fit(Route.TASK_FINE_TUNING, load(spec.source, spec.seed, "source"),
                    load(spec.target, spec.seed, "target"))
    assert disagree[0] in [str(w.message) for w in caught]


def test_facts_refuse_a_cell():
    digits = tabular(torch.arange(60) % 3)
    other_kind = tabular(torch.randn(60, 1), ("value",), kind="regression", seed=1)
    with pytest.raises(ConfigError, match="Task Adaptation"):
        require_fit(Route.TASK_FINE_TUNING, digits, other_kind)
    # declared different domains by `domain:` are the user's word
    a, b = tabular(torch.arange(60) % 3), tabular(torch.arange(60) % 3, seed=1, name="b")
    a.meta["declared_domain"], b.meta["declared_domain"] = "island", "b"
    with pytest.raises(ConfigError, match=r"\(declared: .*Domain Adaptation"):
        require_fit(Route.TASK_FINE_TUNING, a, b)
    with pytest.raises(ConfigError, match="for every problem"):
        require_same_cell(Route.DATASET_MERGING, {"a": a, "b": b})


def test_the_cache_keys_on_content_not_names():
    a = tabular(torch.arange(60) % 3)
    b = tabular(torch.arange(60) % 3, seed=1, name="other")
    renamed = tabular(torch.arange(60) % 3, name="renamed")
    assert content_key(a) == content_key(renamed) != content_key(b)
    clear_cache()
    first = measure_pair(a, b, seed=4, **FAST)
    again = measure_pair(renamed, b, seed=None, **FAST)  # any seed: plan's, reused
    assert again.domain is first.domain and again.first == "renamed"


@pytest.mark.slow
@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.stem)
def test_route_auto_on_each_example_is_not_refused_by_its_own_run(path):
    """`route: auto` on each example: resolve plans the route, and the route's own cell check
    (the one its run makes) accepts the problems without a contradicting warning."""
    from tlroutes.runner import resolve
    from tlroutes.train.from_spec import load

    data = yaml.safe_load(Path(path).read_text())
    expected = Route.parse(data["route"])
    data["route"] = "auto"
    resolved = resolve(parse_run(data))
    assert resolved.plan is not None and resolved.plan.route is expected, resolved.plan.warnings
    spec = resolved.spec
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if expected.order == "sequential" and spec.source is not None:
            require_fit(expected, load(spec.source, spec.seed, "source"),
                        load(spec.target, spec.seed, "target"))
        elif expected in (Route.DATASET_MERGING, Route.WEIGHT_SHARING):
            require_same_cell(expected, run_problems(spec))
        elif expected is Route.MULTI_TASK_LEARNING:
            from tlroutes.routes.common import relation

            problems = list(run_problems(spec).values())
            assert all(relation(problems[0], p)[1] == "same" for p in problems[1:])
    assert not [w for w in caught if "declares" in str(w.message)]


# ------------------------------------------------------------------------------------------
# Verdicts over seeds
# ------------------------------------------------------------------------------------------


def test_the_verdict_carries_its_spread_over_seeds():
    a, b = tabular(torch.arange(200) % 2, ("a", "b")), tabular(torch.arange(200) % 2, ("a", "b"),
                                                                 seed=1)
    evidence = compare_domains(a, b, permutations=100)
    s = evidence.stability
    assert evidence.verdict == "same"  # one Gaussian, two draws
    assert s.planned == VERDICT_SEEDS and s.majority == VERDICT_SEEDS // 2 + 1
    assert s.seeds[0] == 0 and len(s.verdicts) >= s.majority
    assert sum(s.shares.values()) == pytest.approx(1.0)
    assert s.verdicts.count("same") >= s.majority
    assert "majority" in s.rule
    one = compare_domains(a, b, permutations=100, seeds=1)
    assert one.stability.verdicts == [one.verdict]
    json.dumps(evidence.to_dict())


def test_undecided_for_power_says_how_many_samples_are_needed():
    from tlroutes.measure.domain import ControlResult, _samples_needed
    from tlroutes.measure.two_sample import C2STResult, MMDResult

    def control(p_mmd: float, p_c2st: float) -> ControlResult:
        return ControlResult("shifted half", 15, MMDResult(0.01, p_mmd, 1.0, 100, 15, 15),
                             C2STResult(0.6, 0.55, p_c2st, 0.2, 5, 100, 15, 15), False)

    # best z = Φ⁻¹(1 - 0.1) = 1.28; z* = Φ⁻¹(1 - 0.025) + Φ⁻¹(0.8) = 1.96 + 0.84 = 2.80;
    # 2 halves × 15 × (2.80 / 1.28)² = 143.3, rounded up
    text = _samples_needed(control(0.1, 0.3), 0.025, 30)
    assert text.startswith("about 144 per side are needed (now 30"), text
    assert "several times" in _samples_needed(control(0.7, 0.9), 0.025, 30)
    # the sentence reaches the verdict's reason, one line
    tiny = [tabular(torch.arange(44) % 2, ("a", "b"), seed=s, d=30) for s in (0, 1)]
    evidence = compare_domains(*tiny, permutations=50, seeds=1)
    if not evidence.positive_control.detected:
        assert evidence.reason.startswith("too few samples for the positive control")
        assert "\n" not in evidence.reason


# ------------------------------------------------------------------------------------------
# The report warns about target classes without source samples
# ------------------------------------------------------------------------------------------


def test_report_warns_when_a_target_class_has_no_source_sample(tmp_path):
    from tests.test_report import make_run, summary
    from tlroutes.reporting.build import build_report

    labels = label_presence(tabular(torch.tensor([0, 2] * 15), name="s"),
                            tabular(torch.arange(30) % 3, name="t", seed=1)).to_dict()
    assert list(labels["target_only"]) == ["Chinstrap"]
    run = make_run(tmp_path / "run", "task_fine_tuning",
                   summary("task_fine_tuning", "Task Fine-Tuning", labels=labels))
    page = build_report(run).html.read_text()
    assert "Target classes with no source sample" in page and "Chinstrap" in page
    plain = make_run(tmp_path / "plain", "task_fine_tuning",
                     summary("task_fine_tuning", "Task Fine-Tuning"))
    assert "no source sample" not in build_report(plain).html.read_text()


def test_the_runner_records_the_label_relation_the_route_placed():
    from tlroutes.measure.placement import forget_last_placement, last_placement
    from tlroutes.runner import _add_label_relation
    from tlroutes.summary import Summary

    forget_last_placement()
    assert last_placement() is None
    source = tabular(torch.tensor([0, 2] * 30))
    target = tabular(torch.arange(60) % 3, seed=1)  # one domain by name and by distribution
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        require_fit(Route.TASK_FINE_TUNING, source, target)
    made = Summary(route="task_fine_tuning", title="Task Fine-Tuning", primary_metric="accuracy",
                   higher_is_better=True, metrics={"accuracy": 0.5})
    _add_label_relation(made)
    assert made.details["labels"]["target_only"] == ("Chinstrap",)


def test_large_inputs_are_pooled_before_the_pca():
    """Every run now measures its pair, so the PCA must not cost O(n² · 224 · 224 · 3)."""
    from tlroutes.measure.domain import MAX_IMAGE_SIDE, MAX_SIGNAL_LENGTH, _shrunk

    image = torch.rand(2, 3, 100, 64)
    assert _shrunk(image).shape == (2, 3, MAX_IMAGE_SIDE, MAX_IMAGE_SIDE)
    assert _shrunk(torch.rand(2, 1, 8, 8)).shape == (2, 1, 8, 8)
    assert _shrunk(torch.rand(2, 2, 5000)).shape == (2, 2, MAX_SIGNAL_LENGTH)
    tokens = torch.randint(0, 9, (2, 4000))
    assert _shrunk(tokens) is tokens


def test_a_planned_run_follows_its_plan_whatever_each_seed_draws(monkeypatch):
    import tlroutes.measure.placement as placement

    a = tabular(torch.arange(60) % 3)
    b = tabular(torch.arange(60) % 3, seed=1)
    planned = placement.place(a, b, names=("source", "target"), **FAST)
    redraw = tabular(torch.arange(60) % 3, seed=7)  # another seed's data
    monkeypatch.setattr(placement, "compare_domains", lambda *a, **k: pytest.fail("measured"))
    with placement.following([planned]):
        assert placement.place(a, redraw, names=("source", "target")) is planned
    with pytest.raises(pytest.fail.Exception):
        placement.place(a, redraw, names=("source", "target"))  # outside: measured again


def test_a_split_verdict_is_undecided_and_says_so(monkeypatch):
    import tlroutes.measure.domain as domain

    a, b = tabular(torch.arange(60) % 2, ("a", "b")), tabular(torch.arange(60) % 2, ("a", "b"),
                                                              seed=1)
    real = domain._compare_once
    script = iter(["same", "undecided", "different", "same", "undecided"])

    def scripted(*args, **kwargs):
        one = real(*args, **kwargs)
        one.verdict = next(script)
        if one.verdict == "undecided":
            one.reason = "too few samples for the positive control: about 999 per side"
        return one

    monkeypatch.setattr(domain, "_compare_once", scripted)
    evidence = domain.compare_domains(a, b, permutations=20)
    assert evidence.verdict == "undecided"
    assert evidence.stability.verdicts == ["same", "undecided", "different", "same", "undecided"]
    assert evidence.stability.shares == {"same": 0.4, "different": 0.2, "undecided": 0.4}
    assert evidence.reason.startswith("the verdict is split over 5 measurement seeds (same 2/5")
    assert evidence.reason.endswith("about 999 per side")
