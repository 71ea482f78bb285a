"""The README's Python examples run as shown, and its quickstart is what CI runs."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_python_examples_run(capsys):
    blocks = _blocks("python")
    assert len(blocks) >= 2
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "(<{f32[3]}@CLIENTS,{f32}@CLIENTS> -> f32[3]@SERVER)" in out
    assert "mean expects {T}@CLIENTS, got f32[3]@SERVER." in out
    losses = [float(line.split()[1]) for line in out.splitlines() if re.match(r"^[1-5] \d", line)]
    assert len(losses) == 5 and losses[-1] < losses[0]


def test_quickstart_has_exactly_two_commands_and_ci_runs_the_test_one():
    quickstart = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = [
        line.strip()
        for block in re.findall(r"```bash\n(.*?)```", quickstart, flags=re.S)
        for line in block.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert len(commands) == 2, commands
    assert "fedcore train" in commands[0]
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci
