"""Checks of what users hand the learning layer, each naming the problem and the fix.

Build-time checks (`check_build_args`) run once in every algorithm builder;
`check_client_data` and `check_state` run on the host at the start of every
`LearningProcess.next`, before anything is traced or compiled. The data check
reads only shapes, dtypes and the labels (one integer per example, a small
fraction of a round's data); its model-shape part is traced once per
feature shape and cached.
"""

from __future__ import annotations

import inspect
import weakref
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import fedcore.core as fc
from fedcore import aggregators as fa

from ...core._batches import ClientBatches
from .. import losses as _losses
from ..metrics import check_metric
from ..models import Model

__all__ = ["check_build_args", "check_client_data", "check_state", "check_callbacks", "explain_non_finite"]

_SPARSE_LOSSES = (_losses.sparse_softmax_cross_entropy, _losses.sparse_cross_entropy_on_probs)


def _name(x: Any) -> str:
    return getattr(x, "__qualname__", None) or getattr(x, "__name__", None) or type(x).__name__


def check_model(model: Any, what: str = "model") -> None:
    """A `Model` (not a factory returning one) with `Metric`s."""
    if isinstance(model, Model):
        for m in model.metrics:
            check_metric(m)
        return
    if callable(model):
        raise TypeError(
            f"{what} must be a fedcore.learning.Model, got the function {_name(model)!r}; "
            f"call it: {_name(model)}() (TFF takes a model function, fedcore takes the model)."
        )
    raise TypeError(
        f"{what} must be a fedcore.learning.Model (e.g. models.from_equinox(...)), got {type(model).__name__}."
    )


def check_optimizer(opt: Any, what: str) -> None:
    """An `optax.GradientTransformation` (not a factory, not a learning rate)."""
    if isinstance(opt, optax.GradientTransformation):
        return
    if isinstance(opt, (int, float)) and not isinstance(opt, bool):
        raise TypeError(
            f"{what} must be an optax.GradientTransformation, got the number {opt!r}; "
            f"pass an optimizer with that learning rate, e.g. optax.sgd({opt!r})."
        )
    if callable(opt):
        raise TypeError(
            f"{what} must be an optax.GradientTransformation, got the function {_name(opt)!r}; "
            f"call it with a learning rate, e.g. {_name(opt)}(0.1) (TFF takes optimizer functions, "
            "fedcore takes the optimizer)."
        )
    raise TypeError(f"{what} must be an optax.GradientTransformation (e.g. optax.sgd(0.1)), got {type(opt).__name__}.")


def check_build_args(model: Any, model_aggregator: Any = None, **optimizers: Any) -> None:
    """Every builder's one-line check: the model, the model aggregator and each named optimizer."""
    check_model(model)
    if model_aggregator is not None:
        check_aggregator(model_aggregator)
    for what, opt in optimizers.items():
        check_optimizer(opt, what)


def check_aggregator(agg: Any) -> None:
    """An `fa.Aggregator` (a reducer or a chain ending in one), not a stage, factory or class."""
    if isinstance(agg, fa.Aggregator):
        return
    if isinstance(agg, fa.Stage):
        raise TypeError(
            f"model_aggregator must be an aggregator, got the stage {agg.name!r} alone; "
            f"end it with a reducer: fa.chain(<the stage>, fa.mean())."
        )
    if callable(agg):
        raise TypeError(
            f"model_aggregator must be an fa.Aggregator, got the function {_name(agg)!r}; "
            f"call it: {_name(agg)}() (TFF takes aggregation factories, fedcore takes the aggregator)."
        )
    raise TypeError(
        f"model_aggregator must be an fa.Aggregator (e.g. fa.mean(), fa.dp_mean(...)), got {type(agg).__name__}."
    )


_CALLBACK_METHODS = ("on_train_begin", "on_round_end", "on_train_end")


def check_callbacks(callbacks: Any) -> None:
    """Each callback has at least one of the `Callback` methods (subclass `fedcore.learning.Callback`)."""
    for cb in callbacks:
        if inspect.isclass(cb):
            raise TypeError(f"callbacks must be callback objects, got the class {cb.__name__}; call it: {cb.__name__}().")
        if not any(callable(getattr(cb, m, None)) for m in _CALLBACK_METHODS):
            raise TypeError(
                f"callbacks must have the methods {', '.join(_CALLBACK_METHODS)} "
                f"(subclass fedcore.learning.Callback), got {type(cb).__name__}."
            )


def check_state(process: Any, state: Any) -> None:
    """The state came from this process's `initialize` (same type): names both types otherwise."""
    expected = getattr(process, "_checked_state_type", None)
    if expected is None:
        expected = process.state_type
        process._checked_state_type = expected
    if not fc.is_placed(state):
        raise TypeError(f"next expects the state from process.initialize() ({expected}), got {type(state).__name__}.")
    actual = fc.type_of(state)
    if not fc.same_type(actual, expected):
        inner = lambda v: type(v).__name__  # noqa: E731
        raise TypeError(
            f"next was given a state of type {actual} (a {inner(state.value)}), but this process's state is "
            f"{expected}: the state comes from another process or model; start from this process's initialize()."
        )


# Per model: the feature shapes (and dtypes) already checked against it.
_checked_shapes: "weakref.WeakKeyDictionary[Model, dict]" = weakref.WeakKeyDictionary()


