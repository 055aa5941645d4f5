"""Inputs that could exhaust the machine are refused at once, with the reason (issue 13, item 5).

Every refusal here is a :class:`~tlroutes.errors.TLRoutesError` raised before anything is
allocated or trained; each test also bounds the time it takes.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import small_run
from tlroutes import config
from tlroutes.backbones.registry import check_model_args, create_trunk
from tlroutes.config import DataSpec, load_run_file, parse_run, parse_yaml
from tlroutes.data.builtin import load_builtin
from tlroutes.data.load import load_problem
from tlroutes.errors import MAX_ECHO, ConfigError, DataError, shorten
from tlroutes.runner import resolve

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# ----------------------------------------------------------------------------- YAML


def _laughs(levels: int = 9) -> str:
    """The "billion laughs": each level nine aliases of the one below."""
    lines = ["route: task_fine_tuning", 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_nested_aliases_are_refused_in_milliseconds(tmp_path):
    path = tmp_path / "laughs.yaml"
    path.write_text(_laughs())
    assert path.stat().st_size < 700  # the audit's file was 619 bytes
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"aliases .* expand it to more than"):
        load_run_file(path)
    assert time.perf_counter() - start < 0.5


def test_a_few_aliases_still_read():
    text = ("route: task_fine_tuning\nsource_training: &t {epochs: 2, lr: 0.01}\n"
            "target_training: *t\n")
    spec = parse_run(parse_yaml(text))
    assert spec.target_training.epochs == spec.source_training.epochs == 2


@pytest.mark.parametrize("text, match", [
    ("a: &a [*a]\n", "refers to the block that contains it"),
    ("[" * 5000 + "]" * 5000, "nest"),
    ("a: [1, 2\n", "not valid YAML"),
])
def test_cyclic_deep_or_broken_yaml_is_one_message(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_yaml(text)


def test_large_and_non_utf8_files_are_refused(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("route: task_fine_tuning\n#" + "x" * config.MAX_RUN_FILE_BYTES)
    with pytest.raises(ConfigError, match="at most 1,048,576 bytes"):
        load_run_file(big)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"route: caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_run_file(latin)


# ----------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("override, match", [
    ({"hardware": {"threads": 1_000_000_000_000}}, r"hardware.threads.*CPU core"),
    ({"source_training": {"batch_size": 1_000_000_000_000}}, r"batch_size.*memory"),
    ({"source_training": {"batch_size": 10**30}}, r"batch_size"),
    ({"source_training": {"epochs": 10**12}}, r"source_training.epochs"),
    ({"source_training": {"lr": float("nan")}}, r"source_training.lr.*finite"),
    ({"target_training": {"grad_clip": float("inf")}}, r"grad_clip"),
    ({"target": {"canvas": 1_000_000}}, r"target.canvas.*4096"),
    ({"target": {"n": 10**15}}, r"target.n"),
    ({"target": {"shift": {"rotation": float("nan")}}}, r"shift.rotation"),
    ({"seed": -1}, r"'seed'"),
    ({"seed": 2**64}, r"'seed'"),
    ({"hardware": {"devices": 10**9}}, r"hardware.devices"),
])
def test_numbers_are_bounded_with_the_reason(override, match):
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=match):
        parse_run(small_run(**override))
    assert time.perf_counter() - start < 1


def test_batch_size_message_names_the_memory():
    with pytest.raises(ConfigError) as err:
        parse_run(small_run(source_training={"batch_size": 1_000_000_000_000}))
    assert "needs about" in str(err.value) and "available" in str(err.value)


def test_canvas_against_memory_before_allocating():
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"canvas: 4096 needs about .* samples"):
        load_builtin("digits", canvas=4096)
    assert time.perf_counter() - start < 2


def test_mixed_batch_against_memory(monkeypatch):
    from tlroutes.data.mixing import MixedStream

    problem = load_builtin("digits", n=60)
    monkeypatch.setattr(config, "machine_memory", lambda: 10_000_000)
    with pytest.raises(ConfigError, match=r"batch_size: 1000000 needs about"):
        MixedStream({"a": problem.train, "b": problem.train}, batch_size=1_000_000)


# ----------------------------------------------------------------------------- trunk_args


@pytest.mark.parametrize("trunk, args, match", [
    ("mlp", {"depth": 2.5}, r"argument 'depth' takes int .*got 2.5 \(float\)"),
    ("transformer", {"dim": 1e308}, r"argument 'dim' takes int .*1e\+308"),
    ("transformer", {"dim": "big"}, r"argument 'dim' takes int .*'big' \(str\)"),
    ("mlp", {"width": True}, r"argument 'width' takes int"),
    ("mlp", {"width": 10**12}, r"'width' takes int, integers at most 16,777,216"),
    ("mlp", {"dropout": float("nan")}, r"'dropout' takes float"),
    ("mlp", {"dropout": 2.0}, r"cannot be built with .*dropout"),
    ("transformer", {"dim": 8192, "depth": 400}, r"needs about .* parameters"),
    ("cnn2d", {"chanels": [8]}, r"Did you mean 'channels'"),
])
def test_trunk_args_are_checked_by_name_type_and_size(trunk, args, match):
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=match):
        check_model_args(trunk, args)
        create_trunk(trunk, **args)
    assert time.perf_counter() - start < 2


def test_good_trunk_args_pass_and_yaml_lists_fit_tuples():
    check_model_args("cnn2d", {"channels": [8, 16], "dropout": 0.1})
    assert create_trunk("mlp", width=16, depth=1).out_dim == 16


def test_trunk_args_are_checked_when_the_run_resolves():
    with pytest.raises(ConfigError, match="argument 'depth' takes int"):
        resolve(small_run(model={"trunk": "mlp", "trunk_args": {"depth": 2.5}}))


# ----------------------------------------------------------------------------- long values


def test_shorten_cuts_a_long_value_and_says_how_long():
    text = shorten("x" * 10_000)
    assert len(text) < MAX_ECHO + 40 and "10,000 characters" in text
    assert len(shorten(list(range(100_000)))) <= MAX_ECHO + 1


@pytest.mark.parametrize("override", [
    {"route": "r" * 10_000},
    {"source_training": {"epochs": "e" * 10_000}},
    {"k" * 10_000: 1},
    {"model": {"trunk": "t" * 10_000}},
])
def test_a_long_value_is_never_echoed_in_full(override):
    with pytest.raises(ConfigError) as err:
        resolve(small_run(**override))
    assert len(str(err.value)) < 2000 and "10,000 characters" in str(err.value)


# ----------------------------------------------------------------------------- ignored blocks


def test_a_block_the_route_ignores_is_refused_with_the_route_name():
    with pytest.raises(ConfigError, match=r"Task Fine-Tuning does not read .*'training:'"):
        resolve(small_run(training={"epochs": 3}))
    parallel = yaml.safe_load((EXAMPLES / "parallel_training.yaml").read_text())
    parallel["model"] = {"trunk": "mlp"}
    with pytest.raises(ConfigError, match=r"Parallel Training does not read .*'model:'"):
        resolve(parallel)


def test_a_saved_run_yaml_still_resolves():
    """run.yaml writes every block out with its defaults; reading it back must still work."""
    first = resolve(EXAMPLES / "task_fine_tuning.yaml").spec
    again = resolve(yaml.safe_load(config.dump_run(first)))
    assert again.spec == first


def test_every_built_in_route_declares_its_blocks():
    from tlroutes.matrix import Route
    from tlroutes.routes.registry import get_route

    for route in Route:  # a plug-in may leave RUN_FILE_BLOCKS out (then nothing is checked)
        blocks = get_route(route).RUN_FILE_BLOCKS
        assert isinstance(blocks, frozenset)
        assert blocks <= set(config.RunSpec.model_fields) - config.COMMON_BLOCKS


# ----------------------------------------------------------------------------- labels


def _npz(path, **changes):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 20), ("val", 8), ("test", 8)):
        arrays[f"x_{split}"] = rng.normal(size=(n, 5)).astype("float32")
        arrays[f"y_{split}"] = rng.integers(0, 3, size=n)
    arrays.update(changes)
    np.savez(path, **arrays)
    return path


def load_npz(path, **fields):
    """An ``.npz`` archive as a run file's ``dataset:`` loads it."""
    return load_problem(DataSpec(dataset=str(path), **fields), 0, "data")


