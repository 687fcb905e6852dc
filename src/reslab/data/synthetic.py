"""Generated images that a network can learn quickly (for tests and smoke runs)."""

from __future__ import annotations

import numpy as np

from reslab.data.dataset import Dataset, make_dataset


def make_synthetic(
    n_train: int = 1000, n_test: int = 500, shape=(3, 32, 32), num_classes: int = 10, seed: int = 0
) -> Dataset:
    """Learnable generated images: a smooth random template per class plus noise."""
    g = np.random.default_rng(seed)
    c, h, w = shape
    coarse = g.normal(size=(num_classes, c, max(2, h // 4), max(2, w // 4)))
    templates = np.kron(coarse, np.ones((1, 1, -(-h // coarse.shape[2]), -(-w // coarse.shape[3]))))[:, :, :h, :w]

    def draw(n):
        y = np.arange(n) % num_classes
        g.shuffle(y)
        x = templates[y] + 0.8 * g.normal(size=(n, c, h, w))
        return np.clip(128 + 40 * x, 0, 255).astype(np.uint8), y

    (tx, ty), (vx, vy) = draw(n_train), draw(n_test)
    return make_dataset(
        "synthetic",
        tx,
        ty,
        vx,
        vy,
        [f"class{i}" for i in range(num_classes)],
        augment=False,
        info={"source": f"generated (seed {seed})"},
    )
