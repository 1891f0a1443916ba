"""User-facing errors.

Every error a user can cause (bad file, bad config, unknown name) is a :class:`SimError`.
The CLI prints ``error: <message>`` on one line and exits non-zero; ``--debug`` shows the
traceback. Messages name the file, line and field where one applies.
"""

from __future__ import annotations


class SimError(Exception):
    """Base class for errors caused by user input; printed as one line by the CLI."""


class DataError(SimError):
    """Malformed or missing data: names file, line and field where known."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        where = []
        if file is not None:
            where.append(str(file) + (f":{line}" if line is not None else ""))
        if field is not None:
            where.append(f"field '{field}'")
        prefix = (", ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)
        self.file, self.line, self.field = file, line, field


class ConfigError(SimError):
    """Invalid configuration (unknown key, unknown policy, impossible quotas...)."""


class NotFittedError(SimError):
    """A policy used before it was fitted or loaded."""


class NotFoundError(SimError):
    """Unknown dataset, run id, model or artifact."""


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C (exit 130) or SIGTERM (exit 143); its events so far are kept and
    the run is marked ``incomplete`` so ``sim run --resume RUN_ID`` continues it."""

    def __init__(self, run_id: str, exit_code: int = 130) -> None:
        super().__init__(run_id)
        self.run_id, self.exit_code = run_id, exit_code


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised by the CLI's signal handler so a run stops like on Ctrl-C (exit 143)."""

    exit_code = 143

