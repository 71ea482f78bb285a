"""Federated types: a pytree of tensor types, a placement and an all-equal bit.

Printed in TensorFlow Federated's notation:

- `f32[784]@SERVER`  -- one value at the server;
- `f32[784]@CLIENTS` -- one value, equal on every client;
- `{f32[784]}@CLIENTS` -- one value per client.

Structures print as `<a=f32[3],b=i32>` (named) or `<f32,i32>` (unnamed).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from ._placements import CLIENTS, SERVER, Placement

__all__ = [
    "TensorType",
    "FederatedType",
    "FunctionType",
    "PlacementError",
    "tensor_type",
    "format_structure",
    "same_type",
]


class PlacementError(TypeError):
    """A federated operation received a value with the wrong placement or type.

    The message names the expected and the actual federated type.
    """


_DTYPE_NAMES = {
    "float16": "f16",
    "bfloat16": "bf16",
    "float32": "f32",
    "float64": "f64",
    "int8": "i8",
    "int16": "i16",
    "int32": "i32",
    "int64": "i64",
    "uint8": "u8",
    "uint16": "u16",
    "uint32": "u32",
    "uint64": "u64",
    "bool": "bool",
    "complex64": "c64",
    "complex128": "c128",
}


@dataclasses.dataclass(frozen=True)
class TensorType:
    """Shape and dtype of one array leaf, e.g. `f32[784]` or `i32` (a scalar)."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def __str__(self) -> str:
        name = _DTYPE_NAMES.get(np.dtype(self.dtype).name, np.dtype(self.dtype).name)
        if not self.shape:
            return name
        return f"{name}[{','.join(str(d) for d in self.shape)}]"

    __repr__ = __str__


def tensor_type(x: Any) -> TensorType:
    """The `TensorType` of an array-like leaf (anything with shape and dtype)."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        x = np.asarray(x)
    return TensorType(tuple(int(d) for d in x.shape), np.dtype(x.dtype))


def format_structure(tree: Any) -> str:
    """Formats a pytree whose leaves are `TensorType`s in TFF's notation."""
    if isinstance(tree, TensorType):
        return str(tree)
    if isinstance(tree, dict):
        items = ",".join(f"{k}={format_structure(v)}" for k, v in _sorted_items(tree))
        return f"<{items}>"
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        items = ",".join(f"{k}={format_structure(v)}" for k, v in zip(tree._fields, tree))
        return f"<{items}>"
    if isinstance(tree, (list, tuple)):
        return "<" + ",".join(format_structure(v) for v in tree) + ">"
    if tree is None:
        return "<>"
    # Any other pytree node (an equinox module, a dataclass, ...): name it and
    # list its children with their paths.
    children, _ = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: isinstance(x, TensorType)
    )
    items = ",".join(
        f"{jax.tree_util.keystr(path).lstrip('.')}={leaf}" for path, leaf in children
    )
    return f"{type(tree).__name__}<{items}>"


def _sorted_items(d: dict) -> list[tuple[Any, Any]]:
    # JAX flattens dicts in sorted key order; print in that order too, so equal
    # types (compared by flattening) print, and hash, the same.
    try:
        return sorted(d.items(), key=lambda kv: kv[0])
    except TypeError:
        return list(d.items())


@dataclasses.dataclass(frozen=True)
class FederatedType:
    """The type of a placed value: member structure, placement, all-equal bit.

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> str(fc.type_of(fc.clients_value(jnp.zeros((5, 784)))))
    '{f32[784]}@CLIENTS'
    ```
    """

    member: Any  # a pytree whose leaves are TensorType
    placement: Placement
    all_equal: bool

    def __post_init__(self):
        if self.placement is SERVER and not self.all_equal:
            raise ValueError("A SERVER-placed type is always all-equal.")

    def __str__(self) -> str:
        inner = format_structure(self.member)
        if self.placement is CLIENTS and not self.all_equal:
            return f"{{{inner}}}@{self.placement}"
        return f"{inner}@{self.placement}"

    __repr__ = __str__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FederatedType):
            return NotImplemented
        return (
            self.placement is other.placement
            and self.all_equal == other.all_equal
            and _same_structure(self.member, other.member)
        )

    def __hash__(self) -> int:
        return hash((self.placement, self.all_equal, str(self)))


def same_type(a: Any, b: Any) -> bool:
    """Whether two types (federated types, or pytrees of tensor types) are equal."""
    return _same_structure(a, b)


def _same_structure(a: Any, b: Any) -> bool:
    is_leaf = lambda x: isinstance(x, (TensorType, FederatedType))  # noqa: E731
    la, ta = jax.tree_util.tree_flatten(a, is_leaf=is_leaf)
    lb, tb = jax.tree_util.tree_flatten(b, is_leaf=is_leaf)
    return ta == tb and la == lb


@dataclasses.dataclass(frozen=True)
class FunctionType:
    """The type signature of a computation, e.g. `(<{f32[3]}@CLIENTS,f32@SERVER> -> f32[3]@SERVER)`."""

    parameter: tuple[Any, ...]
    result: Any

    def __str__(self) -> str:
        params = [_format_any(p) for p in self.parameter]
        if not params:
            arg = ""  # TFF prints a no-argument function as `( -> T)`
        elif len(params) == 1:
            arg = params[0]
        else:
            arg = "<" + ",".join(params) + ">"
        return f"({arg} -> {_format_any(self.result)})"

    __repr__ = __str__


def _format_any(t: Any) -> str:
    if isinstance(t, FederatedType):
        return str(t)
    # A structure that may mix federated types and tensor types.
    is_leaf = lambda x: isinstance(x, (TensorType, FederatedType))  # noqa: E731
    if isinstance(t, (TensorType,)):
        return str(t)
    if isinstance(t, dict):
        return "<" + ",".join(f"{k}={_format_any(v)}" for k, v in _sorted_items(t)) + ">"
    if isinstance(t, (list, tuple)):
        return "<" + ",".join(_format_any(v) for v in t) + ">"
    leaves = jax.tree_util.tree_leaves(t, is_leaf=is_leaf)
    if all(isinstance(x, TensorType) for x in leaves):
        return format_structure(t)
    return "<" + ",".join(_format_any(v) for v in leaves) + ">"
