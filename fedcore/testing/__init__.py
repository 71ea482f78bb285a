"""Property-testing toolkit for federated algorithms (needs the `testing` extra: hypothesis).

`strategies` draws random pytrees, placed values, client counts and weights;
`laws` checks that an algorithm obeys the laws of the federated core
(permutation invariance, `mean(broadcast(x)) == x`, agreement of execution
strategies, ...) and raises `AssertionError` naming the broken law.

```python
>>> import fedcore as fc
>>> from hypothesis import given, settings
>>> from fedcore import testing as fct
>>> @settings(max_examples=10, deadline=None)
... @given(fct.client_values(num_clients=fct.client_counts(max_value=8)))
... def test_mean_ignores_client_order(x):
...     fct.check_permutation_invariance(fc.mean, x)
>>> test_mean_ignores_client_order()
```
"""

try:
    import hypothesis  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "fedcore.testing needs hypothesis; install the testing extra: pip install 'fedcore[testing]'."
    ) from error

from . import laws, strategies
from .laws import (
    assert_federated_close,
    check_mean_of_broadcast,
    check_permutation_invariance,
    check_strategies_agree,
    check_group_size_invariance,
    check_weight_scale_invariance,
    permute_clients,
    summation_atol,
)
from .strategies import (
    DEFAULT_DTYPES,
    DEFAULT_SHAPES,
    arrays,
    client_counts,
    client_values,
    default_elements,
    member_types,
    pytrees,
    server_values,
    tensor_types,
    weighted_client_values,
    weights,
)

__all__ = [
    "laws",
    "strategies",
    "assert_federated_close",
    "check_mean_of_broadcast",
    "check_permutation_invariance",
    "check_strategies_agree",
    "check_group_size_invariance",
    "check_weight_scale_invariance",
    "permute_clients",
    "summation_atol",
    "DEFAULT_DTYPES",
    "DEFAULT_SHAPES",
    "arrays",
    "client_counts",
    "client_values",
    "default_elements",
    "member_types",
    "pytrees",
    "server_values",
    "tensor_types",
    "weighted_client_values",
    "weights",
]
