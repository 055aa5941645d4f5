"""Image folders and image tables as problems: the same digits as an ``.npz`` archive and as PNG
files give the same problem (and, when the archive holds exactly the decoded images, the same
trained weights); every bad input is one clear message."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.conftest import cli
from tlroutes.config import parse_run
from tlroutes.data.digit_images import digit_arrays, write_digit_images
from tlroutes.data.load import load_problem
from tlroutes.errors import DataError
from tlroutes.runner import run

N = 200


def data_block(dataset: Path | str, **extra) -> dict:
    return {"dataset": str(dataset), **extra}


def load(dataset: Path | str, trunk: str = "cnn2d", **extra):
    spec = parse_run({"route": "task_fine_tuning", "model": {"trunk": trunk},
                      "target": data_block(dataset, **extra)})
    return load_problem(spec.target, 0, "target")


def folder_order(root: Path) -> list[int]:
    """The digits' original indices in the order the folder lists them (class, then name)."""
    return [int(p.stem) for c in sorted(root.iterdir()) if c.is_dir()
            for p in sorted(c.glob("*.png"))]


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    return write_digit_images(tmp_path_factory.mktemp("img") / "digit_images", n=N, table=True)


def test_an_image_folder_is_a_lazy_problem(digits):
    problem = load(digits)
    assert problem.task.labels == tuple(str(d) for d in range(10))
    assert problem.domain.input_shape == (1, 32, 32) and problem.domain.modality == "image"
    assert all(split.is_lazy for split in problem.splits().values())
    assert sum(len(s) for s in problem.splits().values()) == N
    batch = problem.train.x[0:8]
    assert batch.shape == (8, 1, 32, 32) and batch.min() >= 0 and batch.max() <= 1


def test_npz_and_folder_give_the_same_problem(digits, tmp_path):
    order = folder_order(digits)
    images, labels = digit_arrays(n=N, size=32)
    np.savez(tmp_path / "digits.npz", x=images[order], y=labels[order])
    from_npz, from_folder = load(tmp_path / "digits.npz"), load(digits)
    assert from_npz.task.labels == from_folder.task.labels
    # PNG stores round(255 v): at most half a grey level off, 0.5 / 255 (no normalisation here:
    # std 1; with a std the bound is 0.5 / 255 / std). The eval transform does not resize, so
    # nothing else moves a value.
    tolerance = 0.5 / 255 + 1e-6
    for name, split in from_folder.splits().items():
        other = from_npz.splits()[name]
        assert torch.equal(split.y, other.y), name
        assert (split.x.materialize() - other.x).abs().max() <= tolerance, name


def test_the_same_decoded_images_train_the_same_weights(digits, tmp_path):
    order = folder_order(digits)
    decoded = np.stack([np.asarray(Image.open(p)) for c in sorted(digits.iterdir()) if c.is_dir()
                        for p in sorted(c.glob("*.png"))])
    x = (torch.as_tensor(decoded, dtype=torch.float32)[:, None] / 255).numpy()
    _, labels = digit_arrays(n=N, size=32)
    np.savez(tmp_path / "decoded.npz", x=x, y=labels[order])
    weights = []
    for dataset in (tmp_path / "decoded.npz", digits):
        spec = {"route": "task_fine_tuning", "seed": 3, "baseline": False,
                "model": {"trunk": "cnn2d", "trunk_args": {"channels": [8, 8]}},
                "source": data_block(dataset, classes=[0, 1, 2, 3, 4], domain="d"),
                "target": data_block(dataset, classes=[5, 6, 7, 8, 9], domain="d"),
                "source_training": {"epochs": 1, "batch_size": 16},
                "target_training": {"epochs": 1, "batch_size": 16}}
        out = tmp_path / f"run-{Path(dataset).stem}"
        run(spec, out, progress=False)
        weights.append(load_file(next(out.rglob("target/final.safetensors"))))
    assert weights[0].keys() == weights[1].keys()
    for key, value in weights[0].items():
        assert torch.allclose(value, weights[1][key], rtol=0, atol=1e-6), key


def test_an_image_table_with_a_split_column(digits):
    problem = load(digits / "labels.csv")
    sizes = {name: len(split) for name, split in problem.splits().items()}
    assert sizes == {"train": 120, "val": 40, "test": 40}
    assert problem.meta["split_from"] == "column"


