"""Who holds a catalog: DuckDB allows one writing process per file, so while `sim run` writes
events nobody else can open the catalog. A running experiment leaves a small note beside the
catalog (``<catalog>.run.json``: run id, PID, command) so the error a reader gets names the run
instead of quoting DuckDB's lock error.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path


def note_path(catalog_path: str) -> Path:
    return Path(str(catalog_path) + ".run.json")


@contextlib.contextmanager
def holding(catalog_path: str, run_id: str) -> Iterator[None]:
    """Leave the note while the block runs (nothing for in-memory catalogs)."""
    if catalog_path == ":memory:":
        yield
        return
    p = note_path(catalog_path)
    note = {"run_id": run_id, "pid": os.getpid(), "command": " ".join(["sim", *sys.argv[1:]])[:300],
            "started_at": dt.datetime.now().isoformat(timespec="seconds")}
    with contextlib.suppress(OSError):
        p.write_text(json.dumps(note))
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if json.loads(p.read_text()).get("pid") == os.getpid():
                p.unlink()


def _holder_pid(duckdb_message: str) -> int | None:
    m = re.search(r"\(PID (\d+)\)", duckdb_message)
    return int(m.group(1)) if m else None


def _command_of(pid: int) -> str:
    with contextlib.suppress(OSError):
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        args = [a.decode(errors="replace") for a in raw if a]
        if args and "python" in Path(args[0]).name:
            args = args[1:]
        return " ".join(args)[:200]
    return ""


def busy_message(catalog_path: str, duckdb_message: str) -> str | None:
    """One line naming who holds ``catalog_path`` when DuckDB refused to open it for a lock."""
    if "lock" not in duckdb_message.lower():
        return None
    pid = _holder_pid(duckdb_message)
    note = {}
    with contextlib.suppress(OSError, ValueError):
        note = json.loads(note_path(catalog_path).read_text())
    who = f"process {pid}" if pid else "another process"
    if note.get("run_id") and (pid is None or note.get("pid") == pid):
        rid = note["run_id"]
        return (f"catalog {catalog_path} is busy: run {rid} ({who}, started {note.get('started_at', '?')}) is "
                f"writing to it and DuckDB allows one writer; wait for the run to finish, or stop it with "
                f"Ctrl-C and continue later with `sim run --resume {rid}`")
    cmd = _command_of(pid) if pid else ""
    return (f"catalog {catalog_path} is busy: {who}{f' ({cmd})' if cmd else ''} has it open and DuckDB allows "
            "one writer; wait for it to finish, or use another --catalog")
