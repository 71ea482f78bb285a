"""Placements: where a federated value lives."""

from __future__ import annotations

import enum

__all__ = ["Placement", "SERVER", "CLIENTS", "CLIENTS_AXIS"]


class Placement(enum.Enum):
    """The two placements of the federated core.

    `SERVER` holds one value; `CLIENTS` holds one value per client (or a single
    value known to be equal on every client).

    ```python
    >>> import fedcore as fc
    >>> fc.SERVER
    SERVER
    ```
    """

    SERVER = "SERVER"
    CLIENTS = "CLIENTS"

    def __repr__(self) -> str:
        return self.value

    __str__ = __repr__


SERVER = Placement.SERVER
CLIENTS = Placement.CLIENTS

#: The axis name of the clients under strategies that vmap them: a client
#: function may reduce over the clients run together with it, e.g.
#: `jax.lax.pmax(x, CLIENTS_AXIS)`.
CLIENTS_AXIS = "clients"
