"""Computations: functions of placed values, type-checked on placement and jitted."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax

from ._execution import ExecutionStrategy, current_strategy
from ._placements import CLIENTS
from ._types import FederatedType, FunctionType, TensorType
from ._values import FederatedValue, is_placed

__all__ = ["Computation", "computation", "abstract_value"]


def _type_or_none(tree: Any) -> Any:
    """`type_of`, tolerant of non-array leaves (they print as their Python type)."""

    def leaf_type(x: Any) -> Any:
        if is_placed(x):
            return x.type
        if hasattr(x, "shape") and hasattr(x, "dtype"):
            return TensorType(tuple(int(d) for d in x.shape), x.dtype)
        if isinstance(x, (bool, int, float)):
            import numpy as np

            return TensorType((), np.asarray(x).dtype)
        return type(x).__name__

    return jax.tree.map(leaf_type, tree, is_leaf=is_placed)


def abstract_value(t: FederatedType | Any, num_clients: int = 1) -> Any:
    """A shape-only stand-in for a value of type `t` (for tracing without data).

    Per-client types get `num_clients` clients on the leading axis.
    """
    to_struct = lambda lead: lambda tt: jax.ShapeDtypeStruct((*lead, *tt.shape), tt.dtype)  # noqa: E731
    is_leaf = lambda x: isinstance(x, TensorType)  # noqa: E731
    if isinstance(t, FederatedType):
        lead = (num_clients,) if (t.placement is CLIENTS and not t.all_equal) else ()
        return FederatedValue(jax.tree.map(to_struct(lead), t.member, is_leaf=is_leaf), t.placement, t.all_equal)
    return jax.tree.map(to_struct(()), t, is_leaf=is_leaf)


class Computation:
    """A jitted function of placed values with a federated type signature.

    Placement errors raise while tracing, before XLA compiles anything. One
    program is compiled per execution strategy (and per input shapes, as with
    `jax.jit`); the loop strategy runs eagerly. Computations compose: one may
    call another.

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> @fc.computation
    ... def scaled_mean(x, s):
    ...     return fc.apply(lambda m, k: m * k, fc.mean(x), s)
    >>> r = scaled_mean(fc.clients_value(jnp.ones((4, 3))), fc.server_value(jnp.float32(2)))
    >>> str(scaled_mean.type_signature)
    '(<{f32[3]}@CLIENTS,f32@SERVER> -> f32[3]@SERVER)'
    ```
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        parameter_types: Sequence[Any] | None = None,
        *,
        donate: str = "none",
    ):
        if donate not in ("none", "first", "all", "all-except-first", "warn", "warn-except-first"):
            raise ValueError(
                f"donate must be 'none', 'first', 'all', 'all-except-first', 'warn' or 'warn-except-first', got {donate!r}."
            )
        functools.update_wrapper(self, fn)
        self.fn = fn
        self._donate = donate
        self._compiled: dict[ExecutionStrategy, Callable[..., Any]] = {}
        self._signature: FunctionType | None = None
        self._donating: Computation | None = None
        if parameter_types is not None:
            self.trace(*parameter_types)

    def _record(self, *args: Any) -> Any:
        out = current_strategy().materialize(self.fn(*args))  # lazy per-client results leave as arrays
        self._signature = FunctionType(tuple(_type_or_none(a) for a in args), _type_or_none(out))
        return out

    def _program(self, strategy: ExecutionStrategy) -> Callable[..., Any]:
        program = self._compiled.get(strategy)
        if program is None:
            # A distinct function per strategy: jax caches traces per function, and
            # the strategy (a context variable) is not among the arguments.
            def record(*args: Any) -> Any:
                return self._record(*args)

            if self._donate == "first":
                # equinox donates "all-except-first": hand it the other arguments first.
                def record_first_last(rest: tuple[Any, ...], first: Any) -> Any:
                    return self._record(first, *rest)

                donating = eqx.filter_jit(record_first_last, donate="all-except-first")
                program = lambda first, *rest: donating(rest, first)  # noqa: E731
            else:
                program = eqx.filter_jit(record, donate=self._donate)
            self._compiled[strategy] = program
        return program

    def __call__(self, *args: Any) -> Any:
        strategy = current_strategy()
        if not strategy.jit:
            return self._record(*args)
        return self._program(strategy)(*strategy.place_arguments(args))

    def donating(self) -> "Computation":
        """This computation with its first argument donated (`donate="first"`), e.g. a process's state.

        XLA may then write the result into the first argument's buffers; the
        caller must not use that argument again (its arrays are deleted). The
        donating version is made once and keeps its own compiled programs.

        ```python
        >>> import fedcore as fc, jax.numpy as jnp
        >>> add = fc.computation(lambda s, x: fc.apply(jnp.add, s, fc.sum(x)))
        >>> s = fc.server_value(jnp.zeros(2))
        >>> new = add.donating()(s, fc.clients_value(jnp.ones((3, 2))))
        >>> s.value.is_deleted(), new.value.tolist()
        (True, [3.0, 3.0])
        ```
        """
        if self._donate == "first":
            return self
        if self._donating is None:
            self._donating = Computation(self.fn, donate="first")
        return self._donating

    def trace(self, *parameter_types: Any, num_clients: int = 1) -> FunctionType:
        """Type-checks the computation on abstract arguments of the given types; returns its signature.

        Nothing is compiled or run: placement errors raise here.
        """
        abstract = [abstract_value(t, num_clients) for t in parameter_types]
        eqx.filter_eval_shape(self._record, *abstract)
        assert self._signature is not None
        return self._signature

    @property
    def type_signature(self) -> FunctionType:
        """The signature of the last traced call (or of `parameter_types`).

        A computation without parameters (a process's `initialize`) is traced
        for it on first access: nothing is compiled or run.
        """
        if self._signature is None and _takes_no_arguments(self.fn):
            self.trace()
        if self._signature is None:
            raise ValueError(
                f"{self.__name__}: the type signature is known after the first call, "
                "or when the computation is given parameter_types."
            )
        return self._signature

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        # Behave like a function when used as a method.
        if instance is None:
            return self
        return functools.partial(self, instance)

    def __repr__(self) -> str:
        sig = f" {self._signature}" if self._signature is not None else ""
        return f"Computation({self.__name__}{sig})"


def _takes_no_arguments(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return not any(p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params)


def computation(
    fn: Callable[..., Any] | None = None,
    *,
    parameter_types: Sequence[Any] | None = None,
    donate: str = "none",
) -> Any:
    """Decorator: turns a function of placed values into a `Computation`.

    ```python
    >>> import fedcore as fc
    >>> @fc.computation
    ... def average(x):
    ...     return fc.mean(x)
    ```

    `parameter_types` (federated types, e.g. from `fc.type_of`) type-checks the
    computation at once; `donate` is passed to `equinox.filter_jit`, or is
    `"first"`: the first argument's buffers (e.g. a process's state) are
    donated, so XLA may update them in place; the caller must not use that
    argument again.
    """
    if fn is None:
        return lambda f: Computation(f, parameter_types, donate=donate)
    return Computation(fn, parameter_types, donate=donate)
