"""Image transforms: defaults from the trunk, named augmentations, and augmented batches that are a
function of (seed, step) alone — in two fresh readers, and in a DataLoader worker as in the main
process."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tlroutes.backbones.inputs import IMAGENET_MEAN, IMAGENET_STD, InputConfig
from tlroutes.backbones.pretrained.stems import ImageNetStem
from tlroutes.config import TransformSpec
from tlroutes.data.transforms import AUGMENTATIONS, ImageTransforms, resolve_transforms
from tlroutes.errors import ConfigError
from tlroutes.lazy_inputs import LazyInputs
from tlroutes.problem import Domain
from tlroutes.seeding import derive_seed

EVERY_AUGMENTATION = ["random_resized_crop", {"random_crop": {"padding": 2}}, "horizontal_flip",
                      "vertical_flip", {"rotation": {"degrees": 20}},
                      {"color_jitter": {"brightness": 0.3, "contrast": 0.3, "saturation": 0.3,
                                        "hue": 0.1}},
                      {"gaussian_blur": {"kernel_size": 3}}, "trivial_augment",
                      {"rand_augment": {"num_ops": 1}}, {"random_erasing": {"p": 0.5}}]


def rgb(h: int = 40, w: int = 50, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


class PILReader:
    """Random colour images of 20×24 pixels, made from their index."""

    def __len__(self) -> int:
        return 12

    def read(self, i: int) -> Image.Image:
        return rgb(20, 24, seed=i)


def lazy(train: list) -> LazyInputs:
    t = resolve_transforms(TransformSpec(size=16, train=train), data_size=(20, 24),
                           data_mode="RGB")
    return LazyInputs(PILReader(), sample_shape=t.sample_shape, transform=t.eval_transform,
                      train_transform=t.train_transform)


def test_defaults_come_from_the_trunk():
    eff = resolve_transforms(TransformSpec(), trunk="efficientnet_lite0", data_size=(32, 32),
                             data_mode="L")
    # 224 px, ImageNet statistics, RGB for a 3-channel trunk even when the images are grey
    assert eff.size == (224, 224) and eff.mode == "RGB"
    assert eff.normalization == (IMAGENET_MEAN, IMAGENET_STD)
    out = eff.eval_transform(rgb(300, 400))
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    # a trunk that declares nothing: the data's own size and mode, values left in [0, 1]
    cnn = resolve_transforms(TransformSpec(), trunk="cnn2d", data_size=(20, 30), data_mode="L")
    assert (cnn.size, cnn.mode, cnn.normalization) == ((20, 30), "L", None)
    pixels = (np.arange(600) % 256).astype(np.uint8).reshape(20, 30)
    # uint8 / 255, to float32 rounding (torchvision multiplies by 1/255)
    assert torch.allclose(cnn.eval_transform(Image.fromarray(pixels))[0],
                          torch.as_tensor(pixels, dtype=torch.float32) / 255, rtol=0, atol=1e-7)
    # the run file wins over the trunk
    own = resolve_transforms(TransformSpec(size=[32, 48], mean=[0.5], std=[0.25]),
                             trunk="efficientnet_lite0", data_size=(8, 8), data_mode="RGB")
    assert own.size == (32, 48) and own.normalization == ((0.5,) * 3, (0.25,) * 3)


def test_a_pretrained_trunk_without_statistics_gets_imagenets():
    assert InputConfig(channels=3, pretrained=True).statistics() == (IMAGENET_MEAN, IMAGENET_STD)
    assert InputConfig(channels=3).statistics() is None
    assert InputConfig(channels=1, pretrained=True).statistics() is None


def test_crop_keeps_the_aspect_and_stretch_does_not():
    # a wide image: left half black, right half white
    wide = Image.fromarray(np.concatenate([np.zeros((20, 40, 3), np.uint8),
                                           np.full((20, 40, 3), 255, np.uint8)], axis=1))
    crop = ImageTransforms(size=(10, 10), resize="crop").eval_transform(wide)
    stretch = ImageTransforms(size=(10, 10), resize="stretch").eval_transform(wide)
    assert crop.shape == stretch.shape == (3, 10, 10)
    # crop: the centre 20×20 of the (already 10 px high) image; stretch squeezes 80 px into 10
    assert crop[:, :, 0].max() < 0.1 and crop[:, :, -1].min() > 0.9
    assert stretch[:, :, 0].max() < 0.1 and stretch[:, :, -1].min() > 0.9
    margin = ImageTransforms(size=(10, 10), resize="crop", crop_pct=0.5).eval_transform(wide)
    assert margin.shape == (3, 10, 10)


@pytest.mark.parametrize("entry, match", [
    ("horizontal_flp", "unknown augmentation 'horizontal_flp'. Did you mean 'horizontal_flip'"),
    ({"rotation": {"degree": 10}}, "has no argument 'degree'. Did you mean 'degrees'"),
    ({"rotation": {"degrees": "ten"}}, "argument 'degrees' takes float"),
    ({"horizontal_flip": {"p": 1.5}}, r"transforms.train\[0\]: horizontal_flip.p must be a "
                                      "probability"),
    ({"random_resized_crop": {"scale": [0.9, 0.1]}}, "min <= max"),
    ({"random_crop": {"padding_mode": "wrap"}}, "padding_mode must be one of"),
    ({"gaussian_blur": {"kernel_size": 4}}, "odd"),
])
def test_a_bad_augmentation_is_one_config_error(entry, match):
    with pytest.raises(ConfigError, match=match):
        resolve_transforms(TransformSpec(train=[entry]), data_size=(8, 8), data_mode="RGB")


def test_statistics_must_fit_the_channels():
    with pytest.raises(ConfigError, match="need 1 value"):
        resolve_transforms(TransformSpec(mean=[0.1, 0.2, 0.3], std=[1, 1, 1], mode="L"),
                           data_size=(8, 8), data_mode="L")
    with pytest.raises(ConfigError, match="both mean and std"):
        resolve_transforms(TransformSpec(mean=[0.1]), data_size=(8, 8), data_mode="L")


def test_every_augmentation_keeps_the_sample_shape():
    assert {next(iter(e)) if isinstance(e, dict) else e for e in EVERY_AUGMENTATION} \
        == set(AUGMENTATIONS)
    for entry in EVERY_AUGMENTATION:
        x = lazy([entry])
        batch = x.load(list(range(6)), augment_seed=3)
        assert batch.shape == (6, 3, 16, 16) and torch.isfinite(batch).all(), entry


def test_the_augmented_batch_is_a_function_of_seed_and_step():
    train = ["random_resized_crop", "horizontal_flip", {"color_jitter": {"brightness": 0.4}},
             "trivial_augment", "random_erasing"]
    a, b = lazy(train), lazy(train)
    rows = [3, 0, 7, 7, 11]
    step = derive_seed(123, "step", 5)
    first = a.load(rows, augment_seed=step)
    torch.manual_seed(999)  # the global RNG's state before the call does not matter
    assert torch.equal(first, b.load(rows, augment_seed=step))
    assert not torch.equal(first, a.load(rows, augment_seed=derive_seed(123, "step", 6)))
    # the same image twice in one batch is augmented twice, differently
    assert not torch.equal(first[2], first[3])
    # evaluation reads are never augmented
    assert torch.equal(a[rows], b[rows])
    # the caller's RNG is left where it was
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    a.load(rows, augment_seed=step)
    assert torch.equal(torch.rand(3), expected)


class StepBatches(torch.utils.data.Dataset):
    """The batch of step ``i``: rows and augmentation seed from (seed, i) alone."""

    def __init__(self, x: LazyInputs, seed: int) -> None:
        self.x, self.seed = x, seed

    def __len__(self) -> int:
        return 4

    def __getitem__(self, step: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(derive_seed(self.seed, "rows", step))
        rows = torch.randint(0, len(self.x), (5,), generator=gen).tolist()
        return self.x.load(rows, augment_seed=derive_seed(self.seed, "step", step))


def test_a_dataloader_worker_reads_the_main_processes_batches():
    train = ["random_resized_crop", "horizontal_flip", "trivial_augment"]
    main = [StepBatches(lazy(train), 7)[i] for i in range(4)]
    loader = torch.utils.data.DataLoader(StepBatches(lazy(train), 7), batch_size=None,
                                         num_workers=1)
    worker = list(loader)
    assert all(torch.equal(m, w) for m, w in zip(main, worker, strict=True))


def test_the_imagenet_stem_undoes_a_transforms_normalisation():
    x = torch.rand(2, 3, 16, 16)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(
        1, 3, 1, 1)
    raw = ImageNetStem(Domain("a", "image", (3, 16, 16)), 3, size=16)(x)
    normalised = Domain("a", "image", (3, 16, 16), normalization=(IMAGENET_MEAN, IMAGENET_STD))
    again = ImageNetStem(normalised, 3, size=16)((x - mean) / std)
    assert torch.allclose(raw, again, atol=1e-5)