def test_n_classes_and_split_work_on_folders(digits):
    problem = load(digits, n=40, classes=[1, 3, 5], split=[0.5, 0.25, 0.25])
    assert problem.task.labels == ("1", "3", "5")
    assert sum(len(s) for s in problem.splits().values()) == 40
    assert 18 <= len(problem.train) <= 22  # half, up to per-class rounding


def test_a_pretrained_trunk_gets_its_size_and_statistics(digits):
    with pytest.warns(UserWarning, match=r"200 of 200 images are converted to RGB"):
        problem = load(digits, trunk="efficientnet_lite0", n=40, classes=[0, 1])
    assert problem.domain.input_shape == (3, 224, 224)
    assert problem.domain.normalization is not None
    assert problem.train.x[0:2].shape == (2, 3, 224, 224)


def test_augmentation_reads_training_batches_only(digits):
    problem = load(digits, transforms={"train": ["horizontal_flip", {"rotation": {
        "degrees": 30}}]})
    x = problem.train.x
    assert not torch.equal(x.load([0, 1, 2], augment_seed=1), x.load([0, 1, 2], augment_seed=2))
    assert torch.equal(x.load([0, 1, 2], augment_seed=1), x.load([0, 1, 2], augment_seed=1))
    assert torch.equal(x[0:3], x[0:3])


