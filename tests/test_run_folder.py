"""A run folder is a small database: locked, written atomically, hashed, read with validation.

Kills are simulated in-process by :func:`killed_at`: ``os.replace`` — the step that makes an
atomic write visible — raises :class:`Killed` (a ``BaseException``, so no ``except Exception``
swallows it) when it would publish the chosen file, after its temporary copy is fully written;
the temporary file is left behind, as a real kill leaves it. The files inside a checkpoint
folder, which is published by one rename, are cut off half-written instead. The real SIGKILL
test is in ``test_resume.py``. Every run is tiny (a few hundred samples, a few epochs, one
thread).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import cli_env, small_run, write_run
from tlroutes.cli import main as cli_main
from tlroutes.errors import CheckpointError, ConfigError, RunFolderError, TLRoutesError
from tlroutes.runfolder import LOCK_FILE, RunLock, atomic_write, register_root
from tlroutes.runner import run
from tlroutes.train import checkpoint as ckpt

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = small_run(source={"n": 150}, target={"n": 90},
                 source_training={"epochs": 2, "batch_size": 16},
                 target_training={"epochs": 4, "batch_size": 16}, baseline=False)
STAGES = ("source", "target")


class Killed(BaseException):
    """A simulated SIGKILL at one write."""


@contextmanager
def killed_at(name: str, nth: int = 1, under: str | None = None) -> Iterator[None]:
    """Kill the run when it publishes the ``nth`` file called ``name`` (below a folder called
    ``under``, when given); the temporary file stays, as after a real kill."""
    real, seen = os.replace, [0]

    def replace(src, dst, *args, **kwargs):
        dst_path = Path(dst)
        if dst_path.name == name and (under is None or under in dst_path.parts):
            seen[0] += 1
            if seen[0] == nth:
                if Path(src).is_file():
                    shutil.copy(src, f"{src}.left")
                raise Killed(str(dst))
        return real(src, dst, *args, **kwargs)

    real_write = ckpt._write_file

    def write_file(path: Path, data: bytes) -> None:
        if path.name == name and (under is None or under in path.parts):
            seen[0] += 1
            if seen[0] == nth:
                real_write(path, data[: len(data) // 2])  # torn: the kill came mid-write
                raise Killed(str(path))
        real_write(path, data)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "replace", replace)
        mp.setattr(ckpt, "_write_file", write_file)
        yield
    assert seen[0] >= nth, f"the run never wrote {name} #{nth}"


def finals(folder: Path) -> dict[str, torch.Tensor]:
    """Every stage's final weights and the run's model."""
    out = {}
    for stage in STAGES:
        for key, value in load_file(folder / "checkpoints" / stage / "final.safetensors").items():
            out[f"{stage}/{key}"] = value
    for key, value in load_file(folder / "model.safetensors").items():
        out[f"model/{key}"] = value
    return out


def assert_same(a: Path, b: Path) -> None:
    wa, wb = finals(a), finals(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert wa[key].equal(wb[key]), f"{key} differs from the run never stopped"
    lines = [r for r in map(_json, (b / "metrics.jsonl").read_text().splitlines())]
    epochs = [(r["stage"], r["epoch"]) for r in lines]
    assert len(epochs) == len(set(epochs)), "metrics.jsonl holds an epoch twice"


def _json(line: str):
    import json

    return json.loads(line)


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    """The reference: the run, never stopped."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("whole") / "run"
    run(SPEC, folder, progress=False)
    torch.set_num_threads(before)
    return folder


@pytest.fixture
def stopped(tmp_path) -> Path:
    """A run killed in the target stage after its epoch 2 was checkpointed (epochs 1 and 2 kept;
    metrics.jsonl has not got epoch 2's line yet)."""
    folder = tmp_path / "run"
    with killed_at("metrics.jsonl", nth=SPEC["source_training"]["epochs"] + 3), \
            pytest.raises(Killed):
        run(SPEC, folder, progress=False)
    kept = sorted(p.name for p in (folder / "checkpoints" / "target").glob("epoch-*"))
    assert kept == ["epoch-0001", "epoch-0002"] and not (folder / "summary.json").exists()
    return folder


