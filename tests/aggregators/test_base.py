"""The aggregator protocol: `chain` nests stages around a reducer (TFF's nesting)."""


import pytest

import fedcore as fc
from fedcore import aggregators as fa
from fedcore.aggregators import _base


def _recording_reducer(log):
    def next_(state, values, weights=None):
        log.append("reduce")
        return fa.AggregatorOutput(state, values, values)

    return fa.Aggregator(init=lambda template, key=None: template, next=next_)


def _recording_stage(name, log):
    def wrap(inner):
        def next_(state, values, weights=None):
            log.append(f"{name} client side")
            out = inner.next(state, values, weights)
            log.append(f"{name} server side")
            return out

        return fa.Aggregator(init=inner.init, next=next_)

    return fa.Stage(wrap=wrap, name=name)


def test_chain_runs_client_sides_in_order_and_server_sides_in_reverse():
    log = []
    agg = fa.chain(_recording_stage("a", log), _recording_stage("b", log), _recording_reducer(log))
    agg.next(None, None)
    assert log == ["a client side", "b client side", "reduce", "b server side", "a server side"]


def test_a_reducer_alone_is_an_aggregator():
    log = []
    reducer = _recording_reducer(log)
    assert fa.chain(reducer) is reducer


@pytest.mark.parametrize(
    "parts, message",
    [
        ((), "needs at least a reducer"),
        ((fa.Stage(wrap=lambda inner: inner),), "last part must be an Aggregator"),
        ((_recording_reducer([]), _recording_reducer([])), "part 0 must be a Stage.*only the last part"),
        (("clip", _recording_reducer([])), "part 0 must be a Stage.*'clip'"),
    ],
)
def test_chain_refuses_misplaced_parts(parts, message):
    with pytest.raises(TypeError, match=message):
        fa.chain(*parts)





def test_layer_uses_only_the_core():
    assert fc.FederatedValue is _base.FederatedValue
