"""The learning layer: models, losses, metrics, client work and federated algorithms."""

from . import losses, metrics, models
from .algorithms import (
    ClientWeighting,
    LearningProcess,
    ServerState,
    build_fed_eval,
    build_fed_prox,
    build_fed_sgd,
    build_scaffold,
    build_unweighted_fed_avg,
    build_weighted_fed_avg,
)
from ._client_work import LocalResult, local_evaluation, local_gradient, local_training
from .metrics import Metric
from .models import Model, from_equinox
from ._checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointManager,
    CorruptCheckpointError,
    IncompatibleCheckpointError,
    load_checkpoint,
    read_checkpoint_header,
    save_checkpoint,
    state_fingerprint,
)
from ._training import (
    Callback,
    JsonlLogger,
    ProgressBar,
    RoundRecord,
    TrainResult,
    plot_curves,
    read_metrics,
    scalar_metrics,
    train,
)

NUM_EXAMPLES = ClientWeighting.NUM_EXAMPLES
UNIFORM = ClientWeighting.UNIFORM

__all__ = [
    "losses",
    "metrics",
    "models",
    "Model",
    "from_equinox",
    "Metric",
    "ClientWeighting",
    "NUM_EXAMPLES",
    "UNIFORM",
    "LearningProcess",
    "ServerState",
    "build_weighted_fed_avg",
    "build_unweighted_fed_avg",
    "build_fed_prox",
    "build_fed_sgd",
    "build_scaffold",
    "build_fed_eval",
    "LocalResult",
    "local_training",
    "local_evaluation",
    "local_gradient",
    "train",
    "TrainResult",
    "RoundRecord",
    "Callback",
    "ProgressBar",
    "JsonlLogger",
    "scalar_metrics",
    "read_metrics",
    "plot_curves",
    "Checkpoint",
    "CheckpointManager",
    "CheckpointError",
    "CorruptCheckpointError",
    "IncompatibleCheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint_header",
    "state_fingerprint",
]