def _client_batches(data: Any) -> ClientBatches | None:
    if isinstance(data, ClientBatches):
        return data
    if fc.is_placed(data) and isinstance(data.value, ClientBatches):
        return data.value
    return None


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_client_data(model: Model, data: Any) -> None:
    """The client data fits the model: keys, feature shape, label shape, dtype and range."""
    if isinstance(data, dict) and "mask" in data:  # materialized batches [C, S, B, ...]
        _check_keys(model, data.keys() - {"mask"})
        return
    batches = _client_batches(data)
    if batches is None:
        return
    _check_keys(model, batches.data.keys())
    x, y = batches.data[model.input_key], batches.data[model.label_key]
    predictions = _prediction_shape(model, x)
    label_shape = tuple(y.shape[2:])
    if model.loss in _SPARSE_LOSSES:
        _check_sparse_labels(model, y, predictions, batches)
    elif model.loss is _losses.mean_squared_error and label_shape != predictions:
        raise ValueError(
            f"The model predicts shape {predictions} per example but the labels {model.label_key!r} have "
            f"shape {label_shape} per example; mean_squared_error needs equal shapes "
            f"(reshape the labels to {predictions})."
        )


def _check_keys(model: Model, keys: Any) -> None:
    missing = [k for k in (model.input_key, model.label_key) if k not in keys]
    if missing:
        raise KeyError(
            f"The client data has the keys {sorted(keys)} but the model reads {missing} "
            f"(input_key={model.input_key!r}, label_key={model.label_key!r}); rename the data's keys or "
            "build the model with from_equinox(..., input_key=..., label_key=...)."
        )


def _prediction_shape(model: Model, x: Any) -> tuple[int, ...]:
    feature = (tuple(x.shape[2:]), np.dtype(x.dtype))
    seen = _checked_shapes.setdefault(model, {})
    if feature not in seen:
        example = jax.ShapeDtypeStruct((1, *feature[0]), feature[1])
        try:
            out = jax.eval_shape(model.apply, model.initial_params, example)
        except Exception as e:  # noqa: BLE001 - re-raised with the shapes that do not fit
            raise ValueError(
                f"The client inputs {model.input_key!r} have shape {feature[0]} per example, which the model "
                f"does not accept ({type(e).__name__}: {str(e).splitlines()[0][:200]}); reshape the inputs "
                "to the model's input shape or build the model for these inputs."
            ) from None
        seen[feature] = tuple(out.shape[1:])
    return seen[feature]


def _check_sparse_labels(model: Model, y: Any, predictions: tuple[int, ...], batches: ClientBatches) -> None:
    key = model.label_key
    per_example = tuple(y.shape[2:])
    if per_example != ():
        fix = (
            "they look one-hot: pass labels.argmax(-1)"
            if per_example == predictions
            else "flatten them: labels.reshape(-1)"
            if per_example == (1,)
            else "give one integer class per example"
        )
        raise ValueError(
            f"The loss {_name(model.loss)} expects one integer class label per example (shape ()), but the labels "
            f"{key!r} have shape {per_example} per example; {fix}."
        )
    if not jnp.issubdtype(y.dtype, jnp.integer):
        raise TypeError(
            f"The loss {_name(model.loss)} expects integer class labels, but the labels {key!r} are {y.dtype}; "
            "cast them with labels.astype(np.int32), or use losses.mean_squared_error for real-valued targets."
        )
    if not predictions or not all(_is_concrete(a) for a in (y, batches.index, batches.mask)):
        return
    num_classes = predictions[-1]
    labels = np.asarray(y)
    index, mask = np.asarray(batches.index), np.asarray(batches.mask)
    bad = (labels < 0) | (labels >= num_classes)
    if not bad.any():
        return
    # Only examples some real batch slot uses count (padding rows may hold anything).
    used = np.zeros(labels.shape, bool)
    for c in range(labels.shape[0]):
        used[c, index[c][mask[c]]] = True
    bad &= used
    if bad.any():
        client, example = (int(i[0]) for i in np.nonzero(bad))
        raise ValueError(
            f"Client {client} has the label {int(labels[client, example])} (example {example}), outside "
            f"[0, {num_classes}) for a model with {num_classes} classes; fix the labels or build the model "
            f"with more outputs."
        )


def explain_non_finite(model: Model, data: Any, error: Exception) -> Exception | None:
    """For a run-time "a client's update is not finite" error: an error naming the first client whose
    *inputs* are NaN or Inf, when one is (read on the host, only once the round has failed); else `None`."""
    if "model update is not finite" not in str(error):
        return None
    for i, rows in enumerate(_clients_rows(data)):
        for key, values in rows.items():
            if np.issubdtype(values.dtype, np.inexact) and not np.all(np.isfinite(values)):
                example = int(np.argmax(~np.isfinite(values.reshape(len(values), -1)).all(axis=1)))
                return type(error)(
                    f"Client {i} (position {i} in this round's client data) has NaN or Inf in its inputs {key!r} "
                    f"(example {example} of those it trains on), so its model update is not finite; the "
                    "learning rate is not the cause. Clean the data (e.g. drop or impute those examples), or "
                    "build the algorithm with non_finite='drop' to give such clients weight 0."
                )
    return None


def _clients_rows(data: Any) -> Any:
    """Per client of the round, the examples it trains on (its real batch slots), as numpy arrays."""
    if fc.is_placed(data):
        data = data.value
    if isinstance(data, fc.Cohort):
        population = data.population.value if fc.is_placed(data.population) else data.population
        ids = np.asarray(data.ids.value if fc.is_placed(data.ids) else data.ids)
        store = {k: np.asarray(v) for k, v in population.data.items()}
        index, mask = np.asarray(population.index), np.asarray(population.mask)
        for i in ids:
            used = index[i][mask[i]]
            yield {k: v[used] for k, v in store.items()}
    elif isinstance(data, ClientBatches):
        index, mask = np.asarray(data.index), np.asarray(data.mask)
        for i in range(index.shape[0]):
            used = index[i][mask[i]]
            yield {k: np.asarray(v[i])[used] for k, v in data.data.items()}
