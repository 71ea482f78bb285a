"""The data layer: client data, batching, partitioners, sampling and data sets."""

from .batching import batch_clients

__all__ = ["batch_clients"]
