"""Fixtures for the core tests."""

import contextlib

import jax
import pytest

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class CompileCounter:
    """Counts XLA backend compilations (one `jax.monitoring` event each)."""

    def __init__(self):
        self.count = 0

    def __call__(self, event, duration, **kwargs):
        if event == _COMPILE_EVENT:
            self.count += 1


@pytest.fixture
def count_compiles():
    """`with count_compiles() as c: ...; c.count` is the number of XLA compiles inside the block."""

    @contextlib.contextmanager
    def counting():
        counter = CompileCounter()
        jax.monitoring.register_event_duration_secs_listener(counter)
        try:
            yield counter
        finally:
            jax.monitoring.unregister_event_duration_listener(counter)

    return counting
