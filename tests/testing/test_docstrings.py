"""The examples in fedcore.testing's docstrings run and print what they show.

Docstrings wrap examples in markdown fences; a fence line is not expected output.
"""

import doctest
import re

import pytest

import fedcore.testing
import fedcore.testing.laws
import fedcore.testing.strategies

_FENCE = re.compile(r"^\s*```\w*\s*$", re.MULTILINE)


def _examples(module):
    finder = doctest.DocTestFinder(exclude_empty=True)
    for test in finder.find(module, module.__name__):
        if test.docstring and test.examples:
            yield test


MODULES = [fedcore.testing, fedcore.testing.laws, fedcore.testing.strategies]


@pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    tests = list(_examples(module))
    assert tests, f"{module.__name__} has no docstring examples"
    for test in tests:
        cleaned = parser.get_doctest(_FENCE.sub("", test.docstring), test.globs, test.name, test.filename, test.lineno)
        runner.run(cleaned)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {module.__name__} (see output above)"
