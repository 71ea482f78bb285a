"""The examples in fedcore.data's docstrings run and print what they show.

Docstrings wrap examples in markdown fences; a fence line is not expected output.
"""

import doctest
import re

import pytest

import fedcore.data
import fedcore.data._client_data
import fedcore.data.datasets
import fedcore.data.datasets.mnist5k
import fedcore.data.datasets.synthetic
import fedcore.data.download
import fedcore.data.partition
import fedcore.data._sampling
import fedcore.data._summary

_FENCE = re.compile(r"^\s*```\w*\s*$", re.MULTILINE)

MODULES = [
    fedcore.data,
    fedcore.data._client_data,
    fedcore.data._summary,
    fedcore.data._sampling,
    fedcore.data.partition,
    fedcore.data.download,
    fedcore.data.datasets,
    fedcore.data.datasets.mnist5k,
    fedcore.data.datasets.synthetic,
]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = [t for t in finder.find(module, module.__name__) if t.docstring and t.examples]
    assert tests, f"{module.__name__} has no docstring examples"
    for test in tests:
        cleaned = parser.get_doctest(_FENCE.sub("", test.docstring), test.globs, test.name, test.filename, test.lineno)
        runner.run(cleaned)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {module.__name__} (see output above)"


def test_public_api_is_exported():
    for name in fedcore.data.__all__:
        assert hasattr(fedcore.data, name), name
    assert "batch_clients" in fedcore.data.__all__
