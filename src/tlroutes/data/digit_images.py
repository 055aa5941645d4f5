"""A small image folder to try image data with: scikit-learn's 8×8 digits as PNG files.

Each digit (values 0-16) is scaled to [0, 1], upscaled to ``size`` pixels (bilinear, in float)
and stored as an 8-bit grey PNG, in the ImageFolder layout ``root/<digit>/<index>.png`` — and,
with ``table=True``, listed in ``root/labels.csv`` (``path,label,split``). Nothing is
downloaded; 200 images at 32 px are about 100 KB.

Run ``python -m tlroutes.data.digit_images data/digit_images`` to make the folder the example
``examples/image_folder_task_fine_tuning.yaml`` reads.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tlroutes.errors import ConfigError


def digit_arrays(*, n: int | None = None, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` digits (all 1797 when None) as float32 ``(n, 1, size, size)`` in [0, 1],
    before any storage, and their labels ``(n,)``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.as_tensor(digits.images[:n], dtype=torch.float32)[:, None] / 16.0
    if size != 8:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images.clamp(0.0, 1.0).numpy(), digits.target[:n].astype(np.int64)


def write_digit_images(root: str | Path, *, n: int = 200, size: int = 32, table: bool = False,
                       ) -> Path:
    """Write ``n`` digits as ``size``-pixel grey PNGs under ``root`` (see module doc).

    Args:
        root: the folder; created, and it must not hold other files.
        n: how many of the 1797 digits, in their order. Default 200.
        size: the side in pixels (8 keeps the originals). Default 32.
        table: also write ``root/labels.csv`` listing ``path,label,split`` (the first 60 % train,
            then 20 % val, 20 % test). Default False.

    Returns:
        ``root``.
    """
    from PIL import Image

    if not 1 <= n <= 1797 or not 8 <= size <= 1024:
        raise ConfigError(f"write_digit_images needs 1 <= n <= 1797 and 8 <= size <= 1024, got "
                          f"n={n}, size={size}.")
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise ConfigError(f"{root} is not empty; give a new folder for the digit images.")
    images, labels = digit_arrays(n=n, size=size)
    pixels = np.rint(images[:, 0] * 255.0).astype(np.uint8)
    rows = []
    for i, (image, label) in enumerate(zip(pixels, labels, strict=True)):
        folder = root / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:04d}.png")
        split = "train" if i < 0.6 * n else "val" if i < 0.8 * n else "test"
        rows.append((f"{label}/{i:04d}.png", str(int(label)), split))
    if table:
        with (root / "labels.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(("path", "label", "split"))
            writer.writerows(rows)
    return root


def main(argv: list[str] | None = None) -> None:
    """``python -m tlroutes.data.digit_images ROOT [--n N] [--size S] [--table]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args(argv)
    write_digit_images(args.root, n=args.n, size=args.size, table=args.table)
    print(f"wrote {args.n} digit images of {args.size} px to {args.root}")


if __name__ == "__main__":
    main()
