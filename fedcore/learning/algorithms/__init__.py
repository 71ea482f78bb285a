"""Federated learning algorithms, each an `fc.IterativeProcess` composed in the core."""

from .evaluation import build_fed_eval
from .fed_avg import build_fed_prox, build_unweighted_fed_avg, build_weighted_fed_avg
from .fed_sgd import build_fed_sgd
from .process import ClientWeighting, LearningProcess, ServerState
from .scaffold import build_scaffold

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
