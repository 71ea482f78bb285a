"""Choosing which clients take part in a round.

`sample_clients` draws `k` distinct clients uniformly from a JAX key. The
samplers wrap a policy whose `sample(round_num)` is a pure function of its
(serialisable) configuration and the round number, so a training loop that
checkpoints `sampler.to_dict()` and its round counter resumes bit-for-bit.

```python
>>> import jax
>>> from fedcore.data import UniformSampler, sample_clients, sampler_from_dict
>>> ids = [f"c{i}" for i in range(10)]
>>> len(set(sample_clients(ids, 3, jax.random.key(0))))
3
>>> s = UniformSampler(ids, k=3, seed=42)
>>> s.sample(7) == sampler_from_dict(s.to_dict()).sample(7)
True
```
"""

from __future__ import annotations

import abc
import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

import jax
import numpy as np
from jaxtyping import PRNGKeyArray

__all__ = [
    "sample_clients",
    "ClientSampler",
    "UniformSampler",
    "RoundRobinSampler",
    "FixedCohortSampler",
    "sampler_from_dict",
]

T = TypeVar("T")


def _check_k(k: Any, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k (clients per round) must be an int, got {type(k).__name__}.")
    k = int(k)
    if k < 1:
        raise ValueError(f"k (clients per round) must be at least 1, got {k}.")
    if k > n:
        raise ValueError(
            f"Cannot sample k={k} distinct clients from a population of {n}; use k <= {n}."
        )
    return k


def _check_round(round_num: Any) -> int:
    if isinstance(round_num, bool) or not isinstance(round_num, (int, np.integer)):
        raise TypeError(f"round_num must be an int, got {type(round_num).__name__}.")
    if round_num < 0:
        raise ValueError(f"round_num must be non-negative, got {round_num}.")
    return int(round_num)


@functools.partial(jax.jit, static_argnums=1)
def _permutation(key: PRNGKeyArray, n: int) -> jax.Array:
    return jax.random.permutation(key, n)


def sample_clients(client_ids: Sequence[T], k: int, key: PRNGKeyArray) -> list[T]:
    """`k` distinct clients drawn uniformly without replacement, reproducibly from `key`.

    ```python
    >>> import jax
    >>> sample_clients(["a", "b", "c"], 2, jax.random.key(1)) == sample_clients(["a", "b", "c"], 2, jax.random.key(1))
    True
    ```
    """
    ids = list(client_ids)
    if len(set(ids)) != len(ids):
        raise ValueError("sample_clients got duplicate client ids; the population must list each client once.")
    k = _check_k(k, len(ids))
    idx = np.asarray(_permutation(key, len(ids)))[:k]  # the first k of a uniform random permutation
    return [ids[i] for i in idx]


def _ids_tuple(client_ids: Sequence[str]) -> tuple[str, ...]:
    if isinstance(client_ids, str):
        raise TypeError("client_ids must be a sequence of ids, not a single string.")
    ids = tuple(client_ids)
    if not ids:
        raise ValueError("A sampler needs at least one client id.")
    for c in ids:
        if not isinstance(c, str):
            raise TypeError(f"Client ids are strings; got {c!r} ({type(c).__name__}).")
    if len(set(ids)) != len(ids):
        raise ValueError("client_ids has duplicates; list each client once.")
    return ids


class ClientSampler(abc.ABC):
    """A client-selection policy: `sample(round_num)` is a pure function of the config and round.

    `to_dict()` returns the whole configuration as plain JSON-able values;
    `sampler_from_dict` rebuilds an equal sampler from it.
    """

    kind: ClassVar[str]
    client_ids: tuple[str, ...]

    @abc.abstractmethod
    def sample(self, round_num: int) -> list[str]:
        """The ids of the clients taking part in round `round_num` (0-based)."""

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain ints, strings and lists (for checkpoints)."""
        out: dict[str, Any] = {"kind": self.kind}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out


@dataclasses.dataclass(frozen=True)
class UniformSampler(ClientSampler):
    """`k` clients uniformly without replacement each round, from key `fold_in(key(seed), round_num)`.

    ```python
    >>> s = UniformSampler(["a", "b", "c", "d"], k=2, seed=0)
    >>> s.sample(3) == s.sample(3), len(s.sample(3))
    (True, 2)
    ```
    """

    client_ids: tuple[str, ...]
    k: int
    seed: int = 0
    kind: ClassVar[str] = "uniform"

    def __post_init__(self):
        object.__setattr__(self, "client_ids", _ids_tuple(self.client_ids))
        object.__setattr__(self, "k", _check_k(self.k, len(self.client_ids)))
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise TypeError(f"seed must be an int, got {type(self.seed).__name__}.")
        object.__setattr__(self, "seed", int(self.seed))

    def key(self, round_num: int) -> PRNGKeyArray:
        """The JAX key that round `round_num` samples with."""
        return jax.random.fold_in(jax.random.key(self.seed), _check_round(round_num))

    def sample(self, round_num: int) -> list[str]:
        return sample_clients(self.client_ids, self.k, self.key(round_num))


@dataclasses.dataclass(frozen=True)
class RoundRobinSampler(ClientSampler):
    """Clients in a fixed order, `k` at a time, wrapping around.

    Round `r` takes positions `r*k, ..., r*k + k - 1` (mod the population) of
    `client_ids`, or of a permutation of them drawn from `seed` when one is
    given. Every client takes part once every `len(client_ids) / k` rounds.

    ```python
    >>> s = RoundRobinSampler(["a", "b", "c", "d", "e"], k=2)
    >>> [s.sample(r) for r in range(3)]
    [['a', 'b'], ['c', 'd'], ['e', 'a']]
    ```
    """

    client_ids: tuple[str, ...]
    k: int
    seed: int | None = None
    kind: ClassVar[str] = "round_robin"

    def __post_init__(self):
        object.__setattr__(self, "client_ids", _ids_tuple(self.client_ids))
        object.__setattr__(self, "k", _check_k(self.k, len(self.client_ids)))
        if self.seed is not None:
            if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
                raise TypeError(f"seed must be an int or None, got {type(self.seed).__name__}.")
            object.__setattr__(self, "seed", int(self.seed))

    @functools.cached_property
    def order(self) -> tuple[str, ...]:
        """The order in which clients are visited."""
        if self.seed is None:
            return self.client_ids
        perm = np.asarray(jax.random.permutation(jax.random.key(self.seed), len(self.client_ids)))
        return tuple(self.client_ids[i] for i in perm)

    def sample(self, round_num: int) -> list[str]:
        start = _check_round(round_num) * self.k
        n = len(self.client_ids)
        order = self.order
        return [order[(start + i) % n] for i in range(self.k)]


@dataclasses.dataclass(frozen=True)
class FixedCohortSampler(ClientSampler):
    """The same clients every round (e.g. cross-silo training where every client takes part).

    ```python
    >>> FixedCohortSampler(["a", "b"]).sample(5)
    ['a', 'b']
    ```
    """

    client_ids: tuple[str, ...]
    kind: ClassVar[str] = "fixed"

    def __post_init__(self):
        object.__setattr__(self, "client_ids", _ids_tuple(self.client_ids))

    def sample(self, round_num: int) -> list[str]:
        _check_round(round_num)
        return list(self.client_ids)


_KINDS: dict[str, type[ClientSampler]] = {
    cls.kind: cls for cls in (UniformSampler, RoundRobinSampler, FixedCohortSampler)
}


def sampler_from_dict(config: dict[str, Any]) -> ClientSampler:
    """Rebuild a sampler from `sampler.to_dict()`."""
    if not isinstance(config, dict) or "kind" not in config:
        raise ValueError(f"Expected a dict with a 'kind' key (from sampler.to_dict()), got {config!r}.")
    kind = config["kind"]
    if kind not in _KINDS:
        raise ValueError(f"Unknown sampler kind {kind!r}; known kinds: {sorted(_KINDS)}.")
    cls = _KINDS[kind]
    fields = {f.name for f in dataclasses.fields(cls)}
    extra = set(config) - fields - {"kind"}
    if extra:
        raise ValueError(f"Unexpected keys for a {kind!r} sampler: {sorted(extra)}.")
    return cls(**{k: v for k, v in config.items() if k != "kind"})
