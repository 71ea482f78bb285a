"""Per-example losses: `loss(predictions, labels) -> losses[batch]`.

The learning layer takes masked means over batches, so a loss never averages
itself.

Integer-label losses give NaN (and NaN gradients) for a label outside
`[0, classes)` instead of JAX's silent clamping of out-of-range gathers, so
such a batch counts as non-finite under `non_finite="raise"`; the learning
process also refuses such labels before a round, naming the client and label.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int

__all__ = ["sparse_softmax_cross_entropy", "sparse_cross_entropy_on_probs", "mean_squared_error"]


def sparse_softmax_cross_entropy(
    logits: Float[Array, "batch classes"], labels: Int[Array, " batch"]
) -> Float[Array, " batch"]:
    """Cross-entropy of integer labels against logits (Keras' `SparseCategoricalCrossentropy` on a softmax output, which Keras computes from the logits).

    ```python
    >>> import jax.numpy as jnp
    >>> sparse_softmax_cross_entropy(jnp.zeros((1, 10)), jnp.array([3]))  # log(10)
    Array([2.3025851], dtype=float32)
    ```
    """
    _check_sparse_labels("sparse_softmax_cross_entropy", logits, labels)
    return _nan_if_out_of_range(optax.softmax_cross_entropy_with_integer_labels(logits, labels), labels, logits.shape[-1])


def _nan_if_out_of_range(losses: Array, labels: Array, num_classes: int) -> Array:
    # Multiplying by NaN (rather than jnp.where) makes the gradient NaN too, so
    # the client's update is non-finite and `non_finite=` sees it.
    valid = (labels >= 0) & (labels < num_classes)
    return losses * jnp.where(valid, 1.0, jnp.nan).astype(losses.dtype)


def _check_sparse_labels(name: str, scores: Array, labels: Array) -> None:
    if labels.ndim != scores.ndim - 1:
        raise ValueError(
            f"{name} expects integer class labels of shape {scores.shape[:-1]} for predictions of shape "
            f"{scores.shape}, got labels of shape {labels.shape}"
            + (" (one-hot? pass labels.argmax(-1))" if labels.shape == scores.shape else
               " (flatten them: labels.reshape(-1))" if labels.shape[-1:] == (1,) else "")
            + "."
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(
            f"{name} expects integer class labels, got {labels.dtype}; cast them (labels.astype(np.int32)), "
            "or use mean_squared_error for real-valued targets."
        )


def sparse_cross_entropy_on_probs(
    probs: Float[Array, "batch classes"], labels: Int[Array, " batch"], eps: float = 1e-7
) -> Float[Array, " batch"]:
    """Cross-entropy of integer labels against probabilities, clipped to `[eps, 1 - eps]` as Keras does for probability inputs.

    ```python
    >>> import jax.numpy as jnp
    >>> sparse_cross_entropy_on_probs(jnp.full((1, 4), 0.25, jnp.float32), jnp.array([0]))
    Array([1.3862944], dtype=float32)
    ```
    """
    _check_sparse_labels("sparse_cross_entropy_on_probs", probs, labels)
    p = jnp.take_along_axis(probs, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    return _nan_if_out_of_range(-jnp.log(jnp.clip(p, eps, 1.0 - eps)), labels, probs.shape[-1])


def mean_squared_error(
    predictions: Float[Array, "batch ..."], targets: Float[Array, "batch ..."]
) -> Float[Array, " batch"]:
    """Squared error averaged over each example's non-batch axes.

    `predictions` and `targets` must have the same shape (no broadcasting:
    `(B, 1)` against `(B,)` would silently compare every pair).

    ```python
    >>> import jax.numpy as jnp
    >>> mean_squared_error(jnp.array([[1.0, 3.0]]), jnp.array([[0.0, 0.0]]))
    Array([5.], dtype=float32)
    ```
    """
    if jnp.shape(predictions) != jnp.shape(targets):
        raise ValueError(
            f"mean_squared_error expects predictions and targets of one shape, got predictions "
            f"{jnp.shape(predictions)} and targets {jnp.shape(targets)}; reshape one of them "
            "(e.g. targets[:, None] or predictions[:, 0])."
        )
    err = (predictions - targets) ** 2
    return err.reshape(err.shape[0], -1).mean(axis=1)
