"""compare_tasks: kinds, label relations, Jaccard, and NCE / agreement from a source model."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from tlroutes.errors import DataError
from tlroutes.measure.task import compare_tasks, label_relation
from tlroutes.problem import Domain, Problem, Split, Task

DOMAIN = Domain("synthetic", "tabular", (1,))


def problem(kind: str, labels: tuple[str, ...], y: torch.Tensor | None = None,
            name: str = "p") -> Problem:
    """A problem whose input is the class index itself (so a source model can read it)."""
    if y is None:
        y = torch.arange(12) % max(len(labels), 1)
        if kind != "classification":
            y = torch.nn.functional.one_hot(y, max(len(labels), 1)).float()
    x = (y if y.dim() == 1 else y.argmax(1)).float()[:, None]
    split = Split(x, y)
    return Problem(name, Task(kind, labels), DOMAIN, split, split, split)


@pytest.mark.parametrize(("source", "target", "relation", "jaccard"), [
    (("a", "b", "c"), ("c", "b", "a"), "identical", 1.0),
    (("a", "b"), ("a", "b", "c"), "subset", 2 / 3),
    (("a", "b", "c", "d"), ("b", "d"), "superset", 2 / 4),
    (("a", "b", "c"), ("b", "c", "d"), "overlap", 2 / 4),
    (("a", "b"), ("c", "d", "e"), "disjoint", 0.0),
])
def test_label_relations_and_jaccard(source, target, relation, jaccard):
    assert label_relation(source, target) == (relation, pytest.approx(jaccard))
    evidence = compare_tasks(problem("classification", source),
                             problem("classification", target))
    assert evidence.label_relation == relation
    assert evidence.jaccard == pytest.approx(jaccard)
    assert set(evidence.shared_labels) == set(source) & set(target)
    assert evidence.verdict == "same" and evidence.same_kind
    assert evidence.nce is None and evidence.matched_agreement is None
    json.dumps(evidence.to_dict())


def test_multilabel_label_sets_are_compared():
    evidence = compare_tasks(problem("multilabel", ("even", ">4")),
                             problem("multilabel", ("even", ">4", "prime")))
    assert (evidence.label_relation, evidence.verdict) == ("subset", "same")


def test_regression_and_mixed_kinds_are_not_compared():
    regression = problem("regression", ("row", "col"))
    evidence = compare_tasks(problem("classification", ("row", "col")), regression)
    assert evidence.label_relation == "n/a" and evidence.jaccard is None
    assert evidence.verdict == "different" and not evidence.same_kind
    assert "regression" in evidence.label_reason.lower()
    both = compare_tasks(regression, problem("regression", ("row", "col")))
    assert (both.label_relation, both.verdict) == ("n/a", "same")
    mixed = compare_tasks(problem("multilabel", ("a", "b")), problem("classification", ("a", "b")))
    assert (mixed.label_relation, mixed.verdict) == ("n/a", "different")
    assert "multilabel" in mixed.reason


class Permuted(nn.Module):
    """A source 'classifier' that predicts perm[y] from an input holding y."""

    def __init__(self, perm: list[int]) -> None:
        super().__init__()
        self.register_buffer("perm", torch.tensor(perm))
        self.drop = nn.Dropout(0.9)  # would scramble logits if not run in eval mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.perm[x[:, 0].long()]
        return self.drop(torch.nn.functional.one_hot(z, len(self.perm)).float() * 5.0)


def test_permuted_label_source_model_agrees_perfectly_after_matching():
    labels = ("0", "1", "2", "3", "4")
    source, target = problem("classification", labels), problem("classification", labels)
    model = Permuted([1, 2, 3, 4, 0])  # no fixed point: every name is wrong
    evidence = compare_tasks(source, target, source_model=model)
    assert evidence.nce == pytest.approx(0.0, abs=1e-12)
    assert evidence.matched_agreement == 1.0
    assert evidence.plain_agreement == 0.0
    assert evidence.n_samples == 12
    assert model.training  # mode restored
    identity = compare_tasks(source, target, source_model=Permuted([0, 1, 2, 3, 4]))
    assert identity.plain_agreement == 1.0 and identity.matched_agreement == 1.0
    json.dumps(evidence.to_dict())


def test_uninformative_source_model_and_coarser_source():
    labels = tuple(str(i) for i in range(4))
    target = problem("classification", labels)
    constant = compare_tasks(problem("classification", ("x", "y")), target,
                             source_model=lambda x: torch.zeros(x.shape[0], 2))
    assert constant.nce == pytest.approx(-torch.log(torch.tensor(4.0)).item())
    assert constant.matched_agreement == pytest.approx(0.25)
    assert constant.plain_agreement is None and constant.notes
    # a parity source: each prediction covers two target labels
    parity = compare_tasks(problem("classification", ("even", "odd")), target,
                           source_model=lambda x: torch.nn.functional.one_hot(
                               x[:, 0].long() % 2, 2).float())
    assert parity.nce == pytest.approx(-torch.log(torch.tensor(2.0)).item())
    assert parity.matched_agreement == pytest.approx(0.5)


def test_source_model_skipped_for_regression_target_and_width_checked():
    regression = compare_tasks(problem("classification", ("a", "b")),
                               problem("regression", ("t",)),
                               source_model=lambda x: torch.zeros(x.shape[0], 2))
    assert regression.nce is None and "classification target" in regression.notes[0]
    with pytest.raises(DataError, match="expected"):
        compare_tasks(problem("classification", ("a", "b", "c")),
                      problem("classification", ("a", "b")),
                      source_model=lambda x: torch.zeros(x.shape[0], 2))
