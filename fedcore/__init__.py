"""fedcore: a typed federated core and federated learning on JAX.

```python
>>> import fedcore as fc
>>> import jax.numpy as jnp
>>> x = fc.clients_value(jnp.arange(4.0))
>>> float(fc.mean(x))
1.5
```
"""

from .core import *  # noqa: F401,F403
from .core import __all__ as _core_all

__version__ = "0.1.0"

__all__ = [*_core_all, "__version__"]
