"""Lazily read data through the engine: the same training, evaluation and feature cache as
in-memory tensors, with workers or without, and step budgets."""

from __future__ import annotations

import pytest
import torch

from tlroutes.config import HardwareSpec, TrainSpec, parse_run
from tlroutes.errors import ConfigError
from tlroutes.lazy_inputs import LazyInputs
from tlroutes.model import build_model
from tlroutes.problem import Domain, Split, Task
from tlroutes.train.engine import Stage, Trainer, evaluate_split
from tlroutes.train.features import cache_features
from tlroutes.train.hardware import Hardware
from tlroutes.train.loading import DataLoading, data_loading, eval_batch_size, set_data_loading
from tlroutes.train.steps import HeadStep, SupervisedStep
from tlroutes.train.streams import StepOrder, Stream

TASK = Task("classification", ("a", "b", "c"))
DOMAIN = Domain("toy", "image", (1, 8, 8))


class Rows:
    """A reader over an in-memory tensor (what a file source does, without files)."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def read(self, i: int) -> torch.Tensor:
        return self.x[i]


def _noise(sample: torch.Tensor) -> torch.Tensor:
    # A random train transform: a flip and noise drawn from the global RNG (seeded per sample).
    if torch.rand(()) < 0.5:
        sample = sample.flip(-1)
    return sample + 0.1 * torch.randn_like(sample)


def _split(n: int = 90, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, 1, 8, 8, generator=g) + y.view(-1, 1, 1, 1).float()
    return Split(x, y)


def _lazy(split: Split, train_transform=None) -> Split:
    return Split(LazyInputs(Rows(split.x), sample_shape=split.x.shape[1:],
                            train_transform=train_transform), split.y)


def _train(tmp_path, name: str, split: Split, *, workers: int = 0, augment: bool = True,
           **budget) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model(DOMAIN, TASK, trunk="cnn2d", trunk_args={"channels": (8, 8)})
    trainer = Trainer(tmp_path / name, hardware=Hardware(accelerator="cpu", workers=workers),
                      progress=False)
    val = _split(30, seed=1)
    stage = Stage(name="s", step=SupervisedStep(model, TASK),
                  streams={"train": Stream(split, 16, seed=3, augment=augment)},
                  validate=lambda: {"accuracy": 0.0}, **(budget or {"epochs": 2}))
    trainer.fit(stage)
    evaluate_split(model, model, val.x)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("workers", [0, 2])
def test_lazy_split_trains_exactly_as_the_tensor_path(tmp_path, workers):
    data = _split()
    memory = _train(tmp_path, "memory", data)
    assert _same(_train(tmp_path, "lazy", _lazy(data), workers=workers), memory)
    # A train transform read with augmentation off gives the plain batches too.
    assert _same(_train(tmp_path, "off", _lazy(data, _noise), workers=workers, augment=False),
                 memory)


def test_augmented_batches_are_the_same_in_workers_and_in_process(tmp_path):
    data = _split()
    memory = _train(tmp_path, "memory", data)
    in_process = _train(tmp_path, "w0", _lazy(data, _noise), workers=0)
    assert not _same(in_process, memory)  # the augmentation takes effect
    assert _same(_train(tmp_path, "w2", _lazy(data, _noise), workers=2), in_process)


def test_stream_restarts_its_loader_at_any_step():
    data = _lazy(_split(), _noise)
    stream = Stream(data, 16, seed=3, workers=2)
    plain = Stream(data, 16, seed=3, workers=0)
    try:
        for step in (0, 1, 2, 9, 10, 4):  # in order, a jump ahead, a jump back
            xa, ya = stream.batch(step)
            xb, yb = plain.batch(step)
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    finally:
        stream.close()
    assert stream._iter is None
    assert "lazily" in stream.describe() and "in memory" in Stream(_split(), 16).describe()


def test_ranks_read_disjoint_shares_augmented_as_one_process_would():
    data = _lazy(_split(), _noise).x
    one = StepOrder(n=90, batch_size=16, steps_per_pass=6, shuffle=True, seed=3, rank=0,
                    world_size=1)
    index, slots = one.positions(7)
    whole = data.load(index, augment_seed=one.augment_seed(7), slots=slots)
    for rank in (0, 1):
        share = StepOrder(n=90, batch_size=16, steps_per_pass=6, shuffle=True, seed=3,
                          rank=rank, world_size=2)
        index, slots = share.positions(7)
        part = data.load(index, augment_seed=share.augment_seed(7), slots=slots)
        assert torch.equal(part, whole[rank::2])


@pytest.mark.parametrize("workers", [0, 2])
def test_lazy_evaluation_equals_in_memory_evaluation(workers):
    torch.manual_seed(0)
    model = build_model(DOMAIN, TASK, trunk="cnn2d", trunk_args={"channels": (8, 8)})
    data = _split(50)
    lazy = _lazy(data, _noise)  # evaluation never augments
    # The settings come from the last Trainer; set them directly here.
    before = data_loading()
    set_data_loading(DataLoading(workers=workers))
    try:
        for size in (None, 7):
            assert torch.equal(evaluate_split(model, model, lazy.x, size),
                               evaluate_split(model, model, data.x, size))
    finally:
        set_data_loading(before)


def test_eval_batch_size_is_sized_to_memory():
    assert eval_batch_size((1, 8, 8), torch.float32) == 1024
    assert eval_batch_size((3, 224, 224), torch.float32) == (64 << 20) // (3 * 224 * 224 * 4)
    assert eval_batch_size((3, 4096, 4096), torch.float32) == 1
    with pytest.raises(ConfigError, match="eval_batch_size"):
        parse_run({"route": "task_fine_tuning", "hardware": {"eval_batch_size": 0}})
    assert HardwareSpec(workers=0, eval_batch_size=32).build().eval_batch_size == 32


# ------------------------------------------------------------------------------ step budgets
def test_steps_budget_validates_every_n_steps(tmp_path):
    data = _split()
    torch.manual_seed(0)
    model = build_model(DOMAIN, TASK, trunk="cnn2d", trunk_args={"channels": (8, 8)})
    trainer = Trainer(tmp_path / "r", hardware=Hardware(accelerator="cpu"), progress=False)
    result = trainer.fit(Stage(name="s", step=SupervisedStep(model, TASK),
                               streams={"train": Stream(data, 16, seed=3)},
                               validate=lambda: {"accuracy": 0.0}, epochs=None, steps=7,
                               val_every_steps=3))
    assert [r["step"] for r in result.history] == [3, 6, 7]
    assert result.epochs_run == 3


def test_a_steps_budget_of_whole_epochs_is_the_epochs_budget(tmp_path):
    data = _split()  # 90 samples, batch 16: 6 steps per epoch
    by_epochs = _train(tmp_path, "e", data, epochs=2)
    assert _same(_train(tmp_path, "s", data, epochs=None, steps=12), by_epochs)


def test_steps_budget_resumes_bit_identically(tmp_path):
    data = _lazy(_split(), _noise)
    whole = _train(tmp_path, "whole", data, workers=2, epochs=None, steps=11, val_every_steps=4)

    class Stop(Exception):
        pass

    calls = []

    def validate():
        calls.append(1)
        if len(calls) == 2:
            raise Stop  # interrupted after the first round's checkpoint
        return {"accuracy": 0.0}

    def stage(model):
        return Stage(name="s", step=SupervisedStep(model, TASK),
                     streams={"train": Stream(data, 16, seed=3)}, validate=validate,
                     epochs=None, steps=11, val_every_steps=4)

    hw = Hardware(accelerator="cpu", workers=2)
    torch.manual_seed(0)
    model = build_model(DOMAIN, TASK, trunk="cnn2d", trunk_args={"channels": (8, 8)})
    with pytest.raises(Stop):
        Trainer(tmp_path / "cut", hardware=hw, progress=False).fit(stage(model))
    torch.manual_seed(0)
    model = build_model(DOMAIN, TASK, trunk="cnn2d", trunk_args={"channels": (8, 8)})
    Trainer(tmp_path / "cut", hardware=hw, progress=False, resume=True).fit(stage(model))
    evaluate_split(model, model, _split(30, seed=1).x)
    assert _same({k: v for k, v in model.state_dict().items()}, whole)


def test_train_spec_takes_epochs_or_steps_not_both():
    assert TrainSpec().epochs == 10 and TrainSpec().total_steps(6) == 60
    spec = TrainSpec(steps=500)
    assert spec.epochs is None and spec.total_steps(6) == 500 and spec.length() == "500 steps"
    with pytest.raises(ConfigError, match="not both"):
        parse_run({"route": "task_fine_tuning", "target_training": {"epochs": 3, "steps": 9}})


# ------------------------------------------------------------------------------ feature cache
def test_feature_cache_on_disk_equals_the_one_in_memory(tmp_path):
    torch.manual_seed(0)
    model = build_model(DOMAIN, TASK, trunk="cnn2d", trunk_args={"channels": (8, 8)})
    data = _lazy(_split())
    held = cache_features(model, data, batch_size=16)
    stored = cache_features(model, data, batch_size=16, folder=tmp_path / "features",
                            name="train", memory_bytes=0)
    assert not held.is_lazy and stored.is_lazy
    assert (tmp_path / "features" / "train.f32").stat().st_size == held.x.numel() * 4
    assert torch.equal(stored.x.materialize(), held.x) and torch.equal(stored.y, held.y)

    def head_weights(features: Split, name: str, workers: int) -> dict:
        torch.manual_seed(1)
        head = torch.nn.Linear(held.x.shape[1], 3)
        Trainer(tmp_path / name, hardware=Hardware(accelerator="cpu", workers=workers),
                progress=False).fit(Stage(
                    name="probe", step=HeadStep(head, TASK),
                    streams={"train": Stream(features, 16, seed=3)},
                    validate=lambda: {"accuracy": 0.0}, epochs=2))
        return {k: v.clone() for k, v in head.state_dict().items()}

    assert _same(head_weights(stored, "disk", 2), head_weights(held, "memory", 0))
