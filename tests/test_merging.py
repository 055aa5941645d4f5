"""Dataset Merging building blocks: label maps, leakage detection, mixing policies, MixedStream."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tlroutes.data.builtin import load_builtin
from tlroutes.data.merging import find_duplicates, leakage_report, load_label_map
from tlroutes.data.mixing import MixedStream, mixing_probabilities
from tlroutes.errors import ConfigError, DataError
from tlroutes.problem import Domain, Problem, Split, Task

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------- label maps
def labelled(name: str, labels: tuple[str, ...], n: int = 40, seed: int = 0) -> Problem:
    """A small classification problem whose input's first value is its original label."""
    g = torch.Generator().manual_seed(seed)

    def split(m: int) -> Split:
        y = torch.arange(m) % len(labels)
        x = torch.randn(m, 3, generator=g)
        x[:, 0] = y.float()
        return Split(x, y)

    domain = Domain("toy", "tabular", (3,))
    task = Task("classification", labels=labels, name=name)
    return Problem(name, task, domain, split(n), split(n // 2), split(n // 2)).validate()


MAP_ROWS = [
    ("dataset", "label", "merged", "note"),
    ("web", "tabby", "cat", "many-to-one"),
    ("web", "siamese", "cat", ""),
    ("web", "puppy", "dog", ""),
    ("web", "blurry", "DROP", "explicitly dropped"),
    ("lab", "Dog", "dog", ""),
    ("lab", "Cat", "cat", ""),
    ("lab", "Bird", "bird", ""),
]
WEB = ("tabby", "siamese", "puppy", "blurry")
LAB = ("Cat", "Dog", "Bird")


def write_map(path, rows, sep=","):
    path.write_text("\n".join(sep.join(row) for row in rows) + "\n")
    return path


def test_label_map_many_to_one_and_drop(tmp_path):
    label_map = load_label_map(write_map(tmp_path / "map.csv", MAP_ROWS))
    assert label_map.labels == ("cat", "dog", "bird")  # order of first appearance
    web = labelled("web", WEB)
    lab = labelled("lab", LAB, seed=1)
    merged = label_map.apply_all({"web": web, "lab": lab})
    assert merged["web"].task == merged["lab"].task == label_map.task
    expected = {"web": {0: 0, 1: 0, 2: 1}, "lab": {0: 0, 1: 1, 2: 2}}  # old index -> new index
    for name, original in (("web", web), ("lab", lab)):
        for split_name, split in merged[name].splits().items():
            old = split.x[:, 0].long()  # the original label travels in the input
            new = torch.tensor([expected[name][int(v)] for v in old])
            assert torch.equal(split.y, new)
            kept = (original.splits()[split_name].y != 3).sum() if name == "web" else None
            if name == "web":
                assert len(split) == int(kept) and not bool((old == 3).any())  # 'blurry' dropped
            else:
                assert len(split) == len(original.splits()[split_name])
        merged[name].validate()
    assert merged["web"].meta["label_map"]["dropped"] == {"train": 10, "val": 5, "test": 5}
    # the mapped splits can be concatenated into one dataset
    both = torch.cat([merged["web"].train.y, merged["lab"].train.y])
    assert set(both.tolist()) == {0, 1, 2}


@pytest.mark.parametrize("suffix,sep", [(".tsv", "\t"), (".txt", "\t"), ("", ";"), (".map", ",")])
def test_label_map_tsv_and_sniffed(tmp_path, suffix, sep):
    rows = [MAP_ROWS[0], ("# a comment line",), *MAP_ROWS[1:], ()]
    path = write_map(tmp_path / f"map{suffix}", rows, sep)
    label_map = load_label_map(path)
    assert label_map.targets("web") == {
        "tabby": "cat",
        "siamese": "cat",
        "puppy": "dog",
        "blurry": None,
    }


def test_unmapped_label_is_an_error_naming_it(tmp_path):
    path = write_map(tmp_path / "map.csv", [r for r in MAP_ROWS if r[1] != "puppy"])
    label_map = load_label_map(path)
    with pytest.raises(DataError) as err:
        label_map.apply("web", labelled("web", WEB))
    message = str(err.value)
    assert "'puppy'" in message and "'web'" in message and str(path) in message
    assert "DROP" in message and "Add a row" in message


def test_label_map_file_validation(tmp_path):
    conflict = write_map(tmp_path / "c.csv", [*MAP_ROWS, ("web", "tabby", "dog", "")])
    with pytest.raises(DataError, match=r"mapped twice.*line 2.*line 9"):
        load_label_map(conflict)
    same = write_map(tmp_path / "s.csv", [*MAP_ROWS, ("web", "tabby", "cat", "")])
    assert load_label_map(same).targets("web")["tabby"] == "cat"  # identical repeat is fine

    with pytest.raises(DataError, match="dataset 'web' is unknown.*Did you mean 'wed'"):
        load_label_map(write_map(tmp_path / "u.csv", MAP_ROWS), datasets=["wed", "lab"])
    label_map = load_label_map(tmp_path / "u.csv", datasets=["web", "lab"])
    with pytest.raises(DataError, match="does not appear in label map"):
        label_map.apply("webb", labelled("web", WEB))
    with pytest.raises(DataError, match="not among the datasets being merged"):
        label_map.apply_all({"web": labelled("web", WEB)})

    with pytest.raises(DataError, match="header"):
        load_label_map(write_map(tmp_path / "h.csv", MAP_ROWS[1:]))
    with pytest.raises(DataError, match="DROP"):
        load_label_map(write_map(tmp_path / "e.csv", [*MAP_ROWS, ("lab", "Fish", "", "")]))
    with pytest.raises(DataError, match="does not exist"):
        load_label_map(tmp_path / "missing.csv")


# ---------------------------------------------------------------------------------- leakage
@pytest.fixture(scope="module")
def two_digit_datasets():
    """Two clean 'datasets' with disjoint samples: digits 0, 2, 3, 4 and digits 5-9.

    Digit 1 is left out: the digits data hold one genuine near-duplicate pair, two 1s with
    correlation 0.994, which the report rightly finds when both land in different splits."""
    a = load_builtin("digits", classes=[0, 2, 3, 4], seed=1)
    b = load_builtin("digits", classes=[5, 6, 7, 8, 9], seed=1)
    return a, b


def plant(a: Problem, b: Problem):
    """Copy 5 test samples of b into a's train split as they are, 4 with small noise and 2 with a
    brightness / contrast change. Returns the new problem and the expected (train, test) pairs."""
    g = torch.Generator().manual_seed(7)
    source = torch.tensor([0, 3, 8, 13, 21, 34, 55, 89, 144, 150, 160])
    copies = b.test.x[source].clone()
    copies[5:9] += 0.01 * torch.randn(copies[5:9].shape, generator=g)
    copies[9:] = copies[9:] * 0.8 + 0.1
    n = len(a.train)
    train = Split(torch.cat([a.train.x, copies]), torch.cat([a.train.y, a.train.y[: len(copies)]]))
    planted = {(n + k, int(j)) for k, j in enumerate(source)}
    exact = {(n + k, int(j)) for k, j in enumerate(source[:5])}
    return Problem(a.name, a.task, a.domain, train, a.val, a.test), planted, exact


def test_leakage_finds_planted_exact_and_near(two_digit_datasets):
    a, b = two_digit_datasets
    leaky, planted, exact = plant(a, b)
    report = leakage_report({"A": leaky, "B": b})
    hit = next(c for c in report.cross if (c.train, c.other, c.split) == ("A", "B", "test"))
    pairs = {tuple(p) for p in hit.duplicates.pairs.tolist()}
    assert pairs == planted
    found_exact = {
        tuple(p)
        for p, e in zip(hit.duplicates.pairs.tolist(), hit.duplicates.exact, strict=True)
        if e
    }
    assert found_exact == exact
    assert hit.duplicates.n_exact == 5 and hit.duplicates.n_near == 6
    # nothing else leaks: the other checks, and the within-dataset ones, are clean
    assert all(len(c.duplicates) == 0 for c in report.checks if c is not hit)
    assert len(report.within) == 4 and len(report.cross) == 4
    assert report.leaking_train("A").tolist() == sorted(i for i, _ in planted)
    assert report.leaking_train("B").numel() == 0
    data = json.loads(report.to_json())
    assert data["leaking_train"]["A"] == {"cross": 11, "within": 0, "all": 11}
    text = report.summary()
    assert "A.train vs B.test: 5 exact, 6 near pair(s); 11 train sample(s) leak" in text
    assert "B.train vs A.val: clean" in text


def test_leakage_clean_data_has_none(two_digit_datasets):
    a, b = two_digit_datasets
    report = leakage_report({"A": a, "B": b})
    assert not report.has_leaks
    assert all(c.duplicates is not None for c in report.checks)


def test_leakage_drop_removes_leaking_train_samples(two_digit_datasets):
    a, b = two_digit_datasets
    leaky, planted, _ = plant(a, b)
    report = leakage_report({"A": leaky, "B": b}, drop=True)
    cleaned = report.cleaned
    assert len(cleaned["A"].train) == len(leaky.train) - len(planted) == len(a.train)
    assert torch.equal(cleaned["A"].train.x, a.train.x)  # exactly the planted ones went
    assert cleaned["A"].test is leaky.test and cleaned["B"] is b
    assert cleaned["A"].meta["leakage_dropped"] == len(planted)
    assert not leakage_report(cleaned).has_leaks


def test_within_dataset_leak_is_reported_separately(two_digit_datasets):
    a, _ = two_digit_datasets
    train = Split(torch.cat([a.train.x, a.val.x[:3]]), torch.cat([a.train.y, a.val.y[:3]]))
    leaky = Problem("A", a.task, a.domain, train, a.val, a.test)
    report = leakage_report({"A": leaky})
    assert report.cross == []
    assert report.leaking_train("A", within=False).numel() == 0
    assert report.leaking_train("A", cross=False).numel() == 3
    assert len(leakage_report({"A": leaky}, within=False).checks) == 0


def test_find_duplicates_direct():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 2, 16, generator=g)
    b = torch.randn(200, 2, 16, generator=g)
    b[10] = a[4]
    b[20] = a[7] + 1e-3 * torch.randn(2, 16, generator=g)
    dup = find_duplicates(a, b)
    assert dup.pairs.tolist() == [[4, 10], [7, 20]] and dup.exact.tolist() == [True, False]
    assert dup.similarity[1] > 0.999
    only_exact = find_duplicates(a, b, threshold=None)
    assert only_exact.pairs.tolist() == [[4, 10]]
    # float64 copy of a float32 sample is an exact duplicate (rounded to 4 decimals)
    assert find_duplicates(a.double(), b, threshold=None).pairs.tolist() == [[4, 10]]
    tokens = torch.randint(0, 50, (30, 8), generator=g)
    assert find_duplicates(tokens, tokens[5:6]).pairs.tolist() == [[5, 0]]
    with pytest.raises(DataError, match="per-sample shapes"):
        find_duplicates(a, b[:, :1])
    with pytest.raises(DataError, match="threshold"):
        find_duplicates(a, b, threshold=1.5)


def test_find_duplicates_chunking_matches_one_shot():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(257, 24, generator=g)
    b = torch.cat([a[::3] + 0.05 * torch.randn(86, 24, generator=g), torch.randn(40, 24)])
    whole = find_duplicates(a, b, threshold=0.95)
    chunked = find_duplicates(a, b, threshold=0.95, chunk_elements=500)
    assert len(whole) == 86 and torch.equal(whole.pairs, chunked.pairs)


# ---------------------------------------------------------------------------------- mixing
def close(p, q, tol=1e-9):
    return len(p) == len(q) and all(abs(x - y) <= tol for x, y in zip(p, q, strict=True))


def test_mixing_probability_formulas():
    sizes = [100, 300, 600]
    assert close(mixing_probabilities(sizes, "proportional"), [0.1, 0.3, 0.6])
    assert close(mixing_probabilities(sizes, "balanced"), [1 / 3] * 3)
    assert close(mixing_probabilities(sizes, "temperature", temperature=1), [0.1, 0.3, 0.6])
    roots = [math.sqrt(n) for n in sizes]
    expected = [r / sum(roots) for r in roots]
    assert close(mixing_probabilities(sizes, "temperature", temperature=2), expected)
    assert close(mixing_probabilities(sizes, "temperature", temperature=1e6), [1 / 3] * 3, 1e-5)
    assert close(mixing_probabilities(sizes, "temperature", temperature=math.inf), [1 / 3] * 3)


def test_mixing_cap_redistributes_until_consistent():
    # one round: 0.7 capped at 0.5; the 0.2 excess goes 2:1 to the others
    assert close(
        mixing_probabilities([70, 20, 10], cap=0.5), [0.5, 0.2 + 0.2 * 2 / 3, 0.1 + 0.2 / 3]
    )
    # two rounds: 0.6 -> 0.35 lifts 0.3 to 0.4875 > 0.35, so it is capped too; 0.3 is left
    assert close(mixing_probabilities([60, 30, 10], cap=0.35), [0.35, 0.35, 0.30])
    assert close(mixing_probabilities([60, 30, 10], cap=1 / 3), [1 / 3] * 3)
    assert close(mixing_probabilities([60, 30, 10], cap=0.9), [0.6, 0.3, 0.1])
    capped = mixing_probabilities([1000, 10, 1], "temperature", temperature=3, cap=0.5)
    assert max(capped) <= 0.5 + 1e-12 and abs(sum(capped) - 1) < 1e-12
    with pytest.raises(ConfigError, match="cannot be met"):
        mixing_probabilities([60, 30, 10], cap=0.3)


def test_mixing_argument_errors():
    with pytest.raises(ConfigError, match="Did you mean 'balanced'"):
        mixing_probabilities([1, 2], "balance")
    with pytest.raises(ConfigError, match="needs a temperature"):
        mixing_probabilities([1, 2], "temperature")
    with pytest.raises(ConfigError, match="only used by"):
        mixing_probabilities([1, 2], "balanced", temperature=2)
    with pytest.raises(DataError, match="at least 1"):
        mixing_probabilities([0, 2])


def tagged_splits(sizes=(50, 100, 200)) -> dict[str, Split]:
    """Splits whose x is (source, position) and y the source, so every sample names its origin."""
    out = {}
    for s, n in enumerate(sizes):
        x = torch.stack([torch.full((n,), float(s)), torch.arange(n, dtype=torch.float32)], 1)
        out[f"d{s}"] = Split(x, torch.full((n,), s, dtype=torch.long))
    return out


def test_mixed_stream_frequencies_and_sources():
    splits = tagged_splits()
    stream = MixedStream(splits, 64, policy="temperature", temperature=2.0, seed=3)
    p = mixing_probabilities([50, 100, 200], "temperature", temperature=2.0)
    assert close(list(stream.probabilities), p)
    assert stream.source_names == ("d0", "d1", "d2") and stream.steps_per_pass == 6
    counts = torch.zeros(3)
    seen = torch.zeros(350, dtype=torch.bool)
    for step in range(400):
        x, y = stream.batch(step)
        source = stream.sources(step)
        assert torch.equal(source, y) and torch.equal(x[:, 0].long(), source)
        counts += torch.bincount(source, minlength=3)
        seen[torch.tensor([0, 50, 150])[source] + x[:, 1].long()] = True
    freq = counts / counts.sum()
    assert torch.allclose(freq, torch.tensor(p, dtype=torch.float32), atol=0.015)
    assert bool(seen.all())  # every sample of every source is reachable


def test_mixed_stream_is_stateless_and_seeded():
    one = MixedStream(tagged_splits(), 32, seed=5)
    two = MixedStream(tagged_splits(), 32, seed=5)
    later = [two.batch(s) for s in (90, 17, 3)]
    for s, (x, y) in zip((90, 17, 3), later, strict=True):
        x1, y1 = one.batch(s)
        assert torch.equal(x1, x) and torch.equal(y1, y)
    other = MixedStream(tagged_splits(), 32, seed=6)
    assert not torch.equal(other.batch(17)[0], one.batch(17)[0])
    assert not torch.equal(one.batch(18)[0], one.batch(17)[0])


def test_mixed_stream_rank_slicing():
    whole = MixedStream(tagged_splits(), 30, policy="balanced", seed=2)
    parts = [
        MixedStream(tagged_splits(), 30, policy="balanced", seed=2, rank=r, world_size=3)
        for r in range(3)
    ]
    for step in (0, 7, 123):
        x, y = whole.batch(step)
        for r, part in enumerate(parts):
            xr, yr = part.batch(step)
            assert torch.equal(xr, x[r::3]) and torch.equal(yr, y[r::3])
            assert torch.equal(part.sources(step), whole.sources(step)[r::3])
    # rank set after construction (as the engine does) takes effect
    late = MixedStream(tagged_splits(), 30, policy="balanced", seed=2)
    late.batch(7)
    late.rank, late.world_size = 1, 3
    assert torch.equal(late.batch(7)[0], whole.batch(7)[0][1::3])


def test_mixed_stream_return_sources_and_checks():
    stream = MixedStream(tagged_splits(), 16, probabilities=[0.5, 0.5, 0.0], return_sources=True)
    x, y, source = stream.batch(4)
    assert torch.equal(source, y) and not bool((source == 2).any())
    bad = {
        "a": Split(torch.zeros(4, 2), torch.zeros(4).long()),
        "b": Split(torch.zeros(4, 3), torch.zeros(4).long()),
    }
    with pytest.raises(DataError, match="same shapes"):
        MixedStream(bad)
    with pytest.raises(ConfigError, match="not both"):
        MixedStream(tagged_splits(), probabilities=[0.2, 0.3, 0.5], policy="balanced")
    with pytest.raises(ConfigError, match="sum to 1"):
        MixedStream(tagged_splits(), probabilities=[0.2, 0.3, 0.6])


def test_mixed_stream_from_label_mapped_problems(tmp_path):
    label_map = load_label_map(write_map(tmp_path / "map.csv", MAP_ROWS))
    web, lab = labelled("web", WEB), labelled("lab", LAB, seed=1)
    with pytest.raises(DataError, match="different tasks"):
        MixedStream.from_problems({"web": web, "lab": lab})
    merged = label_map.apply_all({"web": web, "lab": lab})
    stream = MixedStream.from_problems(merged, 8, policy="balanced")
    assert stream.source_names == ("web", "lab") and stream.sizes == (30, 40)
    x, y = stream.batch(0)
    assert x.shape == (8, 3) and int(y.max()) < len(label_map.labels)


class PerSourceStep(torch.nn.Module):
    """Least squares on a mixed stream, logging the loss of each source."""

    def __init__(self, sources: int) -> None:
        super().__init__()
        self.lin, self.sources = torch.nn.Linear(2, 1), sources

    def forward(self, batch):
        x, y, source = batch["train"]
        losses = (self.lin(x).squeeze(1) - y.float()) ** 2
        total = torch.zeros(self.sources).index_add(0, source, losses.detach())
        per_source = total / source.bincount(minlength=self.sources).clamp_min(1)
        return losses.mean(), {f"loss_d{i}": v for i, v in enumerate(per_source)}


def test_mixed_stream_in_the_training_engine(tmp_path):
    from tlroutes.train.engine import Stage, Trainer
    from tlroutes.train.hardware import Hardware

    stream = MixedStream(tagged_splits(), 32, policy="balanced", return_sources=True)
    step = PerSourceStep(3)
    stage = Stage(
        name="mix",
        step=step,
        streams={"train": stream},
        epochs=2,
        validate=lambda: {"score": 0.0},
        monitor="score",
        lr=0.01,
    )
    trainer = Trainer(tmp_path / "run", hardware=Hardware(accelerator="cpu"), progress=False)
    result = trainer.fit(stage)
    assert result.epochs_run == 2
    assert {"train_loss_d0", "train_loss_d1", "train_loss_d2"} <= set(result.history[-1])


def test_a_mixed_stream_reads_lazy_sources_as_it_reads_held_ones():
    """Sources read on demand give the batches the held tensors give (no augmentation)."""
    from tlroutes.data.mixing import MixedStream
    from tlroutes.lazy_inputs import LazyInputs

    class Rows:
        def __init__(self, x):
            self.x = x

        def __len__(self):
            return len(self.x)

        def read(self, i):
            return self.x[i]

    g = torch.Generator().manual_seed(0)
    held = {name: Split(torch.randn(n, 3, generator=g), torch.arange(n) % 2)
            for name, n in (("a", 30), ("b", 50))}
    lazy = {name: Split(LazyInputs(Rows(s.x), sample_shape=(3,)), s.y)
            for name, s in held.items()}
    lazy["a"] = held["a"]  # one held, one lazy
    one, two = MixedStream(held, 16, seed=3), MixedStream(lazy, 16, seed=3)
    assert "lazily" in two.describe() and "in memory" in one.describe()
    for step in (0, 1, 7):
        (xa, ya), (xb, yb) = one.batch(step), two.batch(step)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
