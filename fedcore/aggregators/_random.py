"""Randomness for aggregators: deterministic from the seed, fresh every round, independent per client."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, UInt32

from .. import core as fc

__all__ = ["initial_key", "split_round_key", "per_client_keys"]


def initial_key(key: jax.Array | None) -> UInt32[Array, "2"]:
    """The key an aggregator's state starts from: `key`, or `PRNGKey(0)` when none is given."""
    if key is None:
        return jax.random.PRNGKey(0)
    key = jnp.asarray(key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    if key.shape != (2,) or key.dtype != jnp.uint32:
        raise TypeError(f"an aggregator's key must be jax.random.PRNGKey(seed) (uint32[2]), got {key.dtype}{list(key.shape)}.")
    return key


def split_round_key(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(this round's key, the key carried to the next round)`: no key is ever used twice."""
    this_round, carried = jax.random.split(key)
    return this_round, carried


def per_client_keys(round_key: fc.FederatedValue, like: fc.FederatedValue) -> fc.FederatedValue:
    """`(key@SERVER, {T}@CLIENTS) -> {key}@CLIENTS`: client `i` gets `fold_in(round_key, i)`.

    ```python
    >>> import fedcore as fc, jax, jax.numpy as jnp
    >>> from fedcore.aggregators._random import per_client_keys
    >>> keys = per_client_keys(fc.server_value(jax.random.PRNGKey(1)), fc.clients_value(jnp.zeros((3, 2))))
    >>> keys.type
    {u32[2]}@CLIENTS
    ```
    """
    n = like.num_clients
    if n is None:
        raise TypeError(f"per_client_keys needs a per-client value ({{T}}@CLIENTS), got {like.type}.")
    index = fc.clients_value(jnp.arange(n, dtype=jnp.uint32))
    return fc.map(jax.random.fold_in, fc.broadcast(round_key), index)
