"""hypothesis is optional: `import fedcore` never needs it, `import fedcore.testing` says how to get it."""

import subprocess
import sys

_NO_HYPOTHESIS = "import sys; sys.modules['hypothesis'] = None\n"  # makes `import hypothesis` fail


def _run(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_fedcore_imports_without_hypothesis():
    result = _run(_NO_HYPOTHESIS + "import fedcore\nassert not hasattr(fedcore, 'testing') or 'fedcore.testing' not in sys.modules")
    assert result.returncode == 0, result.stderr
    assert "testing" not in __import__("fedcore").__all__


def test_fedcore_testing_without_hypothesis_names_the_extra():
    result = _run(_NO_HYPOTHESIS + "import fedcore.testing")
    assert result.returncode != 0
    assert "pip install 'fedcore[testing]'" in result.stderr
