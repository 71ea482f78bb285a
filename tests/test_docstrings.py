"""Every `>>>` example in every fedcore docstring runs and prints what it shows.

One test per module (the failure names the module; doctest prints the
example). Docstrings wrap examples in markdown fences, and a fence line is
not expected output. Pages under docs/ are run by tests/test_docs.py.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re

import pytest

import fedcore

_FENCE = re.compile(r"^\s*```\w*\s*$", re.MULTILINE)
MODULES = ["fedcore"] + sorted(
    m.name for m in pkgutil.walk_packages(fedcore.__path__, "fedcore.") if m.name != "fedcore.__main__"
)


def run_examples(module) -> tuple[doctest.TestResults, int]:
    """Runs the module's docstring examples; returns doctest's results and how many docstrings held examples."""
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    found = [t for t in doctest.DocTestFinder(exclude_empty=True).find(module, module.__name__) if t.examples]
    for test in found:
        text = _FENCE.sub("", test.docstring)
        runner.run(parser.get_doctest(text, test.globs, test.name, test.filename, test.lineno))
    return runner.summarize(verbose=False), len(found)


@pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    results, _ = run_examples(importlib.import_module(name))
    assert results.failed == 0, f"{results.failed} of {results.attempted} examples failed in {name} (see output above)"

