"""Per-example losses: `loss(predictions, labels) -> losses[batch]`.

The learning layer takes masked means over batches, so a loss never averages
itself.
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
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


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
    p = jnp.take_along_axis(probs, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    return -jnp.log(jnp.clip(p, eps, 1.0 - eps))


def mean_squared_error(
    predictions: Float[Array, "batch ..."], targets: Float[Array, "batch ..."]
) -> Float[Array, " batch"]:
    """Squared error averaged over each example's non-batch axes.

    ```python
    >>> import jax.numpy as jnp
    >>> mean_squared_error(jnp.array([[1.0, 3.0]]), jnp.array([[0.0, 0.0]]))
    Array([5.], dtype=float32)
    ```
    """
    err = (predictions - targets) ** 2
    return err.reshape(err.shape[0], -1).mean(axis=1)