def test_float_labels_must_be_whole_class_indices(tmp_path):
    whole = np.array([0, 1, 2, 0, 1, 2, 0, 1], dtype="float64")
    # float targets are never read as classes without being told
    with pytest.raises(DataError, match="set `task: classification` or `task: regression`"):
        load_npz(_npz(tmp_path / "a.npz", y_val=whole))
    loaded = load_npz(_npz(tmp_path / "a.npz", y_val=whole), task="classification")
    assert loaded.val.y.dtype.is_floating_point is False
    with pytest.raises(DataError, match=r"1 class label\(s\) are not whole numbers \(e.g. 2.7\)"):
        load_npz(_npz(tmp_path / "b.npz", y_val=np.array([0, 1, 2.7, 0, 1, 2, 0, 1])),
                 task="classification")


def test_a_nan_label_is_named(tmp_path):
    y = np.array([0, 1, np.nan, 0, 1, 2, 0, 1])
    with pytest.raises(DataError, match=r"1 label\(s\) are missing \(NaN, None or infinite\), "
                                        r"first at row\(s\) 30"):
        load_npz(_npz(tmp_path / "d.npz", y_test=y), task="classification")


def test_complex_and_text_inputs_are_refused(tmp_path):
    x = np.zeros((8, 5), dtype="complex64")
    with pytest.raises(DataError, match="x_val holds complex numbers"):
        load_npz(_npz(tmp_path / "c.npz", x_val=x))
    # string labels are class names, but not beside class ids in another split
    with pytest.raises(DataError, match=r"labels mix types — y_train holds text \(<U1\), "
                                        r"y_val holds numbers"):
        load_npz(_npz(tmp_path / "s.npz", y_train=np.array(list("ab" * 10))))
