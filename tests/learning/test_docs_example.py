"""docs/learning.md's worked example is FedAvg with server momentum.

tests/test_docs.py runs every block of the page; here the worked example
(written with public core and learning pieces) is read from the page (the
python block after the `<!-- worked-example -->` marker), run verbatim and
checked against `build_weighted_fed_avg` with a momentum server optimizer, so
the page cannot drift from what is tested.
"""

from __future__ import annotations

import pathlib
import re

import numpy as np
import optax
from hypothesis import given, settings

from fedcore import testing as fct
from fedcore.learning import build_weighted_fed_avg

from ._helpers import MODEL, client_datasets, fixed_batches, linear_params

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "learning.md"


def _worked_example() -> str:
    after_marker = DOC.read_text().split("<!-- worked-example -->", 1)[1]
    match = re.search(r"```python\n(.*?)\n```", after_marker, re.DOTALL)
    assert match, "docs/learning.md: no python block after the worked-example marker"
    return match.group(1)


WORKED_EXAMPLE = _worked_example()
_NAMESPACE: dict = {}
exec(compile(WORKED_EXAMPLE, str(DOC), "exec"), _NAMESPACE)  # noqa: S102 - our own docs
build_fed_avg_with_server_momentum = _NAMESPACE["build_fed_avg_with_server_momentum"]


LR, MOMENTUM = 0.1, 0.9
OURS = build_fed_avg_with_server_momentum(MODEL, client_learning_rate=LR, momentum=MOMENTUM)
BUILTIN = build_weighted_fed_avg(MODEL, optax.sgd(LR), optax.sgd(1.0, momentum=MOMENTUM))


@settings(max_examples=10)
@given(client_datasets(3, max_examples=8), client_datasets(3, max_examples=8), linear_params())
def test_the_worked_example_is_fed_avg_with_server_momentum(first_round, second_round, params):
    # Two rounds on different data: the second uses the velocity left by the first.
    ours = OURS.set_model_weights(OURS.initialize(), params)
    theirs = BUILTIN.set_model_weights(BUILTIN.initialize(), params)
    for clients in (first_round, second_round):
        data = fixed_batches(clients, 4, 2, 8)
        ours, our_metrics = OURS.next(ours, data)
        theirs, their_metrics = BUILTIN.next(theirs, data)
        fct.assert_federated_close(
            OURS.get_model_weights(ours), BUILTIN.get_model_weights(theirs), rtol=1e-6, atol=1e-6, law="model"
        )
        # Our velocity is optax's momentum trace of the pseudo-gradient -mean_delta, negated.
        velocity, trace = ours.value.opt_state, theirs.value.opt_state[0].trace
        np.testing.assert_allclose(velocity.weight, -np.asarray(trace.weight), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(velocity.bias, -np.asarray(trace.bias), rtol=1e-6, atol=1e-6)
        for name in ("loss", "accuracy", "num_examples"):
            assert abs(float(our_metrics["train"][name]) - float(their_metrics["train"][name])) <= 1e-6
