"""Golden test: `build_weighted_fed_avg` reproduces TensorFlow Federated 0.87's numbers.

The reference numbers below are facts recorded from a run of TFF 0.87's
`tff.learning.algorithms.build_weighted_fed_avg` on the formula-defined data
of `_client` (no randomness anywhere):

- 3 clients `c = 0, 1, 2` with `n_c = 20 + 7 c` examples of 784 pixels,
  pipeline `.repeat(10).batch(20)` (no shuffle);
- model: Keras `Dense(10)` on 784 inputs, zero-initialised, softmax
  cross-entropy on the logits (our `models.linear()`);
- client optimizer SGD(0.1), server optimizer SGD(1.0), clients weighted by
  the number of examples they processed; 5 rounds with all 3 clients in order.

Weight statistics are float64 reductions of the float32 weights in Keras'
order: the kernel `[784, 10]` (our `weight.T`) then the bias `[10]`.
"""

from __future__ import annotations

import numpy as np
import optax
import pytest

import fedcore as fc
from fedcore.data import batch_clients
from fedcore.learning import build_weighted_fed_avg, models

TFF_LOSS = [2.161468029022217, 2.116804361343384, 2.0922248363494873, 2.075746536254883, 2.0628068447113037]
TFF_ACCURACY = [0.33209875226020813, 0.2888889014720917, 0.28148147463798523, 0.27037036418914795, 0.26913580298423767]
TFF_NUM_EXAMPLES = 810  # (20 + 27 + 34) examples x 10 epochs, every round
TFF_NUM_BATCHES = 41  # ceil(200/20) + ceil(270/20) + ceil(340/20) = 10 + 14 + 17
TFF_WEIGHT_NORM = [0.3146711274956198, 0.5404146353566487, 0.7130571042118425, 0.8544186774637401, 0.9770817583483228]
TFF_WEIGHT_SUM = [
    -3.9820804431656143e-07,
    -2.671058609848842e-07,
    -2.5745248422026634e-07,
    -1.5032128430902958e-07,
    -2.1935557015240192e-07,
]
TFF_FINAL_ABS_SUM = 64.16414243730833
TFF_FINAL_SIGNED_CHECKSUM = 1.2685616724193096

RTOL = 1e-5
# The weight sums are zero in exact arithmetic: the softmax cross-entropy gradient w.r.t. the
# logits, `softmax(z) - onehot(y)`, sums to 0 over the classes, so every SGD step (and so every
# delta and the model, from zero) has class-sums of zero in each kernel row and in the bias.
# TFF's ~2e-7 are float32 rounding noise on weights of size ~0.1 summed over 7850 entries;
# a relative comparison of noise is meaningless, so the sums are compared absolutely, to a bound
# on that noise (7850 terms * eps_f32 * max|w| ~ 1e-4 is the worst case; it is far smaller in practice).
SUM_ATOL = 1e-5


def _client(c: int) -> dict[str, np.ndarray]:
    n = 20 + 7 * c
    i = np.arange(n)
    j = np.arange(784)
    x = ((c * 131 + i[:, None] * 31 + j[None, :] * 17) % 256).astype(np.float32) / np.float32(2550)
    y = ((c * 3 + i * 7 + (i * i) % 5) % 10).astype(np.int32)
    return {"x": x, "y": y}


def _keras_order(params) -> np.ndarray:
    """The float64 concatenation [kernel.ravel(), bias] with kernel = our weight.T ([784, 10])."""
    kernel = np.asarray(params.weight, np.float32).T.astype(np.float64)
    return np.concatenate([kernel.ravel(), np.asarray(params.bias, np.float32).astype(np.float64)])


@pytest.fixture(scope="module")
def golden_data():
    return batch_clients([_client(c) for c in range(3)], batch_size=20, epochs=10)


@pytest.fixture(scope="module")
def process():
    return build_weighted_fed_avg(models.linear(), optax.sgd(0.1), optax.sgd(1.0))


def _check_rounds(process, data, rounds: int) -> np.ndarray:
    state = process.initialize()
    for r in range(rounds):
        state, metrics = process.next(state, data)
        train = metrics["train"]
        assert float(train["loss"]) == pytest.approx(TFF_LOSS[r], rel=RTOL), f"round {r} loss"
        assert float(train["accuracy"]) == pytest.approx(TFF_ACCURACY[r], rel=RTOL), f"round {r} accuracy"
        assert int(train["num_examples"]) == TFF_NUM_EXAMPLES, f"round {r} num_examples"
        assert int(train["num_batches"]) == TFF_NUM_BATCHES, f"round {r} num_batches"
        assert float(metrics["client_work"]["train"]["loss"]) == float(train["loss"])  # TFF's full path
        flat = _keras_order(process.get_model_weights(state))
        assert np.linalg.norm(flat) == pytest.approx(TFF_WEIGHT_NORM[r], rel=RTOL), f"round {r} weight norm"
        assert flat.sum() == pytest.approx(TFF_WEIGHT_SUM[r], abs=SUM_ATOL), f"round {r} weight sum"
        assert int(state.value.round_num) == r + 1
    return flat


def test_weighted_fed_avg_matches_tff_for_five_rounds(process, golden_data):
    flat = _check_rounds(process, golden_data, rounds=5)
    assert np.abs(flat).sum() == pytest.approx(TFF_FINAL_ABS_SUM, rel=RTOL)
    signed_checksum = float(np.sum(flat * ((np.arange(flat.size) % 7) - 3)))
    assert signed_checksum == pytest.approx(TFF_FINAL_SIGNED_CHECKSUM, rel=RTOL)


def test_weighted_fed_avg_matches_tff_under_the_loop_strategy(process, golden_data):
    # The loop strategy runs eagerly (seconds a round here): the first round checks the same facts.
    with fc.execution("loop"):
        _check_rounds(process, golden_data, rounds=1)


def test_golden_data_shapes_are_what_tff_sees(golden_data):
    # 10 epochs of 20, 27 and 34 examples in batches of 20: 10, 14 and 17 batches, short last ones.
    steps = np.asarray(golden_data.mask.any(axis=2).sum(axis=1))
    assert steps.tolist() == [10, 14, 17]
    last = [int(golden_data.mask[c, s - 1].sum()) for c, s in enumerate(steps)]
    assert last == [20, 270 % 20, 20]  # 200 and 340 visits fill their last batch; 270 leaves 10
