"""Iterative processes: `initialize() -> state`, `next(state, data) -> (state, metrics)`."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

import jax

from ._computations import Computation
from ._types import same_type
from ._values import type_of

__all__ = ["IterativeProcess"]


def _layout(tree: Any) -> tuple[Any, ...]:
    """Structure (placements included) and leaf shapes and dtypes: equal layouts have equal types."""
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((getattr(x, "shape", None), getattr(x, "dtype", type(x))) for x in leaves)


def _as_computation(fn: Callable[..., Any]) -> Computation:
    return fn if isinstance(fn, Computation) else Computation(fn)


class _SignedMethod:
    """A process method that also answers `.type_signature` from its computation (TFF's
    `process.initialize.type_signature`, `process.next.type_signature`)."""

    def __init__(self, method: Callable[..., Any], computation: str):
        functools.update_wrapper(self, method)
        self._method, self._computation = method, computation

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        if instance is None:
            return self
        return _BoundSignedMethod(self._method.__get__(instance, owner), getattr(instance, self._computation))


class _BoundSignedMethod:
    def __init__(self, method: Callable[..., Any], computation: Computation):
        functools.update_wrapper(self, method)
        self._method, self._computation = method, computation

    def __call__(self, *args: Any) -> Any:
        return self._method(*args)

    @property
    def type_signature(self) -> Any:
        return self._computation.type_signature

    def __repr__(self) -> str:
        return f"<{self.__name__} of {self._computation!r}>"


def signed(computation: str) -> Callable[[Callable[..., Any]], _SignedMethod]:
    """Marks a process method as running the computation in attribute `computation` (for `.type_signature`).

    A subclass that overrides `initialize` or `next` decorates its method the same way.
    """
    return lambda method: _SignedMethod(method, computation)


class IterativeProcess:
    """A pair of computations: `initialize() -> S` and `next(S, ...) -> (S, M)`.

    `next` must return a state of exactly the type it was given (checked on
    every call, a cheap comparison of shapes and placements), so a process can
    run for any number of rounds.

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> p = fc.IterativeProcess(
    ...     initialize=lambda: fc.server_value(jnp.float32(0)),
    ...     next=lambda s, x: (fc.apply(lambda a, b: a + b, s, fc.sum(x)), fc.sum(x)))
    >>> s = p.initialize()
    >>> s, m = p.next(s, fc.clients_value(jnp.ones(3)))
    >>> float(s)
    3.0
    >>> print(p.initialize.type_signature)
    ( -> f32@SERVER)
    >>> print(p.next.type_signature)
    (<f32@SERVER,{f32}@CLIENTS> -> <f32@SERVER,f32@SERVER>)
    ```
    """

    def __init__(self, initialize: Callable[[], Any], next: Callable[..., tuple[Any, Any]]):  # noqa: A002
        self.initialize_fn = _as_computation(initialize)
        self.next_fn = _as_computation(next)

    @signed("initialize_fn")
    def initialize(self) -> Any:
        """Returns the initial state (`.type_signature`: `( -> S)`, known before any call)."""
        return self.initialize_fn()

    @signed("next_fn")
    def next(self, state: Any, *args: Any) -> tuple[Any, Any]:  # noqa: A003
        """Runs one round: returns `(new_state, metrics)`.

        `.type_signature` is `(<S, ...> -> <S, M>)` in TFF notation, known after
        the first round (the client data's shapes set the argument types).
        """
        out = self.next_fn(state, *args)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError(
                f"IterativeProcess.next must return (state, metrics); got {type(out).__name__}."
            )
        new_state, metrics = out
        if _layout(state) == _layout(new_state):  # the cheap check of every round
            return new_state, metrics
        before, after = type_of(state), type_of(new_state)
        if not same_type(before, after):
            raise TypeError(
                f"IterativeProcess.next changed the state type: it was given {before} "
                f"and returned {after}; a process's state type must stay fixed."
            )
        return new_state, metrics

    def donating(self) -> "IterativeProcess":
        """The same process with `next` donating the state it is given (see `Computation.donating`).

        Each round may then reuse the old state's buffers for the new one
        (memory: one state instead of two on an accelerator); the old state's
        arrays are deleted, so only a loop that drops every old state may use
        it (`fedcore.learning.train(..., donate_state=True)` does).
        """
        clone = copy.copy(self)
        clone.next_fn = self.next_fn.donating()
        return clone

    @property
    def state_type(self) -> Any:
        """The type of the state (traced from `initialize`, nothing is run)."""
        import equinox as eqx

        return type_of(eqx.filter_eval_shape(self.initialize_fn.fn))
