"""fedcore: a typed federated core and federated learning on JAX.

The core is imported with `fedcore`; `fedcore.learning`, `fedcore.data` and
`fedcore.testing` are imported on first use (as TFF users write
`tff.learning...`), so `import fedcore` stays fast and optional extras
(hypothesis for `fedcore.testing`) stay optional.

```python
>>> import fedcore as fc
>>> import jax.numpy as jnp
>>> x = fc.clients_value(jnp.arange(4.0))
>>> float(fc.mean(x))
1.5
>>> fc.learning.models.linear().input_key
'x'
```
"""

import importlib as _importlib

from .core import *  # noqa: F401,F403
from .core import __all__ as _core_all

__version__ = "0.1.0"

__all__ = [*_core_all, "__version__"]

_LAZY = ("learning", "data", "testing", "aggregators", "cli")


def __getattr__(name: str):
    if name in _LAZY:
        try:
            return _importlib.import_module(f".{name}", __name__)
        except ImportError as e:
            # An AttributeError keeps `hasattr(fedcore, "testing")` False without the extra; the cause says why.
            raise AttributeError(f"fedcore.{name} cannot be imported: {e}") from e
    raise AttributeError(f"module 'fedcore' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])
