"""The federated core: placements, federated types, placed values, intrinsics,
computations, iterative processes and execution strategies."""

from ._batches import ClientBatches, ClientPopulation, Cohort
from ._chunked import ChunkedStrategy, DeferredMap
from ._computations import Computation, abstract_value, computation
from ._grouping import default_group_size
from ._execution import (
    CLIENTS_AXIS,
    ExecutionStrategy,
    LoopStrategy,
    VmapStrategy,
    current_strategy,
    execution,
    register_strategy,
)
from ._intrinsics import aggregate, collect, concat, apply, broadcast, map, max, mean, min, secure_sum, sum, value, zip
from ._placements import CLIENTS, SERVER, Placement
from ._processes import IterativeProcess
from ._sharded import ShardedStrategy
from ._types import FederatedType, FunctionType, PlacementError, TensorType, same_type
from ._values import FederatedValue, clients_value, is_placed, server_value, type_of

__all__ = [
    "ClientBatches",
    "ClientPopulation",
    "Cohort",
    "CLIENTS",
    "SERVER",
    "Placement",
    "FederatedType",
    "FunctionType",
    "TensorType",
    "PlacementError",
    "same_type",
    "FederatedValue",
    "server_value",
    "clients_value",
    "is_placed",
    "type_of",
    "broadcast",
    "map",
    "mean",
    "sum",
    "min",
    "max",
    "zip",
    "value",
    "apply",
    "aggregate",
    "secure_sum",
    "collect",
    "concat",
    "Computation",
    "computation",
    "abstract_value",
    "IterativeProcess",
    "ExecutionStrategy",
    "VmapStrategy",
    "LoopStrategy",
    "ChunkedStrategy",
    "ShardedStrategy",
    "DeferredMap",
    "execution",
    "current_strategy",
    "register_strategy",
    "default_group_size",
    "CLIENTS_AXIS",
]
