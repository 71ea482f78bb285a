"""Placed values: a pytree of arrays with a placement.

A `FederatedValue` is itself a JAX pytree (an `equinox.Module`), so it passes
through `jax.jit`, `jax.grad` and `jax.vmap`. Per-client values carry the
clients on the leading axis of every leaf; all-equal values carry no such axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PyTree

from ._placements import CLIENTS, SERVER, Placement
from ._types import FederatedType, PlacementError, TensorType, tensor_type

__all__ = [
    "FederatedValue",
    "server_value",
    "clients_value",
    "type_of",
    "is_placed",
]


def _as_array(x: Any) -> Any:
    if isinstance(x, (jax.Array, jax.core.Tracer)):
        return x
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    return jnp.asarray(x)


class FederatedValue(eqx.Module):
    """A value placed at `SERVER` or `CLIENTS`.

    Build one with `fc.server_value`, `fc.clients_value`, `fc.value` or an
    intrinsic; read the member pytree with `.value`. Indexing (`v["loss"]`)
    selects inside the member and keeps the placement, as TFF's values do.

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> v = fc.clients_value(jnp.arange(6.0).reshape(3, 2))
    >>> v.num_clients, str(v.type)
    (3, '{f32[2]}@CLIENTS')
    ```
    """

    value: PyTree
    placement: Placement = eqx.field(static=True)
    all_equal: bool = eqx.field(static=True)

    def __init__(self, value: PyTree, placement: Placement, all_equal: bool):
        # Written out: equinox's generated __init__ flattens its arguments,
        # which would run a deferred (chunked) map held in `value`.
        self.value = value
        self.placement = placement
        self.all_equal = all_equal

    def __check_init__(self):
        if self.placement is SERVER and not self.all_equal:
            raise ValueError("A SERVER-placed value is always all-equal.")

    @property
    def per_client(self) -> bool:
        """True for `{T}@CLIENTS` values (one member per client, leading axis)."""
        return self.placement is CLIENTS and not self.all_equal

    @property
    def num_clients(self) -> int | None:
        """Number of clients of a per-client value; `None` otherwise."""
        if not self.per_client:
            return None
        leaves = jax.tree_util.tree_leaves(_member_shapes(self.value))
        if not leaves:
            return None
        return int(leaves[0].shape[0])

    @property
    def type(self) -> FederatedType:
        """The federated type of this value (see `fc.type_of`)."""
        if self.per_client:
            member = jax.tree.map(
                lambda x: TensorType(tuple(int(d) for d in x.shape[1:]), np.dtype(x.dtype)),
                _member_shapes(self.value),
            )
        else:
            member = jax.tree.map(tensor_type, _member_shapes(self.value))
        return FederatedType(member, self.placement, self.all_equal)

    def __getitem__(self, key: Any) -> "FederatedValue":
        if self.per_client and hasattr(_member_shapes(self.value), "ndim"):
            # An array member: index inside each client's array, after the clients axis.
            key = key if isinstance(key, tuple) else (key,)
            return FederatedValue(self.value[(slice(None), *key)], self.placement, False)
        return FederatedValue(self.value[key], self.placement, self.all_equal)

    def _single(self, what: str) -> Any:
        if self.per_client:
            raise PlacementError(
                f"{what}() needs a single value; got the per-client value {self.type}. "
                "Reduce it first (fc.mean, fc.sum, ...)."
            )
        return self.value

    def __float__(self) -> float:
        return float(self._single("float"))

    def __int__(self) -> int:
        return int(self._single("int"))

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.value, dtype=dtype)

    def __format__(self, spec: str) -> str:
        if spec and not self.per_client:
            leaves = jax.tree_util.tree_leaves(self.value)
            if len(leaves) == 1 and np.size(leaves[0]) == 1:
                return format(np.asarray(leaves[0]).item(), spec)
        return format(str(self), spec)

    # A dict member reads as a read-only mapping, as TFF's structured values do:
    # `"train" in metrics`, `metrics.keys()`, `metrics.items()`, `for k in metrics`.
    def _mapping(self, what: str) -> dict:
        if not isinstance(self.value, dict):
            raise TypeError(f"{what} needs a value whose member is a dict (a structure with names), got {self.type}.")
        return self.value

    def keys(self) -> Any:
        """The member's names, where the member is a dict."""
        return self._mapping("keys()").keys()

    def items(self) -> list[tuple[Any, "FederatedValue"]]:
        """`(name, placed member)` pairs, where the member is a dict."""
        return [(k, self[k]) for k in self._mapping("items()")]

    def values(self) -> list["FederatedValue"]:
        """The placed members, where the member is a dict."""
        return [self[k] for k in self._mapping("values()")]

    def __contains__(self, key: Any) -> bool:
        return key in self._mapping("`in`")

    def __iter__(self) -> Any:
        if isinstance(self.value, dict):
            return iter(self.value)
        if isinstance(self.value, (tuple, list)):
            return iter([self[i] for i in range(len(self.value))])
        raise TypeError(f"{self.type} is not iterable; read its member with .value.")

    def __len__(self) -> int:
        if isinstance(self.value, (dict, tuple, list)):
            return len(self.value)
        raise TypeError(f"{self.type} has no len(); read its member with .value.")

    def __repr__(self) -> str:
        try:
            type_str = str(self.type)
        except Exception:  # noqa: BLE001 - repr must never fail
            type_str = f"?@{self.placement}"
        leaves = jax.tree_util.tree_leaves(self.value)
        concrete = all(isinstance(a, (jax.Array, np.ndarray, np.generic)) and not isinstance(a, jax.core.Tracer) for a in leaves)
        if len(leaves) == 1 and np.size(leaves[0]) <= 8 and concrete:
            return f"FederatedValue({type_str}: {np.asarray(leaves[0]).tolist()})"
        if leaves and concrete and len(leaves) <= 64 and all(np.size(a) <= 8 for a in leaves):
            # Small structures (metrics) print their numbers, not only their types.
            numbers = jax.tree.map(lambda a: np.asarray(a).tolist(), self.value)
            return f"FederatedValue({type_str}: {numbers})"
        return f"FederatedValue({type_str})"


def _member_shapes(member: PyTree) -> PyTree:
    """`member`, with each deferred part (a chunked `fc.map`, see `fedcore.core._chunked`)
    replaced by its shapes: reading a type never runs a deferred map."""
    deferred = lambda x: hasattr(x, "__fedcore_shapes__")  # noqa: E731
    return jax.tree.map(lambda x: x.__fedcore_shapes__ if deferred(x) else x, member, is_leaf=deferred)


def is_placed(x: Any) -> bool:
    """True if `x` is a `FederatedValue`."""
    return isinstance(x, FederatedValue)


def type_of(x: Any) -> Any:
    """The type of a value: a `FederatedType` for placed values, else a pytree of `TensorType`.

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> str(fc.type_of(fc.server_value(jnp.zeros(784))))
    'f32[784]@SERVER'
    ```
    """
    if isinstance(x, FederatedValue):
        return x.type
    return jax.tree.map(
        lambda leaf: leaf.type if isinstance(leaf, FederatedValue) else tensor_type(leaf),
        x,
        is_leaf=is_placed,
    )


def server_value(tree: PyTree) -> FederatedValue:
    """Places a pytree at the server: `T -> T@SERVER`.

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> fc.server_value({"w": jnp.zeros(3)}).type
    <w=f32[3]>@SERVER
    ```
    """
    if isinstance(tree, FederatedValue):
        raise PlacementError(f"server_value expects an unplaced pytree; got {tree.type}.")
    return FederatedValue(jax.tree.map(_as_array, tree), SERVER, True)


def clients_value(values: PyTree | Sequence[PyTree], *, all_equal: bool = False) -> FederatedValue:
    """Places per-client data at the clients: `{T}@CLIENTS`.

    `values` is either a list of per-client pytrees (stacked here) or one pytree
    whose leaves carry the clients on their leading axis. With
    `all_equal=True`, `values` is a single member placed on every client
    (`T@CLIENTS`).

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> v = fc.clients_value([jnp.zeros(2), jnp.ones(2)])
    >>> str(v.type), v.num_clients
    ('{f32[2]}@CLIENTS', 2)
    ```
    """
    if isinstance(values, FederatedValue):
        raise PlacementError(f"clients_value expects an unplaced pytree; got {values.type}.")
    if all_equal:
        return FederatedValue(jax.tree.map(_as_array, values), CLIENTS, True)
    if isinstance(values, list):
        if not values:
            raise ValueError("clients_value got an empty list: a CLIENTS value needs at least one client.")
        structures = {jax.tree.structure(v) for v in values}
        if len(structures) != 1:
            first = jax.tree.structure(values[0])
            bad = next(i for i, v in enumerate(values) if jax.tree.structure(v) != first)
            raise ValueError(
                f"clients_value: client {bad} has structure {jax.tree.structure(values[bad])}, "
                f"but client 0 has {first}; every client must have the same structure."
            )
        for path_leaves in zip(*(jax.tree.leaves(v) for v in values)):
            shapes = {np.shape(a) for a in path_leaves}
            if len(shapes) != 1:
                raise ValueError(
                    f"clients_value: clients disagree on a leaf's shape ({sorted(shapes)}); "
                    "pad them to one shape first (see fedcore.data.batch_clients)."
                )
        if not jax.tree.leaves(values[0]):
            raise ValueError(
                f"clients_value: client 0's value {values[0]!r} holds no arrays (None or an empty "
                "container), so the value would have no type; give every client an array value."
            )
        stacked = jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *values)
        return FederatedValue(stacked, CLIENTS, False)
    tree = jax.tree.map(_as_array, values)
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ValueError("clients_value got a pytree with no arrays: the number of clients is unknown.")
    counts = set()
    for leaf in leaves:
        if leaf.ndim == 0:
            raise ValueError(
                "clients_value: every leaf needs a leading clients axis; got a scalar leaf. "
                "Pass a list of per-client values, or all_equal=True for one shared value."
            )
        counts.add(int(leaf.shape[0]))
    if len(counts) != 1:
        raise ValueError(f"clients_value: leaves disagree on the number of clients: {sorted(counts)}.")
    if counts == {0}:
        raise ValueError("clients_value got zero clients: a CLIENTS value needs at least one client.")
    return FederatedValue(tree, CLIENTS, False)
