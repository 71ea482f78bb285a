"""Synthetic but realistic federated client data for the benchmarks.

EMNIST-like: 28x28 grey images (flattened to 784 float32 in [0, 1]) of 10
classes. Every client is a "writer" with its own stroke offset, contrast and
label skew (Dirichlet), and a lognormal number of examples (median 90, so
about 100 on average, clipped to [10, 600]) -- the long tail of client sizes
that makes padding every client to the round's largest one expensive.
Everything derives from one seed.
"""

from __future__ import annotations

import numpy as np

__all__ = ["make_population", "client_sizes"]


def client_sizes(num_clients: int, seed: int = 0, median: float = 90.0, sigma: float = 0.5) -> np.ndarray:
    """Lognormal example counts, clipped to [10, 600]."""
    rng = np.random.default_rng([seed, 1])
    return np.clip(np.round(np.exp(rng.normal(np.log(median), sigma, num_clients))), 10, 600).astype(np.int64)


def _prototypes(rng: np.random.Generator) -> np.ndarray:
    """Ten smooth 28x28 class templates (sums of a few Gaussian strokes)."""
    yy, xx = np.mgrid[0:28, 0:28].astype(np.float32)
    protos = np.zeros((10, 28, 28), np.float32)
    for c in range(10):
        for _ in range(4):
            cy, cx = rng.uniform(6, 22, 2)
            sy, sx = rng.uniform(1.5, 5.0, 2)
            protos[c] += np.exp(-((yy - cy) ** 2 / (2 * sy**2) + (xx - cx) ** 2 / (2 * sx**2)))
        protos[c] /= protos[c].max()
    return protos


def make_population(num_clients: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """`num_clients` clients, each `{"x": f32[n, 784], "y": i32[n]}`, reproducible from `seed`."""
    rng = np.random.default_rng([seed, 2])
    protos = _prototypes(rng)
    sizes = client_sizes(num_clients, seed)
    clients = []
    for n in sizes:
        label_probs = rng.dirichlet(np.full(10, 0.7))
        y = rng.choice(10, size=n, p=label_probs).astype(np.int32)
        shift = rng.integers(-2, 3, size=2)
        contrast = rng.uniform(0.7, 1.0)
        images = np.roll(protos[y], shift=tuple(shift), axis=(1, 2)) * contrast
        images += rng.normal(0.0, 0.15, images.shape).astype(np.float32)
        clients.append({"x": np.clip(images, 0.0, 1.0).reshape(n, 784).astype(np.float32), "y": y})
    return clients