@pytest.fixture
def finished(whole, tmp_path) -> Path:
    """A copy of the finished reference run, to damage."""
    folder = tmp_path / "finished"
    shutil.copytree(whole, folder)
    return folder


def flip_byte(path: Path, offset: int = -20) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def cli(capsys, *args: str) -> tuple[int, str]:
    """``tlroutes ARGS`` in this process: the exit status and what went to stderr."""
    capsys.readouterr()
    try:
        cli_main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def assert_one_message(code: int, err: str, *names: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err and err.count("error:") == 1, err
    flat = " ".join(err.split())
    for name in names:
        assert name in flat, f"the message does not name {name}: {err}"


# ------------------------------------------------------------------------------------ 1. the lock
def test_a_held_folder_is_refused_at_once_naming_the_holder(tmp_path):
    folder = tmp_path / "run"
    with RunLock.acquire(folder):
        # Untimed first: importing the route modules is not part of the refusal.
        with pytest.raises(ConfigError):
            run(SPEC, folder, progress=False)
        for resume in (False, True):
            t0 = time.perf_counter()
            with pytest.raises(ConfigError, match=f"process {os.getpid()}") as err:
                run(SPEC, folder, resume=resume, progress=False)
            assert time.perf_counter() - t0 < 1.0, "the refusal must not wait for the holder"
            assert "in use" in str(err.value)
    assert not (folder / "run.yaml").exists(), "a refused run writes nothing"


def test_two_runs_started_together_exactly_one_trains(tmp_path):
    run_file = write_run(tmp_path / "run.yaml", SPEC)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "tlroutes.cli", "run", str(run_file), "--out", str(out),
               "--quiet"]
    procs = [subprocess.Popen(command, env=cli_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "Traceback" not in loser
    # Refused by the lock ("in use"), or, when it came after the winner had finished, by the
    # folder holding a run; either way it trained nothing.
    assert "in use" in loser or "already holds a run" in loser, loser
    lines = [(r["stage"], r["epoch"]) for r in map(_json, (out / "metrics.jsonl").read_text()
                                                   .splitlines())]
    assert len(lines) == len(set(lines)) == 2 + 4


def test_a_lock_left_by_a_killed_process_never_blocks(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from tlroutes.runfolder import RunLock; "
         "RunLock.acquire(sys.argv[1]); print('held', flush=True); time.sleep(600)",
         str(folder)], env=cli_env(), stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(ConfigError, match=f"process {holder.pid}"):
        RunLock.acquire(folder)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (folder / LOCK_FILE).read_text().strip() == str(holder.pid)  # the stale file stays
    with RunLock.acquire(folder) as lock:
        assert lock.held and (folder / LOCK_FILE).read_text().strip() == str(os.getpid())


# ------------------------------------------------------------------ 2. atomic writes and kills
def test_kill_during_the_run_yaml_write_leaves_a_folder_that_starts_again(tmp_path, whole):
    folder = tmp_path / "run"
    with killed_at("run.yaml"), pytest.raises(Killed):
        run(SPEC, folder, progress=False)
    assert not (folder / "run.yaml").exists(), "never an empty or torn run.yaml"
    with pytest.raises(ConfigError, match="Nothing to resume"):
        run(SPEC, folder, resume=True, progress=False)
    run(SPEC, folder, progress=False)  # holds no work yet: a plain start is allowed
    assert_same(whole, folder)


def test_a_resume_reads_run_yaml_and_never_rewrites_it(stopped, whole):
    before = (stopped / "run.yaml").stat()
    run(SPEC, stopped, resume=True, progress=False)
    after = (stopped / "run.yaml").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert_same(whole, stopped)


@pytest.mark.parametrize(("name", "nth", "under"), [
    ("weights.safetensors", 2, "target"),   # inside a checkpoint folder being written
    ("state.pt", 2, "target"),
    ("hashes.json", 2, "target"),
    ("epoch-0001", 1, "target"),            # the checkpoint folder's rename into place
    ("latest.json", 2, "target"),
    ("best.safetensors", 1, "target"),
    ("final.safetensors", 1, "target"),
    ("done.json", 1, "target"),
    ("metrics.jsonl", 3, None),
    ("model.safetensors", 1, None),
    ("summary.json", 1, None),
])
def test_kill_during_each_file_write_then_resume_is_bit_identical(tmp_path, whole, name, nth,
                                                                  under):
    folder = tmp_path / "run"
    with killed_at(name, nth, under), pytest.raises(Killed):
        run(SPEC, folder, progress=False)
    run(SPEC, folder, resume=True, progress=False)
    assert_same(whole, folder)


def test_every_stage_keeps_its_last_two_checkpoints(whole):
    for stage in STAGES:
        kept = sorted(p.name for p in (whole / "checkpoints" / stage).glob("epoch-*"))
        last = SPEC[f"{stage}_training"]["epochs"] - 1
        assert kept == [f"epoch-{last - 1:04d}", f"epoch-{last:04d}"]


def test_atomic_write_keeps_usual_permissions_and_cleans_up_on_failure(tmp_path):
    target = atomic_write(tmp_path / "a.json", "{}")
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()

    def fail(f):
        f.write(b"half")
        raise OSError("disk full (simulated)")

    with pytest.raises(OSError):
        atomic_write(tmp_path / "a.json", fail)
    assert target.read_text() == "{}" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ------------------------------------------------------------------------------- 3. integrity
@pytest.mark.parametrize("file", ["weights.safetensors", "state.pt"])
def test_a_damaged_newest_checkpoint_is_named_and_resume_falls_back(stopped, whole, file):
    damaged = stopped / "checkpoints" / "target" / "epoch-0002" / file
    flip_byte(damaged)
    with pytest.warns(UserWarning, match=f"epoch-0002/{file}.*epoch-0001 instead"):
        run(SPEC, stopped, resume=True, progress=False)
    assert_same(whole, stopped)


def test_no_intact_checkpoint_is_refused_naming_each(stopped, capsys):
    for epoch in ("epoch-0001", "epoch-0002"):
        flip_byte(stopped / "checkpoints" / "target" / epoch / "weights.safetensors")
    with pytest.raises(CheckpointError, match="No intact checkpoint") as err:
        run(SPEC, stopped, resume=True, progress=False)
    assert "epoch-0001" in str(err.value) and "epoch-0002" in str(err.value)
    run_file = write_run(stopped.parent / "run-file.yaml", SPEC)
    code, out = cli(capsys, "run", str(run_file), "--out", str(stopped), "--quiet", "--resume")
    assert_one_message(code, out, "epoch-0001/weights.safetensors", "start a new --out")


def test_a_damaged_final_weights_file_is_named_and_the_stage_finished_again(finished, whole):
    flip_byte(finished / "checkpoints" / "source" / "final.safetensors")
    with pytest.warns(UserWarning, match="source/final.safetensors.*again from its newest"):
        run(SPEC, finished, resume=True, progress=False)
    assert_same(whole, finished)


def test_a_damaged_best_weights_file_is_named(stopped, whole):
    flip_byte(stopped / "checkpoints" / "target" / "best.safetensors")
    try:
        with pytest.warns(UserWarning, match="target/best.safetensors"):
            run(SPEC, stopped, resume=True, progress=False)
    except CheckpointError as exc:  # the best epoch's checkpoint is no longer kept: refused
        assert "best.safetensors" in str(exc) and "start a new --out" in str(exc)
    else:  # rebuilt from the best epoch's checkpoint, which is still kept
        assert_same(whole, stopped)


def test_a_damaged_model_file_is_named(finished):
    flip_byte(finished / "model.safetensors")
    with pytest.raises(ckpt.DamagedCheckpointError, match="model.safetensors are damaged"):
        ckpt.read_weights(finished / "model.safetensors")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_forged_hash_still_never_unpickles(tmp_path, capsys):
    import hashlib
    import json
    import pickle

    folder = tmp_path / "ck"
    ckpt.save_checkpoint(folder, 0, torch.nn.Linear(3, 2), {"epoch": 0})
    evil = folder / "epoch-0000" / "state.pt"

    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))

    evil.write_bytes(pickle.dumps({"x": Boom()}))
    hashes = folder / "epoch-0000" / "hashes.json"
    record = json.loads(hashes.read_text())
    record["state.pt"] = hashlib.sha256(evil.read_bytes()).hexdigest()
    hashes.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="state.pt"):
        ckpt.load_checkpoint(folder / "epoch-0000", torch.nn.Linear(3, 2))
    assert "pwned" not in capsys.readouterr().out


