"""The README opens with two commands, and CI runs exactly them."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _opening_commands() -> list[str]:
    """The command lines of the README's first code block, which must come before any section."""
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"```(?:bash|sh)?\n(.*?)```", readme, re.S)
    assert m is not None and "\n## " not in readme[: m.start()], "the README must open with its commands"
    return [ln.strip() for ln in m.group(1).splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def test_readme_opens_with_run_and_test_commands_that_ci_runs():
    run, test = _opening_commands()
    install, _, rest = run.rpartition(" && ")
    assert rest == "sim run --treatment hllm --control sasrec"
    assert test == f"{install} && python -m pytest -q"
    ci = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert install in ci and "python -m pytest -q" in ci  # CI installs as the README says, then its tests
