"""Connecting to Ray: a fresh local instance unless an address is given, and for an address a
bounded, one-line failure instead of a hang.

* no address: ``ray.init(address="local")``, never a cluster that happens to run on this machine;
* an address: the GCS port must accept a TCP connection within a few seconds, then ``ray.init``
  must finish within ``SIM_RAY_CONNECT_TIMEOUT_S`` (default 30 s; Ray itself retries for minutes
  when the port is open but is not a Ray head);
* a cluster that needs an authentication token when none is set: one line saying so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading

from simulator.core.errors import ConfigError

RAY_CONNECT_TIMEOUT_S = 30.0
_INIT_KW = {"include_dashboard": False, "ignore_reinit_error": True, "log_to_driver": False,
            "configure_logging": False}


def _timeout_s() -> float:
    try:
        return float(os.environ.get("SIM_RAY_CONNECT_TIMEOUT_S", RAY_CONNECT_TIMEOUT_S))
    except ValueError:
        raise ConfigError("SIM_RAY_CONNECT_TIMEOUT_S must be a number of seconds") from None


def host_port(address: str) -> tuple[str, int]:
    """('host', port) of ``HOST:PORT`` or ``ray://HOST:PORT``; ConfigError otherwise."""
    a = address.split("://", 1)[1] if "://" in address else address
    host, _, port = a.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--ray-address {address!r}: expected HOST:PORT, e.g. 127.0.0.1:6379 "
                          "(the address `ray start --head` prints)")
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in one line, within ``timeout_s``, when nothing listens at ``address``."""
    host, port = host_port(address)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as e:
        why = "timed out" if isinstance(e, TimeoutError) else (e.strerror or type(e).__name__).lower()
        raise ConfigError(f"cannot reach a Ray cluster at {address} ({why}); check --ray-address: the head's "
                          "address is printed by `ray start --head` (port 6379 by default)") from None


def _auth_error(e: BaseException) -> bool:
    text = f"{type(e).__name__} {e}".lower()
    return "authenticationerror" in text or "authentication token" in text or "unauthenticated" in text


AUTH_HINT = ("set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH); "
             "`ray get-auth-token` on the head prints the token")


def _init(ray, address: str | None) -> None:
    try:
        ray.init(address=address or "local", **_INIT_KW)
    except Exception as e:  # noqa: BLE001 - Ray raises many types; each becomes one line
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        if _auth_error(e):
            raise ConfigError(f"{where} requires an authentication token and none is set: {AUTH_HINT}") from None
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"cannot start {where}: {first}") from None


@contextlib.contextmanager
def _quiet():
    """While connecting: no Ray log lines (its C++ core writes retry warnings straight to fd 2,
    and its Python side warns that a non-main thread cannot set a SIGTERM handler)."""
    log = logging.getLogger("ray._private.worker")
    level = log.level
    log.setLevel(logging.ERROR)
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            log.setLevel(level)


def init_ray(address: str | None = None) -> None:
    """Start or join Ray (see the module docstring); one-line ConfigError on any failure."""
    import ray

    if ray.is_initialized():
        return
    if not address or address == "local":
        from simulator.engine.signals import keep_handlers

        with keep_handlers():  # Ray's driver would turn SIGTERM into sys.exit(15)
            _init(ray, None)
        return
    if address != "auto":
        check_reachable(address)
    box: dict = {}

    def connect() -> None:
        try:
            _init(ray, address)
        except BaseException as e:  # noqa: BLE001 - handed to the calling thread
            box["error"] = e

    with _quiet():
        t = threading.Thread(target=connect, name="ray-connect", daemon=True)
        t.start()
        t.join(_timeout_s())
    if t.is_alive():
        raise ConfigError(f"the Ray cluster at {address} did not answer within {_timeout_s():g} s: the port is open "
                          "but it does not look like a Ray head; check --ray-address (port 6379 by default)")
    if "error" in box:
        raise box["error"]
