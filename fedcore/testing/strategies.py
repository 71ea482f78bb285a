"""Hypothesis strategies for federated values.

Draw random pytrees, placed values, client counts and client weights to
property-test federated algorithms:

```python
>>> import fedcore as fc, numpy as np
>>> from hypothesis import given, settings
>>> from fedcore.testing import strategies as fst
>>> scalar = fc.TensorType((), np.dtype("float32"))
>>> @settings(max_examples=10, deadline=None)
... @given(fst.weighted_client_values(num_clients=fst.client_counts(max_value=8), member=scalar))
... def test_mean_is_bounded(xw):
...     x, w = xw
...     m = fc.mean(x, w)
...     assert float(fc.min(x)) - 1e-4 <= float(m) <= float(fc.max(x)) + 1e-4
>>> test_mean_is_bounded()
```

Shapes are drawn from a small fixed set by default (`DEFAULT_SHAPES`): every
new shape makes `jax.jit` compile again, so bounded shape diversity keeps
property tests fast. Float elements are finite and moderate (|x| <= 100) so
float32 tolerances stay meaningful; integer elements are small enough that
summing 64 clients never overflows int32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jaxtyping import PyTree

from ..core import FederatedValue, TensorType, clients_value, server_value

__all__ = [
    "DEFAULT_SHAPES",
    "DEFAULT_DTYPES",
    "client_counts",
    "tensor_types",
    "member_types",
    "default_elements",
    "arrays",
    "pytrees",
    "server_values",
    "client_values",
    "weights",
    "weighted_client_values",
]

#: Shapes of drawn leaves: a scalar, a vector and a matrix.
DEFAULT_SHAPES: tuple[tuple[int, ...], ...] = ((), (3,), (2, 3))
#: Dtypes of drawn leaves (pass e.g. `(np.float32, np.int32)` to mix in integers).
DEFAULT_DTYPES: tuple[Any, ...] = (np.float32,)

_MAX_FLOAT = 100.0
_MAX_INT = 1000

IntOrStrategy = int | st.SearchStrategy[int]


def _as_strategy(x: Any) -> st.SearchStrategy:
    return x if isinstance(x, st.SearchStrategy) else st.just(x)


def client_counts(min_value: int = 1, max_value: int = 64) -> st.SearchStrategy[int]:
    """Numbers of clients in `[min_value, max_value]` (shrinks towards `min_value`).

    ```python
    >>> from fedcore.testing import strategies as fst
    >>> fst.client_counts(1, 8).example() in range(1, 9)
    True
    ```
    """
    if min_value < 1:
        raise ValueError(f"client_counts: min_value must be at least 1, got {min_value}.")
    if max_value < min_value:
        raise ValueError(f"client_counts: max_value {max_value} is below min_value {min_value}.")
    return st.integers(min_value, max_value)


def tensor_types(
    shapes: Sequence[tuple[int, ...]] = DEFAULT_SHAPES,
    dtypes: Sequence[Any] = DEFAULT_DTYPES,
) -> st.SearchStrategy[TensorType]:
    """`TensorType`s (e.g. `f32[2,3]`) with a shape from `shapes` and a dtype from `dtypes`."""
    if not shapes or not dtypes:
        raise ValueError("tensor_types needs at least one shape and one dtype.")
    return st.builds(
        lambda shape, dtype: TensorType(tuple(shape), np.dtype(dtype)),
        st.sampled_from(list(shapes)),
        st.sampled_from(list(dtypes)),
    )


def member_types(
    shapes: Sequence[tuple[int, ...]] = DEFAULT_SHAPES,
    dtypes: Sequence[Any] = DEFAULT_DTYPES,
    max_leaves: int = 3,
) -> st.SearchStrategy[PyTree[TensorType]]:
    """Member structures: a `TensorType`, or dicts and tuples nesting them (at most `max_leaves` leaves).

    ```python
    >>> from fedcore.testing import strategies as fst
    >>> from fedcore.core._types import format_structure
    >>> t = fst.member_types(max_leaves=1).example()
    >>> format_structure(t).count("f32") == 1
    True
    ```
    """
    leaf = tensor_types(shapes, dtypes)
    if max_leaves <= 1:
        return leaf
    keys = st.sampled_from(("a", "b", "w", "bias"))

    def extend(children: st.SearchStrategy) -> st.SearchStrategy:
        return st.one_of(
            st.lists(children, min_size=1, max_size=3).map(tuple),
            st.dictionaries(keys, children, min_size=1, max_size=3),
        )

    return st.recursive(leaf, extend, max_leaves=max_leaves)


def default_elements(dtype: Any) -> st.SearchStrategy:
    """Element values for one dtype: finite floats with |x| <= 100, or integers with |x| <= 1000.

    Floats are rounded to the dtype, exclude subnormals (XLA on CPU flushes them
    to zero, numpy does not) and are small enough that summing 64 clients stays
    far from overflow.
    """
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.floating):
        width = 8 * dtype.itemsize if dtype.itemsize in (2, 4, 8) else 32
        return st.floats(
            -_MAX_FLOAT, _MAX_FLOAT, width=width, allow_nan=False, allow_infinity=False, allow_subnormal=False
        )
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return st.integers(max(int(info.min), -_MAX_INT), min(int(info.max), _MAX_INT))
    if dtype == np.bool_:
        return st.booleans()
    raise ValueError(f"elements: no default elements for dtype {dtype}; pass elements= explicitly.")


def arrays(
    t: TensorType,
    *,
    leading: tuple[int, ...] = (),
    elements: st.SearchStrategy | None = None,
) -> st.SearchStrategy[jax.Array]:
    """JAX arrays of type `t`, with extra `leading` axes (e.g. `(num_clients,)`).

    `elements` defaults to `default_elements(t.dtype)`.
    """
    dtype = np.dtype(t.dtype)
    strategy = hnp.arrays(dtype, (*leading, *t.shape), elements=elements if elements is not None else default_elements(dtype))
    return strategy.map(jnp.asarray)


def _fill(
    member: PyTree[TensorType], leading: tuple[int, ...], elements: st.SearchStrategy | None
) -> st.SearchStrategy:
    is_leaf = lambda x: isinstance(x, TensorType)  # noqa: E731
    leaves, treedef = jax.tree.flatten(member, is_leaf=is_leaf)
    for leaf in leaves:
        if not isinstance(leaf, TensorType):
            raise TypeError(f"member must be a pytree of fc.TensorType leaves, got a leaf {leaf!r}.")
    drawn = st.tuples(*(arrays(t, leading=leading, elements=elements) for t in leaves))
    return drawn.map(lambda xs: jax.tree.unflatten(treedef, list(xs)))


def _members(
    member: Any, shapes: Sequence[tuple[int, ...]], dtypes: Sequence[Any], max_leaves: int
) -> st.SearchStrategy:
    if member is None:
        return member_types(shapes, dtypes, max_leaves)
    return _as_strategy(member)


def pytrees(
    member: PyTree[TensorType] | st.SearchStrategy | None = None,
    *,
    shapes: Sequence[tuple[int, ...]] = DEFAULT_SHAPES,
    dtypes: Sequence[Any] = DEFAULT_DTYPES,
    max_leaves: int = 3,
    elements: st.SearchStrategy | None = None,
) -> st.SearchStrategy[PyTree]:
    """Unplaced pytrees of JAX arrays (dicts and tuples of arrays).

    `member` fixes the structure (a pytree of `fc.TensorType`, or a strategy of
    them); by default one is drawn with `member_types(shapes, dtypes, max_leaves)`.

    ```python
    >>> import fedcore as fc, numpy as np
    >>> from fedcore.testing import strategies as fst
    >>> tree = fst.pytrees({"w": fc.TensorType((3,), np.dtype("float32"))}).example()
    >>> str(fc.type_of(tree)["w"])
    'f32[3]'
    ```
    """
    members = _members(member, shapes, dtypes, max_leaves)
    return members.flatmap(lambda m: _fill(m, (), elements))


def server_values(
    member: PyTree[TensorType] | st.SearchStrategy | None = None,
    *,
    shapes: Sequence[tuple[int, ...]] = DEFAULT_SHAPES,
    dtypes: Sequence[Any] = DEFAULT_DTYPES,
    max_leaves: int = 3,
    elements: st.SearchStrategy | None = None,
) -> st.SearchStrategy[FederatedValue]:
    """`T@SERVER` values (see `pytrees` for the arguments)."""
    return pytrees(member, shapes=shapes, dtypes=dtypes, max_leaves=max_leaves, elements=elements).map(server_value)


def client_values(
    num_clients: IntOrStrategy | None = None,
    member: PyTree[TensorType] | st.SearchStrategy | None = None,
    *,
    shapes: Sequence[tuple[int, ...]] = DEFAULT_SHAPES,
    dtypes: Sequence[Any] = DEFAULT_DTYPES,
    max_leaves: int = 3,
    elements: st.SearchStrategy | None = None,
) -> st.SearchStrategy[FederatedValue]:
    """`{T}@CLIENTS` values: every leaf carries `num_clients` clients on its leading axis.

    `num_clients` is an int or a strategy (default `client_counts()`, 1..64);
    `member` and the rest are as in `pytrees`.

    ```python
    >>> from fedcore.testing import strategies as fst
    >>> x = fst.client_values(num_clients=5).example()
    >>> x.num_clients, x.per_client
    (5, True)
    ```
    """
    counts = _as_strategy(client_counts() if num_clients is None else num_clients)
    members = _members(member, shapes, dtypes, max_leaves)

    def draw_values(n: int) -> st.SearchStrategy[FederatedValue]:
        if n < 1:
            raise ValueError(f"client_values: num_clients must be at least 1, got {n}.")
        return members.flatmap(lambda m: _fill(m, (n,), elements)).map(clients_value)

    return counts.flatmap(draw_values)


def weights(
    num_clients: IntOrStrategy,
    *,
    min_value: float = 0.1,
    max_value: float = 10.0,
) -> st.SearchStrategy[FederatedValue]:
    """Positive client weights `{f32}@CLIENTS` in `[min_value, max_value]` (rounded to float32).

    ```python
    >>> from fedcore.testing import strategies as fst
    >>> w = fst.weights(4).example()
    >>> str(w.type), bool((w.value > 0).all())
    ('{f32}@CLIENTS', True)
    ```
    """
    if not 0 < min_value <= max_value:
        raise ValueError(f"weights: need 0 < min_value <= max_value, got {min_value} and {max_value}.")
    # Bounds are rounded to the nearest float32 (0.1 is not one).
    element = st.floats(float(np.float32(min_value)), float(np.float32(max_value)), width=32)
    return _as_strategy(num_clients).flatmap(
        lambda n: hnp.arrays(np.float32, (n,), elements=element).map(lambda w: clients_value(jnp.asarray(w)))
    )


def weighted_client_values(
    num_clients: IntOrStrategy | None = None,
    member: PyTree[TensorType] | st.SearchStrategy | None = None,
    *,
    min_weight: float = 0.1,
    max_weight: float = 10.0,
    **kwargs: Any,
) -> st.SearchStrategy[tuple[FederatedValue, FederatedValue]]:
    """Pairs `(x, w)` of client values and positive weights for the same clients.

    Keyword arguments go to `client_values`.
    """
    values = client_values(num_clients, member, **kwargs)
    return values.flatmap(
        lambda x: st.tuples(st.just(x), weights(x.num_clients, min_value=min_weight, max_value=max_weight))
    )