# -- bad input -----------------------------------------------------------------------------------
def small_folder(root: Path, per_class: int = 4, size: tuple[int, int] = (16, 16),
                 mode: str = "L") -> Path:
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = size if mode == "L" else (*size, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(
                root / label / f"{i}.png")
    return root


def test_a_corrupt_image_is_named_or_skipped(tmp_path):
    root = small_folder(tmp_path / "pets")
    (root / "cat" / "broken.png").write_bytes(b"not an image at all")
    good = (root / "dog" / "0.png").read_bytes()
    (root / "dog" / "truncated.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"2 of 10 image file\(s\) cannot be read .*broken\.png"
                       r".*truncated\.png.*on_bad_file: skip"):
        load(root)
    with pytest.warns(UserWarning, match=r"left out 2 of 10 .*broken\.png.*truncated\.png"):
        problem = load(root, on_bad_file="skip")
    assert sum(len(s) for s in problem.splits().values()) == 8
    assert len(problem.meta["bad_files"]) == 2


def test_an_image_damaged_after_loading_is_named_when_read(tmp_path):
    root = small_folder(tmp_path / "pets")
    problem = load(root)
    for path in root.rglob("*.png"):
        data = path.read_bytes()
        path.write_bytes(data[:60])  # the header survives, the pixels do not
    with pytest.raises(DataError, match=r"Image .*\.png cannot be decoded"):
        problem.train.x[0:2]


def test_an_empty_folder_or_class_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is empty; it needs one subfolder per class"):
        load(tmp_path / "empty")
    root = small_folder(tmp_path / "pets")
    (root / "bird").mkdir()
    with pytest.raises(DataError, match=r"Class folder .*bird holds no images"):
        load(root)
    loose = tmp_path / "loose"
    loose.mkdir()
    Image.new("L", (4, 4)).save(loose / "a.png")
    with pytest.raises(DataError, match="directly and no class subfolders, so it has no labels"):
        load(loose)


def test_mixed_sizes_and_modes_are_converted_and_said_once(tmp_path):
    root = small_folder(tmp_path / "pets", per_class=5, size=(16, 16), mode="RGB")
    Image.new("L", (20, 12)).save(root / "cat" / "grey.png")
    Image.new("RGBA", (16, 16)).save(root / "dog" / "alpha.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        problem = load(root)
    said = [str(w.message) for w in caught]
    assert sum("converted to RGB" in m for m in said) == 1, said
    assert sum("different sizes" in m for m in said) == 1, said
    assert "2 of 12 images are converted to RGB" in " ".join(said)
    assert problem.domain.input_shape == (3, 16, 16)
    every = torch.cat([s.x.materialize() for s in problem.splits().values()])
    assert every.shape == (12, 3, 16, 16)


def test_a_split_without_a_class_is_a_warning(tmp_path):
    root = small_folder(tmp_path / "pets")
    splits = {"cat": ["train", "train", "val", "train"], "dog": ["train", "train", "val", "test"]}
    rows = [f"{c}/{i}.png,{c},{s}" for c, names in splits.items() for i, s in enumerate(names)]
    (root / "list.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    with pytest.warns(UserWarning, match=r"the test split has no sample of class\(es\) \['cat'\]"):
        load(root / "list.csv")


def test_labels_outside_a_declared_label_list(tmp_path):
    root = small_folder(tmp_path / "pets")
    with pytest.raises(DataError, match=r"not in the declared label list.*'dog'"):
        load(root, labels=["cat", "cow"])
    problem = load(root, labels=["dog", "cat", "cow"])
    assert problem.task.labels == ("dog", "cat", "cow")


def test_a_table_names_its_missing_files_and_columns(tmp_path, monkeypatch):
    root = small_folder(tmp_path / "pets")
    (root / "list.csv").write_text("path,label\ncat/0.png,cat\ncat/9.png,cat\ndog/0.png,dog\n")
    # A relative table path keeps the echoed image path under the message's 80-character cut,
    # whatever the length of the temporary folder (pytest-xdist workers add a level to it).
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"list\.csv line 3 \(.*cat/9\.png\): no such file"):
        load(Path("pets") / "list.csv")
    (root / "l2.csv").write_text("path,lable\ncat/0.png,cat\n")
    with pytest.raises(DataError, match=r"no column 'label' \(label\)\. Did you mean 'lable'"):
        load(root / "l2.csv", label="label")


@pytest.mark.slow
def test_the_image_folder_example_runs_end_to_end(tmp_path):
    example = Path(__file__).resolve().parents[1] / "examples" / \
        "image_folder_task_fine_tuning.yaml"
    write_digit_images(tmp_path / "data" / "digit_images", n=300)
    out = tmp_path / "out"
    proc = cli("run", str(example), "--out", str(out), "--quiet", check=True, cwd=tmp_path)
    assert "Task Fine-Tuning" in proc.stdout
    assert (out / "report.html").is_file()
    assert list((out / "data").glob("*.splits.json"))  # the splits are kept for a resume


def test_a_missing_folder_is_named_as_missing_not_as_an_unknown_built_in(tmp_path):
    with pytest.raises(DataError, match=r"folder .*imgs/train does not exist"):
        load(tmp_path / "imgs" / "train")


def test_a_datasets_folder_with_an_image_column_reads_like_the_image_folder(digits, tmp_path):
    """The same PNGs in a ``datasets`` folder (Image + ClassLabel columns, save_to_disk) and
    in the image folder give the same labels and, through the same eval transform, the same
    pixels; the datasets inputs are read lazily."""
    datasets = pytest.importorskip("datasets")
    order = folder_order(digits)
    files = {int(p.stem): p for p in digits.rglob("*.png")}
    labels = digit_arrays(n=N, size=32)[1]
    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=[str(d) for d in range(10)])})
    table = datasets.Dataset.from_dict(
        {"image": [str(files[i]) for i in order], "label": [int(labels[i]) for i in order]},
        features=features)
    table.save_to_disk(str(tmp_path / "ds"))
    from_ds = load(tmp_path / "ds", split=[1.0 / 3, 1.0 / 3, 1.0 / 3])
    from_folder = load(digits, split=[1.0 / 3, 1.0 / 3, 1.0 / 3])
    assert from_ds.task.labels == from_folder.task.labels
    assert from_ds.domain.input_shape == from_folder.domain.input_shape == (1, 32, 32)
    assert from_ds.train.is_lazy
    for name in ("train", "test"):
        a, b = from_ds.splits()[name], from_folder.splits()[name]
        assert torch.equal(a.y, b.y)
        assert torch.equal(a.x[0:16], b.x[0:16])


def test_a_datasets_folder_with_two_image_columns_asks_for_one(tmp_path):
    datasets = pytest.importorskip("datasets")
    image = Image.new("L", (8, 8))
    table = datasets.Dataset.from_dict(
        {"a": [image] * 6, "b": [image] * 6, "label": [0, 1] * 3},
        features=datasets.Features({"a": datasets.Image(), "b": datasets.Image(),
                                    "label": datasets.Value("int64")}))
    table.save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(DataError, match="one image column.*'a', 'b'"):
        load(tmp_path / "ds")
    assert load(tmp_path / "ds", features=["b"]).domain.input_shape == (1, 8, 8)
