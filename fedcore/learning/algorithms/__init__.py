"""Federated learning algorithms, each an `fc.IterativeProcess` composed in the core."""

from ._evaluation import build_fed_eval
from ._fed_avg import build_fed_prox, build_unweighted_fed_avg, build_weighted_fed_avg
from ._fed_sgd import build_fed_sgd
from ._process import ClientWeighting, LearningProcess, ServerState
from ._scaffold import build_scaffold

__all__ = [
    "build_weighted_fed_avg",
    "build_unweighted_fed_avg",
    "build_fed_prox",
    "build_fed_sgd",
    "build_scaffold",
    "build_fed_eval",
    "ClientWeighting",
    "LearningProcess",
    "ServerState",
]
