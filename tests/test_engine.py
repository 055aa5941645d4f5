"""The engine: selection on validation only, divergence, checkpoints that survive interruption."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tlroutes.errors import CheckpointError, ConfigError, TrainingDivergedError
from tlroutes.problem import Split
from tlroutes.train import checkpoint as ckpt
from tlroutes.train.engine import Stage, Trainer
from tlroutes.train.hardware import Hardware
from tlroutes.train.streams import Stream


class LinearStep(nn.Module):
    """Least squares on one stream; ``nan_at`` makes the loss NaN from that call on."""

    def __init__(self, nan_at: int | None = None) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 1)
        self.calls, self.nan_at = 0, nan_at

    def forward(self, batch):
        x, y = batch["train"]
        self.calls += 1
        loss = ((self.lin(x) - y) ** 2).mean()
        if self.nan_at is not None and self.calls >= self.nan_at:
            loss = loss * float("nan")
        return loss


def _data(n=64, seed=0) -> Split:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return Split(x, x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]))


def _trainer(tmp_path, **kw) -> Trainer:
    return Trainer(tmp_path / "run", hardware=Hardware(accelerator="cpu"), progress=False, **kw)


def _stage(step, scores, **kw) -> Stage:
    """A stage whose validation returns ``scores`` one epoch after another."""
    it = iter(scores)
    return Stage(name="s", step=step, streams={"train": Stream(_data(), 16)},
                 validate=lambda: {"score": next(it)}, monitor="score", **kw)


def test_best_epoch_is_selected_on_validation_and_restored(tmp_path):
    step = LinearStep()
    snapshots = []
    scores = [0.1, 0.5, 0.3, 0.2, 0.9]

    def validate():
        snapshots.append({k: v.clone() for k, v in step.state_dict().items()})
        return {"score": scores[len(snapshots) - 1]}

    stage = Stage(name="s", step=step, streams={"train": Stream(_data(), 16)},
                  validate=validate, monitor="score", epochs=5, patience=2)
    result = _trainer(tmp_path).fit(stage)
    assert result.best_epoch == 1 and result.best_score == 0.5
    assert result.stopped_early and result.epochs_run == 4  # two epochs without improvement
    for k, v in step.state_dict().items():
        assert v.equal(snapshots[1][k]), "the best validation epoch's weights must be restored"


def test_min_mode_selects_the_smallest(tmp_path):
    result = _trainer(tmp_path).fit(_stage(LinearStep(), [3.0, 1.0, 2.0], epochs=3, mode="min"))
    assert result.best_epoch == 1


def test_nan_loss_stops_with_step_number_and_keeps_last_good_checkpoint(tmp_path):
    trainer = _trainer(tmp_path)
    step = LinearStep(nan_at=4 * 2 + 3)  # 4 steps per epoch: epoch 3, step 3
    with pytest.raises(TrainingDivergedError, match="epoch 3, step 3"):
        trainer.fit(_stage(step, [1.0, 2.0, 3.0], epochs=3))
    folder = trainer.stage_dir("s")
    latest = ckpt.latest_checkpoint(folder)
    assert latest is not None and latest.name == "epoch-0001"
    state = ckpt.load_checkpoint(latest, LinearStep())
    assert state["epoch"] == 1 and len(state["history"]) == 2
    assert all(torch.isfinite(v).all() for v in step.state_dict().values() if v.is_floating_point())


def test_everything_frozen_is_an_error(tmp_path):
    step = LinearStep()
    step.requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        _trainer(tmp_path).fit(_stage(step, [1.0]))


def test_unknown_monitor_names_what_validation_reports(tmp_path):
    stage = _stage(LinearStep(), [1.0], epochs=1)
    stage.monitor = "accuracy"
    with pytest.raises(ConfigError, match="score"):
        _trainer(tmp_path).fit(stage)


def test_refuses_to_overwrite_a_finished_stage_without_resume(tmp_path):
    _trainer(tmp_path).fit(_stage(LinearStep(), [1.0], epochs=1))
    with pytest.raises(CheckpointError, match="resume"):
        _trainer(tmp_path).fit(_stage(LinearStep(), [1.0], epochs=1))
    again = LinearStep()
    _trainer(tmp_path, resume=True).fit(_stage(again, [1.0], epochs=1))
    assert again.calls == 0, "a finished stage is loaded, not trained again"


def _module(value: float) -> nn.Module:
    m = nn.Linear(3, 2)
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(value)
    return m


def test_interrupted_checkpoint_write_leaves_previous_loadable(tmp_path, monkeypatch):
    folder = tmp_path / "ck"
    ckpt.save_checkpoint(folder, 0, _module(1.0), {"epoch": 0})

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated) in the middle of the write")

    monkeypatch.setattr(ckpt.torch, "save", crash)  # weights written, state not
    with pytest.raises(OSError):
        ckpt.save_checkpoint(folder, 1, _module(2.0), {"epoch": 1})
    monkeypatch.undo()
    # A half-written file from a kill leaves garbage behind as well.
    (folder / ".epoch-0001.junk").mkdir()
    (folder / ".epoch-0001.junk" / "weights.safetensors").write_bytes(b"\x00" * 10)

    latest = ckpt.latest_checkpoint(folder)
    assert latest.name == "epoch-0000"
    target = _module(0.0)
    state = ckpt.load_checkpoint(latest, target)
    assert state["epoch"] == 0 and all((p == 1.0).all() for p in target.parameters())
    ckpt.save_checkpoint(folder, 1, _module(2.0), {"epoch": 1})  # the next write cleans up
    # The previous checkpoint stays, to fall back to (keep=2).
    assert sorted(p.name for p in folder.iterdir()) == ["epoch-0000", "epoch-0001", "latest.json"]


def test_checkpoint_from_a_different_model_names_the_keys(tmp_path):
    ckpt.save_weights_atomic(nn.Linear(3, 2), tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match=r"weight: checkpoint \(2, 3\) vs model \(5, 3\)"):
        ckpt.load_weights(nn.Linear(3, 5), tmp_path / "w.safetensors")
    other = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(CheckpointError, match="missing from the checkpoint: 0.bias"):
        ckpt.load_weights(other, tmp_path / "w.safetensors")


def test_damaged_weights_file_is_a_clear_error(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="damaged"):
        ckpt.load_weights(nn.Linear(3, 2), tmp_path / "w.safetensors")


def test_state_is_read_back_without_unpickling_code(tmp_path):
    import pickle

    folder = tmp_path / "ck"
    ckpt.save_checkpoint(folder, 0, _module(1.0), {"epoch": 0})
    evil = folder / "epoch-0000" / "state.pt"

    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(evil, "wb") as f:
        pickle.dump({"x": Boom()}, f)
    with pytest.raises(CheckpointError):
        ckpt.load_checkpoint(folder / "epoch-0000", _module(0.0))


def test_streams_split_global_batches_across_ranks():
    split = _data(n=48)
    one = Stream(split, 16, seed=1)
    ranks = [Stream(split, 16, seed=1, rank=r, world_size=2) for r in range(2)]
    for step in range(6):  # two passes
        x, _ = one.batch(step)
        parts = [s.batch(step)[0] for s in ranks]
        assert torch.equal(torch.cat(parts).sort(0).values, x.sort(0).values)
