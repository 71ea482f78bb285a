"""The data layer: client populations, sampling, partitioners, data sets and batching.

```python
>>> import jax
>>> from fedcore.data import UniformSampler
>>> from fedcore.data.datasets import mnist5k
>>> train, test = mnist5k.load_data(num_clients=50, alpha=0.5, seed=0)
>>> cohort = UniformSampler(train.client_ids, k=10, seed=0).sample(0)
>>> batch = [train.dataset(cid) for cid in cohort]
>>> sorted(batch[0])
['x', 'y']
```
"""

from . import datasets, download, partition
from ._batching import batch_clients, batch_population
from ._client_data import (
    ClientData,
    HDF5ClientData,
    InMemoryClientData,
    UnknownClientError,
    describe,
    from_clients_dict,
)
from ._sqlite import SQLiteClientData
from ._sampling import (
    ClientSampler,
    FixedCohortSampler,
    RoundRobinSampler,
    UniformSampler,
    sample_clients,
    sampler_from_dict,
)
from ._summary import DataSummary

__all__ = [
    "ClientData",
    "InMemoryClientData",
    "HDF5ClientData",
    "SQLiteClientData",
    "UnknownClientError",
    "from_clients_dict",
    "DataSummary",
    "describe",
    "sample_clients",
    "ClientSampler",
    "UniformSampler",
    "RoundRobinSampler",
    "FixedCohortSampler",
    "sampler_from_dict",
    "partition",
    "datasets",
    "download",
    "batch_clients",
    "batch_population",
]
