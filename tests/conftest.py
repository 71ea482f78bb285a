"""Shared test configuration: hypothesis profiles sized for the CI budget.

`ci` (default) keeps example counts small enough for the whole suite to run in
minutes on 2 cores; `thorough` (HYPOTHESIS_PROFILE=thorough) runs many more.
No deadline: the first example of a test pays for JIT compilation.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("thorough", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
