"""`sim`: the command-line front of hllm-sim (thin: parse, validate, call one function).

Commands live beside the code they drive; this module only mounts them:
  sim data ...      simulator/commands/data.py   load / synth / info / list datasets
  sim train, eval   simulator/commands/train.py         fit and evaluate a registered policy
  sim hllm ...      simulator/commands/hllm.py             embed-items, train stages, export
  sim run           simulator/commands/run.py    run an A/B(/n) simulation
  sim report, query, power   simulator/commands/analysis.py
  sim ope           simulator/commands/ope.py    off-policy estimates of an arm from a run's logs
Errors caused by input print one line (``error: ...``) and exit 2; ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from simulator.core.errors import SimError
from simulator.engine import signals

app = typer.Typer(
    name="sim",
    help="hllm-sim: simulate A/B tests of LLM-based (HLLM) vs ID-based recommenders.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

_DEBUG = {"on": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    _DEBUG["on"] = debug or bool(os.environ.get("SIM_DEBUG"))


# (module, attribute, mount name, is_group)
_MOUNTS = (
    ("simulator.commands.data", "app", "data", True),
    ("simulator.commands.train", "train", "train", False),
    ("simulator.commands.train", "evaluate", "eval", False),
    ("simulator.commands.hllm", "app", "hllm", True),
    ("simulator.commands.run", "run", "run", False),
    ("simulator.commands.analysis", "report", "report", False),
    ("simulator.commands.analysis", "query", "query", False),
    ("simulator.commands.analysis", "power", "power", False),
    ("simulator.commands.ope", "ope", "ope", False),
)


def _mount() -> None:
    for module, attr, name, is_group in _MOUNTS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name == module:  # not written yet
                continue
            raise
        obj = getattr(mod, attr, None)
        if obj is None:
            continue
        if is_group:
            app.add_typer(obj, name=name)
        else:
            app.command(name)(obj)


_mount()


def printable(text: str) -> str:
    """``text`` with control characters escaped (a name from a user's file may hold a terminal
    escape sequence; it must not reach the terminal)."""
    return "".join(ch if ch.isprintable() or ch == "\t" else ch.encode("unicode_escape").decode() for ch in text)


def _interrupted(e: BaseException | None) -> None:
    code = signals.exit_code(e)
    typer.secho("terminated" if code == 143 else "interrupted", err=True)
    sys.exit(code)


def main() -> None:
    """Console-script entry point: run the app, turning user errors into one line.

    Exit codes: 0 ok, 2 bad input (``error: ...``), 1 an unexpected error, 130 Ctrl-C,
    143 SIGTERM (both stop a run cleanly: it stays resumable).
    """
    signals.install()
    try:
        rc = app(standalone_mode=False, prog_name="sim")
    except SimError as e:
        if _DEBUG["on"] or "--debug" in sys.argv:
            raise
        typer.secho(f"error: {printable(str(e))}", err=True, fg=typer.colors.RED)
        sys.exit(2)
    except KeyboardInterrupt as e:
        _interrupted(e)
    except (typer.Exit, SystemExit) as e:
        code = getattr(e, "exit_code", getattr(e, "code", 0))
        sys.exit(code or 0)
    except Exception as e:  # click usage errors and the like
        # click usage errors (unknown option, missing argument, bad value): one line too
        if hasattr(e, "format_message") and hasattr(e, "exit_code"):
            ctx = getattr(e, "ctx", None)
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            if e.format_message():  # (empty for a bare `sim`: the help is already shown)
                typer.secho(f"error: {printable(e.format_message())}{hint}", err=True, fg=typer.colors.RED)
            sys.exit(e.exit_code)
        if type(e).__name__ == "Abort":  # click turns Ctrl-C into Abort
            cause = e.__cause__ or e.__context__
            if isinstance(cause, KeyboardInterrupt):
                _interrupted(cause)
            sys.exit(1)
        if signals.received() is not None:  # e.g. DuckDB's "Query interrupted"
            _interrupted(e)
        if _DEBUG["on"] or "--debug" in sys.argv:
            raise
        typer.secho(f"error: {type(e).__name__}: {printable(str(e))}", err=True, fg=typer.colors.RED)
        sys.exit(1)
    if signals.received() is not None:  # typer answers a signal it caught with 130, even for SIGTERM
        _interrupted(None)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
