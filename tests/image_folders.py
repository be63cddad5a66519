"""Small labelled image folders in the `DIR/{train,test}/<class>/` layout, shared by the tests."""

from pathlib import Path

import numpy as np
from PIL import Image


def make_image_folder(
    root: Path, per_class: dict[str, int] | None = None, size: int = 16, classes: int = 2, seed: int = 0
) -> Path:
    """``root/{train,test}/c<k>/<i>.png``: noisy RGB images whose bright quadrant is the class (k = 0..3)."""
    per_class = per_class or {"train": 24, "test": 8}
    rng = np.random.default_rng(seed)
    half = size // 2
    for split, n in per_class.items():
        for c in range(classes):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
                r, q = divmod(c % 4, 2)
                img[r * half : (r + 1) * half, q * half : (q + 1) * half] += 150
                Image.fromarray(img).save(folder / f"{i}.png")
    return root
