"""Aggregators: how the clients' values become one server value (privacy, robustness, compression,
secure aggregation), composable like optax and plugged into every learning algorithm.

Import as `from fedcore import aggregators as fa`.
"""

from ._base import Aggregator, AggregatorOutput, Stage, chain
from . import privacy
from ._clipping import clip, zeroing
from ._noise import dp_mean, gaussian_noise
from ._reducers import mean, sum  # noqa: A004

__all__ = ["Aggregator", "AggregatorOutput", "Stage", "chain", "clip", "zeroing", "gaussian_noise", "dp_mean", "mean", "sum", "privacy"]
