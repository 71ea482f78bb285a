"""Client batches: several clients' padded batches as one pytree.

The layout shared by the data layer (which builds it), the learning layer
(which trains on it) and execution strategies (which may group clients by
their number of steps).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Int

__all__ = ["ClientBatches"]


class ClientBatches(eqx.Module):
    """Batches of several clients, stacked and padded.

    - `data`: dict of arrays `[clients, examples, ...]` (each client's examples once);
    - `index`: `[clients, steps, batch]` int32, which example fills each slot;
    - `mask`: `[clients, steps, batch]` bool, False for padding slots.

    A padded slot (mask False) contributes nothing: no loss, no gradient, no
    count. A step whose mask is all False is skipped (no optimizer step).
    """

    data: dict[str, Array]
    index: Int[Array, "clients steps batch"]
    mask: Bool[Array, "clients steps batch"]

    @property
    def num_clients(self) -> int:
        return int(self.index.shape[0])

    @property
    def num_steps(self) -> int:
        return int(self.index.shape[1])

    @property
    def batch_size(self) -> int:
        return int(self.index.shape[2])

    def materialize(self) -> dict[str, Array]:
        """The explicit `[clients, steps, batch, ...]` arrays plus `"mask"`."""
        gathered = {
            k: jax.vmap(lambda a, i: a[i])(v, self.index) for k, v in self.data.items()
        }
        return {**gathered, "mask": self.mask}

    @classmethod
    def from_materialized(cls, batches: Mapping[str, Any]) -> "ClientBatches":
        """Wraps explicit `{"x": [C, S, B, ...], ..., "mask": [C, S, B]}` arrays.

        ```python
        >>> import numpy as np
        >>> b = ClientBatches.from_materialized({"x": np.zeros((2, 3, 4, 5)), "mask": np.ones((2, 3, 4), bool)})
        >>> b.index.shape
        (2, 3, 4)
        ```
        """
        if "mask" not in batches:
            raise ValueError("Materialized batches need a 'mask' entry of shape [clients, steps, batch].")
        mask = jnp.asarray(batches["mask"], dtype=bool)
        if mask.ndim != 3:
            raise ValueError(f"'mask' must be [clients, steps, batch], got shape {mask.shape}.")
        c, s, b = mask.shape
        data = {}
        for k, v in batches.items():
            if k == "mask":
                continue
            v = jnp.asarray(v)
            if v.shape[:3] != (c, s, b):
                raise ValueError(f"'{k}' has leading shape {v.shape[:3]}, but 'mask' is {(c, s, b)}.")
            data[k] = v.reshape(c, s * b, *v.shape[3:])
        index = jnp.broadcast_to(jnp.arange(s * b, dtype=jnp.int32).reshape(s, b), (c, s, b))
        return cls(data, index, mask)
