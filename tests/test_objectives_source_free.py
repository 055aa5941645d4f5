"""SHOT's objective pieces (tlroutes.objectives.source_free): values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tlroutes.errors import ConfigError, DataError
from tlroutes.objectives.source_free import (
    SHOTLoss,
    centroid_pseudo_labels,
    information_maximization_loss,
    smoothed_cross_entropy,
)
from tlroutes.objectives.validators import information_maximization

BIG = 50.0  # a logit gap that makes softmax one-hot to float precision


def test_im_of_uniform_predictions_is_zero():
    loss, ent, div = information_maximization_loss(torch.zeros(6, 4))
    # every p_i uniform: H(p_i) = log 4 and H(mean) = log 4
    assert ent.item() == pytest.approx(math.log(4))
    assert div.item() == pytest.approx(-math.log(4))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_im_of_one_hot_predictions_spread_over_classes_is_minus_log_k():
    logits = BIG * torch.eye(4).repeat(2, 1)  # 8 samples, each class twice, confident
    loss, ent, div = information_maximization_loss(logits)
    assert ent.item() == pytest.approx(0.0, abs=1e-6)
    assert div.item() == pytest.approx(-math.log(4), abs=1e-6)
    assert loss.item() == pytest.approx(-math.log(4), abs=1e-6)


def test_im_of_a_collapse_is_zero_and_only_the_diversity_term_sees_it():
    logits = torch.zeros(5, 3)
    logits[:, 0] = BIG  # every sample confidently class 0
    loss, ent, div = information_maximization_loss(logits)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)  # confident but not diverse
    no_div, _, zero = information_maximization_loss(logits, diversity=False)
    assert no_div.item() == pytest.approx(0.0, abs=1e-6) and zero.item() == 0.0
    # plain entropy scores the collapse as well as the best spread (both 0): the diversity term
    # is what tells them apart
    spread = BIG * torch.eye(3)
    assert information_maximization_loss(spread)[0].item() < loss.item() - 1.0


def test_im_loss_is_minus_the_selection_score():
    logits = torch.randn(32, 5, generator=torch.Generator().manual_seed(0))
    loss = information_maximization_loss(logits)[0]
    assert loss.item() == pytest.approx(-information_maximization(logits), abs=1e-6)


def test_im_loss_has_finite_gradients_at_saturated_logits():
    logits = torch.tensor([[1e4, 0.0, 0.0], [0.0, 1e4, 0.0]], requires_grad=True)
    information_maximization_loss(logits)[0].backward()
    assert torch.isfinite(logits.grad).all()


def _two_clusters(n: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    a = torch.tensor([1.0, 0.0]) + 0.05 * torch.randn(n, 2, generator=g)
    b = torch.tensor([0.0, 1.0]) + 0.05 * torch.randn(n, 2, generator=g)
    return torch.cat([a, b]), torch.cat([torch.zeros(n), torch.ones(n)]).long()


def test_centroid_labels_recover_two_clear_clusters_from_weak_predictions():
    features, truth = _two_clusters()
    # Predictions only slightly right (0.55 vs 0.45): the clustering, not the head, decides.
    logits = torch.zeros(len(truth), 2)
    logits[torch.arange(len(truth)), truth] = math.log(0.55 / 0.45)
    assert torch.equal(centroid_pseudo_labels(features, logits), truth)


def test_centroid_labels_correct_a_head_that_is_wrong_on_a_few_samples():
    features, truth = _two_clusters()
    wrong = truth.clone()
    wrong[:3] = 1  # three samples of cluster 0 confidently predicted as class 1
    logits = 5.0 * F.one_hot(wrong, 2).float()
    assert (logits.argmax(1) != truth).sum() == 3
    assert torch.equal(centroid_pseudo_labels(features, logits), truth)


def test_centroid_labels_use_cosine_distance_not_euclidean():
    # Two directions; one far-out sample along the first direction sits nearer (Euclidean) to
    # the second centroid, but its angle says class 0.
    features = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0], [10.0, 2.0]])
    logits = 5.0 * F.one_hot(torch.tensor([0, 0, 1, 1, 1]), 2).float()
    assert centroid_pseudo_labels(features, logits, rounds=0)[-1].item() == 0


def test_centroid_labels_give_an_empty_class_no_sample():
    features, truth = _two_clusters()
    logits = torch.full((len(truth), 3), -BIG)  # class 2 never predicted
    logits[torch.arange(len(truth)), truth] = BIG
    labels = centroid_pseudo_labels(features, logits, rounds=2)
    assert set(labels.tolist()) == {0, 1}


def test_centroid_labels_check_shapes():
    with pytest.raises(DataError, match="features must have shape"):
        centroid_pseudo_labels(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(ConfigError, match="rounds"):
        centroid_pseudo_labels(torch.zeros(3, 2), torch.zeros(3, 2), rounds=-1)


def test_smoothed_cross_entropy_by_hand():
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    eps = 0.1
    log_p = F.log_softmax(logits, dim=1)[0]
    q = torch.tensor([1 - eps + eps / 3, eps / 3, eps / 3])
    expected = -(q * log_p).sum()
    assert smoothed_cross_entropy(logits, torch.tensor([0]), eps).item() == pytest.approx(
        expected.item())
    with pytest.raises(ConfigError, match="epsilon"):
        smoothed_cross_entropy(logits, torch.tensor([0]), 1.0)


def test_shot_loss_combines_the_terms():
    logits = torch.randn(8, 4, generator=torch.Generator().manual_seed(2))
    pseudo = torch.arange(8) % 4
    loss, logs = SHOTLoss(beta=0.3)(logits, pseudo)
    im = information_maximization_loss(logits)[0]
    assert loss.item() == pytest.approx(im.item() + 0.3 * F.cross_entropy(logits, pseudo).item())
    assert set(logs) == {"ent", "div", "pseudo_ce"}
    ablated, logs = SHOTLoss(beta=0.0, diversity=False)(logits, pseudo)
    assert ablated.item() == pytest.approx(logs["ent"].item())
    with pytest.raises(ConfigError, match="nothing"):
        SHOTLoss(beta=0.0, im_weight=0.0)
