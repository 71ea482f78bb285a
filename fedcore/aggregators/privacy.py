"""Privacy accounting for DP-FedAvg: the epsilon spent by Poisson-sampled Gaussian rounds.

Built on Google's maintained `dp-accounting` package (the optional extra
`pip install "fedcore[dp]"`, imported when first used). Each round is one
`PoissonSampledDpEvent(q, GaussianDpEvent(z))`: clients sampled with
probability `q = clients per round / population`, Gaussian noise of
`z` times the clipping norm on the sum of their clipped updates.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["epsilon", "Accountant"]

_ACCOUNTANTS = ("rdp", "pld")


def _dp_accounting() -> Any:
    try:
        import dp_accounting
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            'fedcore.aggregators.privacy needs the dp-accounting package: pip install "fedcore[dp]".'
        ) from e
    return dp_accounting


def _check(noise_multiplier: float, sampling_rate: float, delta: float, accountant: str) -> None:
    def number(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    if not number(noise_multiplier) or noise_multiplier <= 0:
        raise ValueError(f"noise_multiplier must be a finite number > 0, got {noise_multiplier!r}.")
    if not number(sampling_rate) or not 0 < sampling_rate <= 1:
        raise ValueError(
            f"sampling_rate must be in (0, 1] (clients per round / population), got {sampling_rate!r}."
        )
    if not number(delta) or not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), e.g. 1e-5 or 1/population, got {delta!r}.")
    if accountant not in _ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {_ACCOUNTANTS}, got {accountant!r}.")


def _check_rounds(rounds: Any) -> int:
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise ValueError(f"rounds must be an int >= 0, got {rounds!r}.")
    return rounds


class Accountant:
    """The privacy spent so far by a DP training run, one `step()` per round.

    Args:
        noise_multiplier: `z`, the noise's standard deviation over the clipping norm.
        sampling_rate: `q`, the probability that a client takes part in a round.
        delta: the `delta` of the `(epsilon, delta)` guarantee.
        accountant: `"rdp"` (Rényi DP, TFF's and Opacus's default) or `"pld"`
            (privacy loss distributions: tighter).

    ```python
    >>> from fedcore.aggregators import privacy
    >>> acc = privacy.Accountant(noise_multiplier=1.0, sampling_rate=0.01, delta=1e-5)
    >>> acc.step(1000)
    >>> acc.rounds, round(acc.epsilon, 4)
    (1000, 2.1014)
    ```
    """

    def __init__(self, noise_multiplier: float, sampling_rate: float, delta: float, accountant: str = "rdp"):
        _check(noise_multiplier, sampling_rate, delta, accountant)
        self.noise_multiplier, self.sampling_rate, self.delta = noise_multiplier, sampling_rate, delta
        self.kind = accountant
        dpa = _dp_accounting()
        self._accountant = dpa.rdp.RdpAccountant() if accountant == "rdp" else dpa.pld.PLDAccountant()
        self._event = dpa.PoissonSampledDpEvent(sampling_rate, dpa.GaussianDpEvent(noise_multiplier))
        self.rounds = 0

    def step(self, rounds: int = 1) -> None:
        """Accounts for `rounds` more rounds."""
        rounds = _check_rounds(rounds)
        if rounds:
            self._accountant.compose(self._event, rounds)
            self.rounds += rounds

    @property
    def epsilon(self) -> float:
        """The `epsilon` spent so far (0 before any round)."""
        return float(self._accountant.get_epsilon(self.delta)) if self.rounds else 0.0

    def __repr__(self) -> str:
        return (
            f"Accountant(noise_multiplier={self.noise_multiplier}, sampling_rate={self.sampling_rate}, "
            f"delta={self.delta}, accountant={self.kind!r}, rounds={self.rounds}, epsilon={self.epsilon:.4g})"
        )


def epsilon(
    noise_multiplier: float, sampling_rate: float, rounds: int, delta: float, accountant: str = "rdp"
) -> float:
    """The `epsilon` of `rounds` Poisson-sampled Gaussian rounds at the given `delta`.

    Args:
        noise_multiplier: `z`, the noise's standard deviation over the clipping norm.
        sampling_rate: `q = clients per round / population`.
        rounds: how many rounds (an int >= 0).
        delta: the `delta` of the guarantee, in (0, 1).
        accountant: `"rdp"` or `"pld"` (see `Accountant`).

    Returns:
        `epsilon` as dp-accounting computes it.

    ```python
    >>> from fedcore.aggregators import privacy
    >>> round(privacy.epsilon(1.0, 0.01, 1000, 1e-5, accountant="pld"), 4)
    1.8282
    ```
    """
    acc = Accountant(noise_multiplier, sampling_rate, delta, accountant)
    acc.step(rounds)
    return acc.epsilon
