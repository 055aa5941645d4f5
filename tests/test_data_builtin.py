"""Built-in datasets, shifts and task variants: shapes, determinism, splits, known-answer shifts."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from tlroutes.data import (
    BUILTIN_DATASETS,
    IMAGE_SHIFTS,
    SIGNAL_SHIFTS,
    TASK_VARIANTS,
    add_noise,
    blur,
    invert,
    load_builtin,
    rescale,
    rotate,
    split_indices,
    stratified_order,
)
from tlroutes.data import builtin as builtin_module
from tlroutes.data.shifts import SIGNAL_DEFAULTS
from tlroutes.errors import ConfigError, DataError

N_SIGNALS = 300  # keep MNIST-1D generation fast in tests (~0.2 s)


def all_x(problem):
    return torch.cat([s.x for s in problem.splits().values()])


def all_y(problem):
    return torch.cat([s.y for s in problem.splits().values()])


# ------------------------------------------------------------------------------------------------
# Registries
# ------------------------------------------------------------------------------------------------


def test_registries_list_names():
    assert set(BUILTIN_DATASETS) == {"digits", "mnist1d"}
    assert list(TASK_VARIANTS) == ["digit", "parity", "gt4", "properties", "position"]
    assert list(IMAGE_SHIFTS) == ["scale", "rotation", "blur", "inversion", "noise"]
    assert list(SIGNAL_SHIFTS) == ["noise", "shear", "translation"]


def test_signal_defaults_match_the_generator():
    from mnist1d.data import get_dataset_args

    args = get_dataset_args(as_dict=True)
    assert SIGNAL_DEFAULTS["noise"] == args["corr_noise_scale"]
    assert SIGNAL_DEFAULTS["noise"] * 0.08 == pytest.approx(args["iid_noise_scale"])
    assert SIGNAL_DEFAULTS["shear"] == args["shear_scale"]
    assert SIGNAL_DEFAULTS["translation"] == args["max_translation"]


# ------------------------------------------------------------------------------------------------
# Shapes, dtypes, labels
# ------------------------------------------------------------------------------------------------


def test_digits_shapes_dtypes_and_labels():
    p = load_builtin("digits")
    assert p.name == "digits/digit"
    assert p.domain.name == "digits"
    assert p.domain.modality == "image"
    assert p.domain.input_shape == (1, 8, 8)
    assert p.task.kind == "classification"
    assert p.task.labels == tuple(str(d) for d in range(10))
    assert p.task.name == "digit"
    x, y = all_x(p), all_y(p)
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert y.dtype == torch.long and set(y.tolist()) == set(range(10))
    assert p.meta["generator"] == "sklearn.datasets.load_digits"
    assert p.meta["n"] == 1797 and p.meta["seed"] == 0 and p.meta["shift"] == {}
    assert sum(p.meta["sizes"].values()) == 1797
    assert [len(s) for s in p.splits().values()] == [1078, 359, 360]


def test_mnist1d_shapes_dtypes_and_labels():
    p = load_builtin("mnist1d", n=N_SIGNALS)
    assert p.name == "mnist1d/digit"
    assert p.domain.modality == "signal" and p.domain.input_shape == (1, 40)
    x, y = all_x(p), all_y(p)
    assert x.shape == (N_SIGNALS, 1, 40) and x.dtype == torch.float32
    assert y.dtype == torch.long and set(y.tolist()) == set(range(10))
    assert abs(float(x.mean())) < 0.2 and 0.7 < float(x.std()) < 1.3  # generator standardises
    assert p.meta["generator"] == "mnist1d.data.make_dataset"
    assert p.meta["generator_args"]["seed"] == 0
    assert "url" not in p.meta["generator_args"]


def test_mnist1d_n_not_a_multiple_of_ten():
    p = load_builtin("mnist1d", n=123, classes=[1, 2, 3, 4])
    assert p.meta["n"] == 123 and sum(len(s) for s in p.splits().values()) == 123


@pytest.mark.parametrize(("task", "labels"), [("parity", ("even", "odd")), ("gt4", ("<=4", ">4"))])
def test_binary_variants(task, labels):
    base, p = load_builtin("digits"), load_builtin("digits", task=task)
    assert p.task == type(p.task)("classification", labels, name=task)
    digits = all_y(base)  # same seed: the same samples in the same order
    expected = digits % 2 if task == "parity" else (digits > 4).long()
    assert torch.equal(all_y(p), expected)
    assert torch.equal(all_x(p), all_x(base))
    assert p.name == f"digits/{task}"


def test_classes_subset_is_reindexed():
    full = load_builtin("digits")
    p = load_builtin("digits", classes=[9, 5, 7])
    assert p.task.labels == ("5", "7", "9")
    assert p.name == "digits/digit[5,7,9]"
    assert p.meta["classes"] == [5, 7, 9]
    y = all_y(p)
    assert set(y.tolist()) == {0, 1, 2}
    # every kept image is a full-dataset image of the digit its new label names
    labels_of = {}
    for img, d in zip(all_x(full), all_y(full), strict=True):
        labels_of.setdefault(img.numpy().tobytes(), set()).add(int(d))
    for img, label in zip(all_x(p), y, strict=True):
        assert int(p.task.labels[int(label)]) in labels_of[img.numpy().tobytes()]
    assert len(y) == int(sum((all_y(full) == d).sum() for d in (5, 7, 9)))


def test_classes_subset_with_binary_task_and_mnist1d():
    p = load_builtin("digits", task="parity", classes=[0, 1, 2, 3, 4])
    assert p.task.labels == ("even", "odd")
    q = load_builtin("mnist1d", classes=[3, 8], n=100)
    assert q.task.labels == ("3", "8") and set(all_y(q).tolist()) == {0, 1}
    assert int((all_y(q) == 0).sum()) == 50


# ------------------------------------------------------------------------------------------------
# Determinism, splits, stratification
# ------------------------------------------------------------------------------------------------


def test_same_seed_same_problem_other_seed_other_problem():
    a = load_builtin("digits", n=500, seed=3, shift={"rotation": (-20, 20), "noise": 0.1})
    b = load_builtin("digits", n=500, seed=3, shift={"rotation": (-20, 20), "noise": 0.1})
    c = load_builtin("digits", n=500, seed=4, shift={"rotation": (-20, 20), "noise": 0.1})
    for name in ("train", "val", "test"):
        assert torch.equal(a.splits()[name].x, b.splits()[name].x)
        assert torch.equal(a.splits()[name].y, b.splits()[name].y)
    assert not torch.equal(a.train.x, c.train.x)


def test_mnist1d_deterministic_and_seed_changes_the_draw():
    a = load_builtin("mnist1d", n=N_SIGNALS, seed=1)
    builtin_module._generate_mnist1d.cache_clear()
    b = load_builtin("mnist1d", n=N_SIGNALS, seed=1)
    c = load_builtin("mnist1d", n=N_SIGNALS, seed=2)
    assert torch.equal(all_x(a), all_x(b)) and torch.equal(all_y(a), all_y(b))
    assert not torch.equal(all_x(a), all_x(c))


def test_loaders_leave_torch_global_rng_alone():
    state = torch.get_rng_state()
    load_builtin("digits", n=200, shift={"noise": 0.2, "rotation": (0, 90)}, task="position")
    assert torch.equal(torch.get_rng_state(), state)


def test_mnist1d_restores_python_and_numpy_global_rng():
    builtin_module._generate_mnist1d.cache_clear()
    random.seed(1234)
    np.random.seed(4321)
    expected_py, expected_np = random.random(), np.random.rand()
    random.seed(1234)
    np.random.seed(4321)
    load_builtin("mnist1d", n=50, seed=7)
    assert random.random() == expected_py
    assert np.random.rand() == expected_np


def test_split_indices_disjoint_covering_and_sized():
    labels = torch.arange(1000) % 7
    g = torch.Generator().manual_seed(0)
    train, val, test = split_indices(labels, (0.6, 0.2, 0.2), g)
    assert (len(train), len(val), len(test)) == (600, 200, 200)
    joined = torch.cat([train, val, test])
    assert torch.equal(joined.sort().values, torch.arange(1000))


def test_split_indices_tiny_and_deterministic():
    labels = torch.tensor([0, 0, 1, 1, 2])
    a = split_indices(labels, (0.8, 0.1, 0.1), torch.Generator().manual_seed(5))
    b = split_indices(labels, (0.8, 0.1, 0.1), torch.Generator().manual_seed(5))
    assert [len(s) for s in a] == [3, 1, 1]
    assert all(torch.equal(s, t) for s, t in zip(a, b, strict=True))


def test_splits_are_stratified():
    p = load_builtin("digits")
    overall = torch.bincount(all_y(p), minlength=10).float() / len(all_y(p))
    for split in p.splits().values():
        share = torch.bincount(split.y, minlength=10).float() / len(split)
        # each class's share within about one sample of its overall share
        assert float((share - overall).abs().max()) <= 1.5 / len(split)


def test_stratified_order_prefix_is_stratified():
    labels = torch.tensor([0] * 700 + [1] * 200 + [2] * 100)
    order = stratified_order(labels, torch.Generator().manual_seed(1))
    assert torch.equal(order.sort().values, torch.arange(1000))
    counts = torch.bincount(labels[order[:100]], minlength=3)
    assert (counts - torch.tensor([70, 20, 10])).abs().max() <= 1


def test_subsample_n_is_stratified():
    p = load_builtin("digits", n=300)
    counts = torch.bincount(all_y(p), minlength=10)
    assert int(counts.sum()) == 300 and int(counts.min()) >= 29 and int(counts.max()) <= 31


def test_shift_does_not_change_the_split():
    a = load_builtin("digits", n=400)
    b = load_builtin("digits", n=400, shift={"blur": 1.0})
    for name in ("train", "val", "test"):
        assert torch.equal(a.splits()[name].y, b.splits()[name].y)
        assert torch.equal(blur(a.splits()[name].x, 1.0), b.splits()[name].x)


# ------------------------------------------------------------------------------------------------
# Image shift functions (known answers)
# ------------------------------------------------------------------------------------------------


def synthetic_images(n: int = 3, size: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 2, size, size, generator=g)


def test_rotate_90_is_rot90_counter_clockwise():
    x = synthetic_images()
    assert torch.allclose(rotate(x, 90), torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5)
    assert torch.allclose(rotate(x, -90), torch.rot90(x, -1, dims=(-2, -1)), atol=1e-5)
    assert torch.allclose(rotate(x, 180), torch.rot90(x, 2, dims=(-2, -1)), atol=1e-5)
    # direction as displayed: the top-right pixel goes to the top-left
    one = torch.zeros(1, 1, 4, 4)
    one[0, 0, 0, 3] = 1.0
    assert float(rotate(one, 90)[0, 0, 0, 0]) == pytest.approx(1.0, abs=1e-5)


def test_rotate_per_image_angles():
    x = synthetic_images()
    out = rotate(x, torch.tensor([0.0, 90.0, 270.0]))
    assert torch.equal(out[0], x[0])
    assert torch.allclose(out[1], torch.rot90(x[1], 1, dims=(-2, -1)), atol=1e-5)
    assert torch.allclose(out[2], torch.rot90(x[2], 3, dims=(-2, -1)), atol=1e-5)


def test_rotate_zero_and_full_turn_are_identity():
    x = synthetic_images()
    assert torch.equal(rotate(x, 0), x)
    assert torch.equal(rotate(x, 360), x)
    assert rotate(x, 0) is not x


def test_rotate_non_square_keeps_shape_and_centre():
    x = torch.zeros(1, 1, 5, 9)
    x[0, 0, 2, 4] = 1.0  # the centre pixel stays put under any rotation
    out = rotate(x, 37)
    assert out.shape == x.shape
    assert float(out[0, 0, 2, 4]) == pytest.approx(1.0, abs=1e-5)


def test_invert_twice_is_identity():
    x = synthetic_images()
    assert torch.allclose(invert(invert(x)), x, atol=1e-7)
    assert torch.allclose(invert(x), 1 - x)


def test_blur_keeps_mean_and_reduces_variance():
    x = synthetic_images(4, 16)
    out = blur(x, 1.0)
    assert out.shape == x.shape
    assert float((out.mean() - x.mean()).abs()) < 0.02
    assert float(out.var()) < 0.5 * float(x.var())
    assert torch.equal(blur(x, 0.0), x)
    constant = torch.full((1, 1, 6, 6), 0.3)
    assert torch.allclose(blur(constant, 2.5), constant, atol=1e-6)


def test_rescale_identity_and_shrink():
    x = synthetic_images()
    assert torch.equal(rescale(x, 1.0), x)
    square = torch.zeros(1, 1, 16, 16)
    square[..., 4:12, 4:12] = 1.0
    small = rescale(square, 0.5)
    assert float(small.sum()) == pytest.approx(16.0, rel=0.1)  # a quarter of the area
    assert float(small[..., :5, :].abs().sum()) == 0.0  # border now empty
    wide = torch.zeros(1, 1, 16, 16)
    wide[..., 2:14, 2:14] = 1.0
    big = rescale(wide, 2.0)
    assert float(big.min()) == pytest.approx(1.0)  # the centre half now fills the frame


def test_add_noise_reproducible_and_clipped():
    x = torch.full((2, 1, 8, 8), 0.5)
    a = add_noise(x, 0.2, torch.Generator().manual_seed(0))
    b = add_noise(x, 0.2, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert float((a - x).std()) == pytest.approx(0.2, rel=0.3)
    big = add_noise(x, 5.0, torch.Generator().manual_seed(0))
    assert float(big.min()) == 0.0 and float(big.max()) == 1.0
    unclipped = add_noise(x, 5.0, torch.Generator().manual_seed(0), clip=None)
    assert float(unclipped.max()) > 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_shift_functions_run_on_the_gpu():
    x = synthetic_images()
    gpu = x.cuda()
    assert torch.allclose(rotate(gpu, 30).cpu(), rotate(x, 30), atol=1e-5)
    assert torch.allclose(rescale(gpu, 0.7).cpu(), rescale(x, 0.7), atol=1e-5)
    assert torch.allclose(blur(gpu, 1.0).cpu(), blur(x, 1.0), atol=1e-5)
    noisy = add_noise(gpu, 0.1, torch.Generator().manual_seed(0))
    assert noisy.device == gpu.device
    assert torch.allclose(noisy.cpu(), add_noise(x, 0.1, torch.Generator().manual_seed(0)))


def test_shift_functions_want_batches():
    with pytest.raises(DataError, match=r"\(N, C, H, W\)"):
        rotate(torch.zeros(8, 8), 30)


# ------------------------------------------------------------------------------------------------
# Shifted problems
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shift",
    [
        {"rotation": 30},
        {"rotation": (-45, 45)},
        {"inversion": True},
        {"noise": 0.2},
        {"blur": 1.0},
        {"scale": 0.7},
    ],
)
def test_image_shift_changes_inputs_not_labels(shift):
    base = load_builtin("digits", n=400)
    p = load_builtin("digits", n=400, shift=shift)
    assert torch.equal(all_y(p), all_y(base))
    assert float((all_x(p) - all_x(base)).abs().mean()) > 0.03
    assert float(all_x(p).min()) >= -1e-6 and float(all_x(p).max()) <= 1 + 1e-6
    assert p.domain.name.startswith("digits+" + next(iter(shift)))
    assert p.meta["shift"] == {k: tuple(v) if isinstance(v, list) else v for k, v in shift.items()}


def test_image_shift_matches_shift_function():
    base = load_builtin("digits", n=200)
    p = load_builtin("digits", n=200, shift={"rotation": 30})
    assert torch.allclose(p.train.x, rotate(base.train.x, 30))
    q = load_builtin("digits", n=200, shift={"inversion": True})
    assert torch.equal(q.val.x, invert(base.val.x))


def test_domain_name_lists_knobs_in_application_order_and_drops_no_ops():
    p = load_builtin("digits", n=100, shift={"noise": 0.1, "rotation": 30, "scale": 1.0})
    assert p.domain.name == "digits+rotation=30+noise=0.1"
    assert p.name == "digits+rotation=30+noise=0.1/digit"
    assert list(p.meta["shift"]) == ["rotation", "noise"]
    same = load_builtin("digits", n=100, shift={"rotation": 0, "inversion": False})
    assert same.domain.name == "digits" and same.meta["shift"] == {}
    assert torch.equal(all_x(same), all_x(load_builtin("digits", n=100)))
    inv = load_builtin("digits", n=100, shift={"inversion": 1.0, "rotation": [-10, 10]})
    assert inv.domain.name == "digits+rotation=-10..10+inversion"


@pytest.mark.parametrize("shift", [{"noise": 0.6}, {"shear": 3.0}])
def test_signal_shift_regenerates_paired_samples(shift):
    base = load_builtin("mnist1d", n=N_SIGNALS)
    p = load_builtin("mnist1d", n=N_SIGNALS, shift=shift)
    # noise and shear use the generator's random draws exactly as the default does, so the samples
    # are paired: same labels in the same order, inputs changed by the shift
    assert torch.equal(all_y(p), all_y(base))
    assert float((all_x(p) - all_x(base)).abs().mean()) > 0.1
    knob = next(iter(shift))
    assert p.domain.name == f"mnist1d+{knob}={shift[knob]:g}"


def test_signal_shift_sets_generator_args():
    p = load_builtin("mnist1d", n=100, shift={"noise": 0.5, "shear": 2, "translation": 0})
    args = p.meta["generator_args"]
    assert args["corr_noise_scale"] == 0.5
    assert args["iid_noise_scale"] == pytest.approx(0.04)
    assert args["shear_scale"] == 2.0
    assert args["max_translation"] == 1  # 0 or 1: no translation
    assert p.meta["shift"] == {"noise": 0.5, "shear": 2.0, "translation": 0}
    default = load_builtin("mnist1d", n=100, shift={"noise": 0.25, "translation": 48})
    assert default.domain.name == "mnist1d" and default.meta["shift"] == {}


def test_signal_translation_changes_inputs():
    base = load_builtin("mnist1d", n=N_SIGNALS)
    p = load_builtin("mnist1d", n=N_SIGNALS, shift={"translation": 0})
    assert p.domain.name == "mnist1d+translation=0"
    assert not torch.equal(all_x(p), all_x(base))
    assert torch.equal(torch.bincount(all_y(p)), torch.bincount(all_y(base)))


# ------------------------------------------------------------------------------------------------
# Position task
# ------------------------------------------------------------------------------------------------


def test_image_position_targets_point_at_the_digit():
    digits = load_builtin("digits", n=300, seed=2)
    p = load_builtin("digits", task="position", n=300, seed=2)
    assert p.task.kind == "regression" and p.task.labels == ("row", "col")
    assert p.domain.input_shape == (1, 16, 16) and p.domain.name == "digits-canvas16x16"
    assert p.name == "digits-canvas16x16/position"
    for name, split in p.splits().items():
        assert split.y.shape == (len(split), 2) and split.y.dtype == torch.float32
        assert float(split.y.min()) >= 0 and float(split.y.max()) <= 1
        source = digits.splits()[name].x  # same seed: the same digits in the same order
        for i in range(len(split)):
            row, col = (split.y[i] * 8).round().long().tolist()
            assert torch.equal(split.x[i, :, row : row + 8, col : col + 8], source[i])
            outside = split.x[i].clone()
            outside[:, row : row + 8, col : col + 8] = 0
            assert float(outside.abs().sum()) == 0.0
    targets = all_y(p)
    assert float(targets.std(0).min()) > 0.2  # positions spread over the canvas


def test_signal_position_targets_point_at_the_signal():
    signals = load_builtin("mnist1d", n=N_SIGNALS)
    p = load_builtin("mnist1d", task="position", n=N_SIGNALS)
    assert p.task.labels == ("offset",) and p.domain.input_shape == (1, 80)
    x, y, source = all_x(p), all_y(p), all_x(signals)
    assert y.shape == (N_SIGNALS, 1)
    for i in range(N_SIGNALS):
        offset = int((y[i, 0] * 40).round())
        assert torch.equal(x[i, :, offset : offset + 40], source[i])
        assert float(x[i, :, :offset].abs().sum() + x[i, :, offset + 40 :].abs().sum()) == 0.0


def test_position_with_shift_rotates_digit_then_blurs_canvas():
    p = load_builtin("digits", task="position", n=100, shift={"rotation": 90, "blur": 0.8})
    assert p.domain.name == "digits-canvas16x16+rotation=90+blur=0.8"
    assert p.domain.input_shape == (1, 16, 16)


# ------------------------------------------------------------------------------------------------
# Properties task (multilabel)
# ------------------------------------------------------------------------------------------------

#: digit -> (even, >4, prime, loop), written out by hand
KNOWN_PROPERTIES = {
    0: (1, 0, 0, 1),
    1: (0, 0, 0, 0),
    2: (1, 0, 1, 0),
    3: (0, 0, 1, 0),
    4: (1, 0, 0, 1),
    5: (0, 1, 1, 0),
    6: (1, 1, 0, 1),
    7: (0, 1, 1, 0),
    8: (1, 1, 0, 1),
    9: (0, 1, 0, 1),
}


@pytest.mark.parametrize(("name", "n"), [("digits", 400), ("mnist1d", N_SIGNALS)])
def test_properties_targets_for_known_digits(name, n):
    base = load_builtin(name, n=n)  # task="digit", all ten classes: the label is the digit
    p = load_builtin(name, task="properties", n=n)
    assert p.task.kind == "multilabel" and p.task.name == "properties"
    assert p.task.labels == ("even", ">4", "prime", "loop")
    assert p.domain == base.domain  # different task, same domain
    assert p.name == f"{base.domain.name}/properties"
    y = all_y(p)
    assert y.dtype == torch.float32 and y.shape == (n, 4)
    expected = torch.tensor([KNOWN_PROPERTIES[int(d)] for d in all_y(base)], dtype=torch.float32)
    assert torch.equal(y, expected)
    assert torch.equal(all_x(p), all_x(base))


def test_properties_with_a_class_subset():
    p = load_builtin("digits", task="properties", classes=[2, 9])
    assert set(map(tuple, all_y(p).long().tolist())) == {KNOWN_PROPERTIES[2], KNOWN_PROPERTIES[9]}


# ------------------------------------------------------------------------------------------------
# Canvas (any task variant)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "canvas", "shape", "domain"),
    [
        ("digits", 12, (1, 12, 12), "digits-canvas12x12"),
        ("digits", 8, (1, 8, 8), "digits-canvas8x8"),
        ("mnist1d", 64, (1, 64), "mnist1d-canvas64"),
    ],
)
def test_canvas_shapes_and_placement(name, canvas, shape, domain):
    n = 200
    base = load_builtin(name, n=n)
    p = load_builtin(name, task="parity", n=n, canvas=canvas)
    assert p.domain.input_shape == shape and p.domain.name == domain
    assert p.name == f"{domain}/parity" and p.meta["canvas"] == list(shape[1:])
    assert torch.equal(all_y(p), all_y(base) % 2)
    x, source = all_x(p), all_x(base)
    assert x.shape == (n, *shape)
    # every canvas holds its source sample exactly once, zeros elsewhere: same total and, on a
    # canvas larger than the sample, not always in the same place
    assert torch.allclose(x.flatten(1).sum(1), source.flatten(1).sum(1), atol=1e-4)
    nonzero = (x != 0).flatten(1).float()
    first = nonzero.argmax(1)
    if canvas > source.shape[-1]:
        assert len(first.unique()) > 1
    else:
        assert torch.equal(x, source)


def test_position_canvas_sets_the_canvas_size():
    p = load_builtin("digits", task="position", n=150, canvas=20)
    assert p.domain.name == "digits-canvas20x20" and p.domain.input_shape == (1, 20, 20)
    q = load_builtin("mnist1d", task="position", n=N_SIGNALS, canvas=40)
    assert q.domain.input_shape == (1, 40) and float(all_y(q).abs().max()) == 0.0
    default = load_builtin("digits", task="position", n=150)
    explicit = load_builtin("digits", task="position", n=150, canvas=16)
    assert default.domain == explicit.domain
    assert torch.equal(all_x(default), all_x(explicit))
    assert torch.equal(all_y(default), all_y(explicit))


@pytest.mark.parametrize(
    ("name", "canvas", "n"), [("digits", 16, 150), ("digits", 11, 100), ("mnist1d", 80, 100)]
)
def test_same_images_and_domain_across_task_variants(name, canvas, n):
    kwargs = {"n": n, "seed": 5, "canvas": canvas, "shift": {"noise": 0.1}}
    if name == "digits":
        kwargs["shift"] = {"rotation": (-20, 20), "noise": 0.1}
    problems = {task: load_builtin(name, task=task, **kwargs) for task in TASK_VARIANTS}
    ref = problems["digit"]
    for task, p in problems.items():
        assert p.domain == ref.domain, task
        assert p.name == f"{ref.domain.name}/{task}"
        for split in ("train", "val", "test"):
            assert torch.equal(p.splits()[split].x, ref.splits()[split].x), (task, split)
    # the position targets say where the samples of every variant were placed
    size = ref.domain.input_shape[1] - (8 if name == "digits" else 40)
    where = (all_y(problems["position"]) * max(size, 1)).round().long()
    clean = load_builtin(name, task="position", n=n, seed=5, canvas=canvas)
    assert torch.equal((all_y(clean) * max(size, 1)).round().long(), where)


def test_canvas_is_deterministic_and_depends_on_the_seed():
    a = load_builtin("digits", n=200, seed=1, canvas=16)
    b = load_builtin("digits", n=200, seed=1, canvas=16, task="gt4")
    c = load_builtin("digits", n=200, seed=2, canvas=16)
    assert torch.equal(all_x(a), all_x(b))
    first = (all_x(a) != 0).flatten(1).float().argmax(1)
    other = (all_x(c) != 0).flatten(1).float().argmax(1)
    assert not torch.equal(first, other)


def test_position_and_digit_on_one_canvas_are_the_same_domain():
    source = load_builtin("digits", task="digit", canvas=16, n=100)
    target = load_builtin("digits", task="position", n=100)
    assert source.domain == target.domain
    assert source.domain.name == "digits-canvas16x16"
    assert source.domain.input_shape == (1, 16, 16)
    assert source.name != target.name
    assert torch.equal(all_x(source), all_x(target))


@pytest.mark.parametrize(
    ("name", "canvas", "pattern"),
    [
        ("digits", 7, r"canvas=7 is too small.*>= 8"),
        ("digits", 0, r"canvas=0 is too small.*>= 8"),
        ("mnist1d", 39, r"canvas=39 is too small.*>= 40"),
        ("digits", 16.0, r"canvas must be an integer.*16\.0"),
        ("digits", "16", r"canvas must be an integer"),
        ("digits", True, r"canvas must be an integer"),
        ("digits", (16, 16), r"canvas must be an integer"),
    ],
)
def test_bad_canvas(name, canvas, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_builtin(name, canvas=canvas, n=50)


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------


def test_unknown_dataset():
    with pytest.raises(
        ConfigError,
        match=r"Unknown built-in dataset 'digit'.*digits, mnist1d.*"
        r"Did you mean 'digits'",
    ):
        load_builtin("digit")


def test_unknown_task_variant():
    with pytest.raises(
        ConfigError,
        match=r"Unknown task variant 'parit'.*position.*"
        r"Did you mean 'parity'",
    ):
        load_builtin("digits", task="parit")


def test_unknown_shift_knob():
    with pytest.raises(
        ConfigError,
        match=r"Unknown shift knob 'rotaton'.*scale, rotation.*"
        r"Did you mean 'rotation'",
    ):
        load_builtin("digits", shift={"rotaton": 30})


def test_shift_knob_of_the_wrong_modality():
    with pytest.raises(
        ConfigError,
        match=r"'rotation' applies to images only.*'mnist1d'.*"
        r"noise, shear, translation",
    ):
        load_builtin("mnist1d", shift={"rotation": 30}, n=50)
    with pytest.raises(
        ConfigError, match=r"'shear' applies to signals only.*'digits'.*scale, rotation"
    ):
        load_builtin("digits", shift={"shear": 1.0})


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"shift": {"scale": 0}}, "must be > 0"),
        ({"shift": {"blur": -1}}, "must be >= 0"),
        ({"shift": {"noise": "lots"}}, "finite number"),
        ({"shift": {"inversion": 0.5}}, "on or off"),
        ({"shift": {"rotation": (30, 10)}}, "lo > hi"),
        ({"shift": [("rotation", 30)]}, "dict of knob"),
        ({"split": (0.5, 0.5)}, "three"),
        ({"split": (0.6, 0.3, 0.3)}, "sum to 1"),
        ({"split": (0.8, 0.2, 0.0)}, "positive"),
        ({"n": 5000}, "only 1797 samples"),
        ({"n": 2}, ">= 3"),
        ({"seed": -1}, "seed"),
        ({"classes": [3]}, "at least two classes"),
        ({"classes": [1, 1, 2]}, "repeats"),
        ({"classes": [1, 10]}, "digits 0..9"),
    ],
)
def test_bad_arguments(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_builtin("digits", **kwargs)


def test_bad_signal_translation():
    with pytest.raises(ConfigError, match="translation"):
        load_builtin("mnist1d", shift={"translation": 2.5}, n=50)
    with pytest.raises(ConfigError, match="translation"):
        load_builtin("mnist1d", shift={"translation": 100}, n=50)