def _npz(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", 60), ("val", 20), ("test", 20)):
        arrays[f"x_{split}"] = rng.normal(size=(n, 12)).astype(np.float32)
        arrays[f"y_{split}"] = rng.integers(0, 3, n)
    np.savez(path, **arrays)
    return path


def test_data_swapped_before_resume_is_refused_naming_the_file(tmp_path):
    source, target = _npz(tmp_path / "source.npz", 0), _npz(tmp_path / "target.npz", 1)
    spec = {
        "route": "task_fine_tuning", "seed": 3,
        "source": {"dataset": str(source), "task": "classification", "domain": "table"},
        "target": {"dataset": str(target), "task": "classification", "domain": "table"},
        "model": {"trunk": "mlp"},
        "source_training": {"epochs": 2, "batch_size": 16},
        "target_training": {"epochs": 2, "batch_size": 16},
        "baseline": False, "hardware": {"accelerator": "cpu"},
    }
    folder = tmp_path / "run"
    with killed_at("latest.json", 1, "source"), pytest.raises(Killed):
        run(spec, folder, progress=False)
    os.utime(source)  # touched, not changed: still the same data
    _npz(target, 2)  # other data under the same name
    with pytest.raises(ConfigError, match="target.npz \\(target.dataset\\) has changed") as err:
        run(spec, folder, resume=True, progress=False)
    assert "sha256" in str(err.value) and "start a new --out" in str(err.value)
    _npz(target, 1)  # the original back: the resume goes on
    run(spec, folder, resume=True, progress=False)


# ----------------------------------------------------------------- 4. damaged side files
RESUME_CASES = {
    "done.json empty": ("checkpoints/source/done.json", b"", "done.json"),
    "done.json invalid": ("checkpoints/source/done.json", b"{\"name\": ", "done.json"),
    "done.json wrong shape": ("checkpoints/source/done.json", b"{\"name\": 3}", "done.json"),
    "metrics.jsonl bad line": ("metrics.jsonl", None, "line 2"),
    "run.yaml not UTF-8": ("run.yaml", b"route: \xff\xfe task\n", "UTF-8"),
    "run.yaml empty": ("run.yaml", b"", "run.yaml"),
    "run.yaml a list": ("run.yaml", b"- 1\n- 2\n", "run.yaml"),
    "run.yaml wrong types": ("run.yaml", b"route: task_fine_tuning\nseeds: many\n", "seeds"),
}


def _damage(folder: Path, file: str, content: bytes | None) -> None:
    path = folder / file
    if content is None:  # a bad line in the middle of metrics.jsonl
        lines = path.read_text().splitlines()
        lines[1] = "{\"stage\": \"source\", \"epo"
        path.write_text("\n".join(lines) + "\n")
    else:
        path.write_bytes(content)


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_a_damaged_side_file_is_one_message_on_resume_and_report(finished, capsys, case):
    file, content, says = RESUME_CASES[case]
    _damage(finished, file, content)
    run_file = write_run(finished.parent / "run-file.yaml", SPEC)
    code, err = cli(capsys, "run", str(run_file), "--out", str(finished), "--quiet", "--resume")
    assert_one_message(code, err, Path(file).name, says, "To go on")
    code, err = cli(capsys, "report", str(finished))
    assert_one_message(code, err, Path(file).name, "To go on")


@pytest.mark.parametrize("content", [b"[]", b"[" * 100_000 + b"]" * 100_000, b"",
                                     b"{\"route\": 3, \"metrics\": \"x\"}"],
                         ids=["a list", "deeply nested", "empty", "wrong types"])
def test_a_damaged_summary_is_one_message_in_report(finished, capsys, content):
    (finished / "summary.json").write_bytes(content)
    code, err = cli(capsys, "report", str(finished))
    assert_one_message(code, err, "summary.json", "--resume")


def test_a_damaged_latest_pointer_is_named_and_resume_goes_on(stopped, whole):
    (stopped / "checkpoints" / "target" / "latest.json").write_text("[]")
    with pytest.warns(UserWarning, match="latest.json is damaged"):
        run(SPEC, stopped, resume=True, progress=False)
    assert_same(whole, stopped)


def test_a_torn_tail_from_an_older_append_is_skipped(tmp_path):
    from tlroutes.runfolder.reads import read_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"stage": "s", "epoch": 0}\n{"stage": "s", "ep')
    assert read_metrics(path) == [{"stage": "s", "epoch": 0}]


def test_a_truncated_features_file_is_one_message_in_report(tmp_path, capsys):
    from tlroutes.config import dump_run
    from tlroutes.runner import resolve

    folder = tmp_path / "da"
    folder.mkdir()
    spec = small_run(route="domain_adaptation",
                     target={"classes": [0, 1, 2, 3, 4], "shift": {"rotation": 30}})
    (folder / "run.yaml").write_text(dump_run(resolve(spec).spec))
    arrays = {"before": np.zeros((40, 4), np.float32), "domain": np.repeat([0, 1], 20)}
    np.savez_compressed(folder / "features.npz", **arrays)
    data = (folder / "features.npz").read_bytes()
    (folder / "features.npz").write_bytes(data[: len(data) // 2])
    code, err = cli(capsys, "report", str(folder))
    assert_one_message(code, err, "features.npz", "--resume")


# --------------------------------------------------------------------------- 5. symlinks
def test_a_planted_symlink_is_never_written_through(finished, tmp_path, capsys):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    (finished / "report.html").unlink()
    (finished / "report.html").symlink_to(outside)
    code, err = cli(capsys, "report", str(finished))
    assert_one_message(code, err, "report.html", "symbolic link")
    assert outside.read_text() == "keep me"


@pytest.mark.parametrize("planted", ["metrics.jsonl", "checkpoints/target"])
def test_a_planted_symlink_stops_a_resume(stopped, tmp_path, planted):
    outside = tmp_path / "outside"
    path = stopped / planted
    if path.is_dir():
        shutil.copytree(path, outside)
        shutil.rmtree(path)
    else:
        outside.write_bytes(path.read_bytes())
        path.unlink()
    before = sorted(str(p.relative_to(outside)) for p in outside.rglob("*")) \
        if outside.is_dir() else outside.read_bytes()
    path.symlink_to(outside)
    with pytest.raises(RunFolderError, match="symbolic link"):
        run(SPEC, stopped, resume=True, progress=False)
    after = sorted(str(p.relative_to(outside)) for p in outside.rglob("*")) \
        if outside.is_dir() else outside.read_bytes()
    assert before == after, "nothing outside the run folder may change"


def test_a_symlinked_parent_below_the_root_is_refused(tmp_path):
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / "sub").symlink_to(elsewhere)
    register_root(root)
    with pytest.raises(RunFolderError, match="sub is a symbolic link"):
        atomic_write(root / "sub" / "deeper" / "x.json", "{}")
    assert not any(elsewhere.iterdir())


def test_errors_of_the_run_folder_are_user_errors():
    assert issubclass(RunFolderError, TLRoutesError)
    assert issubclass(ckpt.DamagedCheckpointError, TLRoutesError)


def test_keep_checkpoints_must_be_positive(tmp_path):
    from tlroutes.train.engine import Trainer

    with pytest.raises(ConfigError, match="keep_checkpoints"):
        Trainer(tmp_path, keep_checkpoints=0, progress=False)


def test_a_planted_seed_folder_link_is_refused(tmp_path):
    root, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    elsewhere.mkdir()
    root.mkdir()
    (root / "seed-3").symlink_to(elsewhere)
    register_root(root)
    register_root(root / "seed-3")  # a seed's Trainer registers its folder too
    with pytest.raises(RunFolderError, match="seed-3 is a symbolic link"):
        atomic_write(root / "seed-3" / "metrics.jsonl", "")
    assert not any(elsewhere.iterdir())


def test_a_damaged_inputs_fingerprint_is_one_message(finished, capsys):
    (finished / "inputs.json").write_text('{"inputs": 3}')
    run_file = write_run(finished.parent / "run-file.yaml", SPEC)
    code, err = cli(capsys, "run", str(run_file), "--out", str(finished), "--quiet", "--resume")
    assert_one_message(code, err, "inputs.json", "To go on")
