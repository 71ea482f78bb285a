"""`fa.privacy`: dp-accounting's own numbers, per-round accounting that adds up, and clear argument errors."""

from __future__ import annotations

import pytest

from fedcore import aggregators as fa

privacy = fa.privacy


@pytest.mark.parametrize("accountant, expected", [("rdp", 2.1014), ("pld", 1.8282)])
def test_golden_numbers_of_dp_accounting(accountant, expected):
    # q = 0.01, z = 1.0, 1000 rounds, delta = 1e-5 (issue 11's reference numbers, dp-accounting 0.6).
    assert privacy.epsilon(1.0, 0.01, 1000, 1e-5, accountant=accountant) == pytest.approx(expected, abs=1e-3)


def test_stepping_round_by_round_equals_composing_at_once_and_grows():
    acc = privacy.Accountant(1.1, 0.02, 1e-5)
    assert acc.epsilon == 0.0
    seen = []
    for _ in range(5):
        acc.step(20)
        seen.append(acc.epsilon)
    assert seen == sorted(seen) and seen[0] > 0
    assert acc.rounds == 100
    assert seen[-1] == pytest.approx(privacy.epsilon(1.1, 0.02, 100, 1e-5), rel=1e-9)


def test_more_noise_spends_less():
    assert privacy.epsilon(2.0, 0.01, 100, 1e-5) < privacy.epsilon(1.0, 0.01, 100, 1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"noise_multiplier": 0.0}, "noise_multiplier must be a finite number > 0"),
        ({"sampling_rate": 1.5}, r"sampling_rate must be in \(0, 1\]"),
        ({"sampling_rate": 0.0}, r"sampling_rate must be in \(0, 1\]"),
        ({"delta": 1.0}, r"delta must be in \(0, 1\)"),
        ({"rounds": -1}, "rounds must be an int >= 0"),
        ({"rounds": 2.5}, "rounds must be an int >= 0"),
        ({"accountant": "moments"}, "accountant must be one of"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    args = {"noise_multiplier": 1.0, "sampling_rate": 0.01, "rounds": 10, "delta": 1e-5, **kwargs}
    with pytest.raises(ValueError, match=message):
        privacy.epsilon(**args)
