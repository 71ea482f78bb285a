"""docs/core.md's worked example (federated mean and variance) computes what it says.

tests/test_docs.py runs every block of the page; here the worked example is
read from the page (the python block after the `<!-- worked-example -->`
marker) and run verbatim, then checked against numpy and the core's laws, so
the page cannot drift from what is tested.
"""

import pathlib
import re

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import fedcore as fc
from fedcore import testing as fct

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "core.md"


def _worked_example() -> str:
    text = DOC.read_text()
    after_marker = text.split("<!-- worked-example -->", 1)[1]
    match = re.search(r"```python\n(.*?)\n```", after_marker, re.DOTALL)
    assert match, "docs/core.md: no python block after the worked-example marker"
    return match.group(1)


WORKED_EXAMPLE = _worked_example()
_NAMESPACE: dict = {}
exec(compile(WORKED_EXAMPLE, str(DOC), "exec"), _NAMESPACE)  # noqa: S102 - our own docs
federated_variance = _NAMESPACE["federated_variance"]


def test_the_worked_example_computes_what_it_says():
    stats = _NAMESPACE["stats"]
    x = np.asarray(_NAMESPACE["losses"].value, np.float64)
    w = np.asarray(_NAMESPACE["examples"].value, np.float64)
    mean = np.average(x, axis=0, weights=w)
    np.testing.assert_allclose(stats.value["mean"], mean, rtol=1e-6)
    np.testing.assert_allclose(stats.value["variance"], np.average((x - mean) ** 2, axis=0, weights=w), rtol=1e-6)
    assert str(federated_variance.type_signature) == "(<{f32[2]}@CLIENTS,{f32}@CLIENTS> -> <mean=f32[2],variance=f32[2]>@SERVER)"


@given(fct.weighted_client_values(num_clients=st.sampled_from([1, 4, 64]), member=fc.TensorType((3,), np.dtype("float32"))))
def test_the_worked_example_matches_numpy_and_obeys_the_laws(xw):
    x, w = xw
    stats = fct.check_permutation_invariance(federated_variance, x, w, atol=2.0)
    xs, ws = np.asarray(x.value, np.float64), np.asarray(w.value, np.float64)
    mean = np.average(xs, axis=0, weights=ws)
    # float32 against float64, |x| <= 100, n <= 64 (eps = 2**-23): the mean is within
    # 2 * n * eps * 100 ~ 2e-3; the variance (terms up to 200**2) within ~2 * n * eps * 200**2 ~ 0.6.
    np.testing.assert_allclose(stats.value["mean"], mean, rtol=1e-5, atol=2e-3)
    np.testing.assert_allclose(stats.value["variance"], np.average((xs - mean) ** 2, axis=0, weights=ws), rtol=1e-5, atol=1.0)
