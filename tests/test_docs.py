"""Every code block of every page under docs/ runs as written.

One test per page (the failure names the page and the block's line). The
page's blocks run in order in one namespace, in a fresh temporary working
directory:

- a ```python block holding `>>>` prompts is a doctest (ELLIPSIS,
  NORMALIZE_WHITESPACE): the output shown must be the output printed;
- any other ```python block is executed as a script;
- a block preceded by `<!-- skip: reason -->` is not run (a multi-host launch,
  a block that downloads data); the reason is required;
- blocks in other languages (bash, console, text, toml) are not Python and are
  not run. Every fence names its language, so no Python block goes unrun by
  being unlabelled.

README.md is run by tests/test_readme.py (which also checks its output).
"""

from __future__ import annotations

import dataclasses
import doctest
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(p.relative_to(ROOT).as_posix() for p in DOCS.rglob("*.md"))

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<ticks>`{3,})(?P<lang>[\w+-]*)\s*$")
_SKIP = re.compile(r"^\s*<!--\s*skip:\s*(?P<reason>.*?)\s*-->\s*$")
NOT_PYTHON = {"bash", "console", "text", "toml", "json", "yaml"}
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@dataclasses.dataclass(frozen=True)
class Block:
    lang: str
    line: int  # 1-based line of the opening fence
    source: str
    skip: str | None  # the reason, when marked `<!-- skip: ... -->`


def blocks(text: str, page: str) -> list[Block]:
    """The fenced code blocks of a markdown page, in order."""
    lines = text.splitlines()
    found, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, indent, ticks = i, m["indent"], m["ticks"]
        assert m["lang"], f"{page}:{start + 1}: a code fence without a language (write ```python, ```text, ...)"
        body = []
        i += 1
        while i < len(lines) and lines[i].strip() != ticks:
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        assert i < len(lines), f"{page}:{start + 1}: unclosed code fence"
        previous = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        skip = _SKIP.match(previous)
        if skip:
            assert skip["reason"], f"{page}:{start + 1}: `<!-- skip: -->` needs a reason"
        found.append(Block(m["lang"], start + 1, "\n".join(body) + "\n", skip["reason"] if skip else None))
        i += 1
    return found


def run_page(path: pathlib.Path, page: str) -> list[Block]:
    """Runs the page's Python blocks in order in one namespace; returns the blocks run."""
    namespace: dict = {"__name__": "__docs__"}
    ran = []
    for block in blocks(path.read_text(), page):
        if block.skip is not None or block.lang in NOT_PYTHON:
            continue
        assert block.lang == "python", f"{page}:{block.line}: unknown code block language {block.lang!r}"
        where = f"{page}:{block.line}"
        if re.search(r"^\s*>>> ", block.source, re.MULTILINE):
            test = doctest.DocTestParser().get_doctest(block.source, namespace, where, str(path), block.line)
            failures: list[str] = []
            runner = doctest.DocTestRunner(optionflags=FLAGS)
            runner.run(test, out=failures.append, clear_globs=False)
            if runner.failures:
                pytest.fail(f"{where}: a `>>>` example failed:\n" + "".join(failures), pytrace=False)
            namespace.update(test.globs)
        else:
            # Padding with the lines above keeps the traceback's line numbers the page's own.
            code = compile("\n" * block.line + block.source, str(path), "exec")
            try:
                exec(code, namespace)  # noqa: S102 - our own docs
            except Exception as error:
                raise AssertionError(f"{where}: the python block raised {type(error).__name__}: {error}") from error
        ran.append(block)
    return ran


@pytest.mark.parametrize("page", PAGES)
def test_page_code_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # files a page writes (runs/, checkpoints) go to a temporary directory
    ran = run_page(ROOT / page, page)
    assert all(b.lang == "python" for b in ran)


def test_every_page_is_found_and_the_parser_sees_its_blocks():
    assert "docs/core.md" in PAGES and "docs/index.md" in PAGES
    page = "x.md"
    text = "a\n\n```python\n>>> 1\n1\n```\n\n<!-- skip: needs two hosts -->\n```python\nboom()\n```\n\n```text\nout\n```\n"
    found = blocks(text, page)
    assert [(b.lang, b.line, b.skip) for b in found] == [("python", 3, None), ("python", 9, "needs two hosts"), ("text", 13, None)]
    assert found[0].source == ">>> 1\n1\n"
    with pytest.raises(AssertionError, match="without a language"):
        blocks("```\nprint(1)\n```\n", page)


def test_a_failing_block_names_its_page_and_line(tmp_path):
    page = tmp_path / "broken.md"
    page.write_text("# t\n\n```python\n>>> x = 1\n>>> x + 1\n3\n```\n")
    with pytest.raises(pytest.fail.Exception, match=r"broken.md:3: a `>>>` example failed"):
        run_page(page, "broken.md")
    page.write_text("# t\n\n```python\nx = 1\n```\n\n```python\n>>> x\n1\n>>> raise ValueError('no')\n```\n")
    with pytest.raises(pytest.fail.Exception, match=r"(?s)broken.md:7.*ValueError: no"):
        run_page(page, "broken.md")
    page.write_text("# t\n\n```python\nraise ValueError('no')\n```\n")
    with pytest.raises(AssertionError, match=r"broken.md:3: the python block raised ValueError: no"):
        run_page(page, "broken.md")
