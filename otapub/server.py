"""The served application and the production WSGI servers that run it: granian (default) or gunicorn.

``make_app`` puts the device path (otapub.shim, read-only) and, when an admin key is set, the
admin API (otapub.admin, the write side) behind one WSGI entry point; the shim itself knows
nothing of the admin API.

granian's HTTP layer is Rust: on two cores it answers the device protocol about 2.5 times as
fast as gunicorn's gthread workers (bench/RESULTS.md), whose own per-request cost exceeds the
whole budget. gunicorn stays available (``--server gunicorn``) for operators who standardise
on it; the shim is a plain WSGI application either way.

Stopping: SIGTERM or SIGINT stops the main process and every worker. A worker that does not stop
within STOP_GRACE_SECONDS is killed, and a worker dies with its main process even when that one
is killed outright (SIGKILL, OOM), so no worker ever keeps serving, and holding the port, alone.

Folding: beside the workers, one process (named otapub-fold) folds the check-in log into the
store every ``checkin_fold_seconds``, so that `otapub status` finds few new lines. It ends with
the server the same ways.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterable
from typing import Any

from otapub.config import Config
from otapub.errors import OtapubError
from otapub.record import RECORD
from otapub.shim import Shim
from otapub.static_files import StartResponse

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict, StartResponse], Iterable[bytes]]

STOP_GRACE_SECONDS = 10  # a worker still running this long after SIGTERM is killed
_MAIN_PID = "OTAPUB_SERVER_PID"  # the server's main process, for workers started from a fresh interpreter
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_PR_SET_NAME = 15
FOLDER_NAME = b"otapub-fold"  # what ps and top show for the folding process


def die_with_parent(parent: int) -> None:
    """Have the kernel kill this (worker) process when its parent, the server's main process, dies.

    Without it a worker whose main process was killed outright keeps serving and keeps the
    listening socket it shares: the port stays taken until someone finds and kills the orphan.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            log.warning("cannot tie worker %d to its main process: %s", os.getpid(), os.strerror(ctypes.get_errno()))
    if os.getppid() != parent:  # the main process died before the prctl above took effect
        os._exit(1)


def start_folding(config: Config) -> int | None:
    """Start the process that folds the check-in log into the store every checkin_fold_seconds
    while the server runs; its pid (None when there is nothing to fold). Call it before the server
    starts: a fork, so that it has no thread to lose and no listening socket to inherit.

    A fork rather than a subprocess running `otapub fold --every`: no second interpreter to start,
    and the child folds with this very Config (environment overrides included) instead of loading
    it again. It ends on SIGTERM or SIGINT (rolling a fold in progress back), dies with the server's
    main process however that ends, and stays out of the server's SIGHUP (a reload of the workers).
    """
    if not config.checkin_log or not config.checkin_fold_seconds:
        return None
    from otapub.folding import follow_until_signalled

    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        die_with_parent(parent)
        if sys.platform.startswith("linux"):
            ctypes.CDLL(None).prctl(_PR_SET_NAME, FOLDER_NAME, 0, 0, 0)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        follow_until_signalled(config, config.checkin_fold_seconds)
        code = 0
    except KeyboardInterrupt:  # SIGINT before follow_until_signalled took it over
        code = 0
    except BaseException:  # a bug: said once; the server goes on serving and readers still fold
        log.exception("the check-in folding process stopped")
    finally:
        os._exit(code)  # never the server's own way out (its atexit handlers, its finally blocks)


def stop_folding(pid: int) -> None:
    """End the folding process at once: a fold it was doing is rolled back (its lines stay in the log)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):  # gunicorn's main process reaps every child it has
        os.waitpid(pid, 0)


def make_app(config: Config) -> WSGIApp:
    """The shim for a Config, with the admin API mounted at /admin when an admin key is set."""
    log_path = config.path("checkin_log") if config.checkin_log else None
    shim = Shim(config.path("site_dir"), config.base_url, log_path, config.checkin_log_max_bytes,
                config.checkin_log_daily)
    if not config.admin_api_key:
        return shim  # /admin... is then the shim's 404, like any unknown path
    from otapub.admin import AdminApp

    admin = AdminApp(config)

    def app(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == "/admin" or path.startswith("/admin/"):
            return admin(environ, start_response)
        return shim(environ, start_response)

    return app


def run_gunicorn(app: WSGIApp, options: dict[str, Any]) -> None:
    """Run ``app`` under gunicorn (imported here: granian's workers import this module and need none of it)."""
    from gunicorn.app.base import BaseApplication

    class Gunicorn(BaseApplication):  # type: ignore[misc,valid-type]
        def load_config(self) -> None:
            for key, value in options.items():
                if key in self.cfg.settings:  # settings newer than the installed gunicorn are skipped
                    self.cfg.set(key, value)

        def load(self) -> Any:
            return app

    Gunicorn().run()


def gunicorn_options(config: Config, host: str, port: int, workers: int, threads: int) -> dict[str, Any]:
    return {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        "worker_class": "gthread",  # threads keep HTTP keep-alive connections cheap
        "threads": threads,
        "keepalive": 5,
        "loglevel": config.log_level.lower(),
        "accesslog": None,  # check-ins are logged by the shim; no token ever reaches a log
        "errorlog": "-",
        "forwarded_allow_ips": os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
        "proc_name": "otapub-shim",
        "control_socket_disable": True,  # gunicorn >= 24: no control socket in $HOME
        "graceful_timeout": STOP_GRACE_SECONDS,
        "post_fork": _gunicorn_post_fork,
    }


def _gunicorn_post_fork(arbiter: Any, _worker: Any) -> None:
    die_with_parent(arbiter.pid)


def app_from_environment() -> Any:
    """WSGI app factory for server worker processes: the config comes from OTAPUB_CONFIG + OTA_SERVER_*."""
    from otapub.config import load_config

    if main := os.environ.get(_MAIN_PID):
        die_with_parent(int(main))
    return make_app(load_config(os.environ.get("OTAPUB_CONFIG") or None))


def check_listen(host: str, port: int) -> None:
    """A clear error, instead of the server's own traceback, when host:port cannot be listened on."""
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
            probe.bind(address)
    except OSError as exc:  # in use, an address this machine does not have, a port root may not take ...
        raise OtapubError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def serve(config: Config, host: str | None = None, port: int | None = None, workers: int | None = None,
          server: str = "granian") -> None:
    """Serve the site (and the admin API when a key is set) until interrupted."""
    config.refuse_placeholders(doing="refusing to start: ")
    host = host or config.server_host
    port = port or config.server_port
    check_listen(host, port)
    site = config.path("site_dir")
    if not (site / RECORD).is_file():
        log.warning("%s holds no built site yet: run `otapub build`; serving 401/404 until then", site)
    main = os.getpid()
    folding = start_folding(config)
    try:
        _run(config, host, port, workers, server)
    finally:
        # gunicorn forks its workers inside _run: one that ends (a graceful restart) unwinds through here too
        if folding is not None and os.getpid() == main:
            stop_folding(folding)


def _run(config: Config, host: str, port: int, workers: int | None, server: str) -> None:
    cores = os.cpu_count() or 1
    if server == "gunicorn":
        options = gunicorn_options(config, host, port, workers or min(2 * cores, 8), threads=4)
        run_gunicorn(make_app(config), options)
        return
    from granian.constants import Interfaces

    if config.source is not None:
        os.environ["OTAPUB_CONFIG"] = str(config.source)  # the worker processes load the same config
    os.environ[_MAIN_PID] = str(os.getpid())
    _granian_server()("otapub.server:app_from_environment", factory=True, address=host, port=port,
            interface=Interfaces.WSGI, workers=workers or cores + 1,  # cores + 1: the best measured on 2 cores
            blocking_threads=2, backpressure=128,
            log_level=config.log_level.lower(), log_access=False,  # check-ins are the access log, token-free
            respawn_failed_workers=True, websockets=False,
            workers_kill_timeout=STOP_GRACE_SECONDS).serve()


def _granian_server() -> type:
    """granian's server, minus a lost-signal race that left workers serving after the server stopped.

    granian forks its workers after installing the main process's SIGTERM/SIGINT handler, and a
    worker replaces it with its own only once the app is loaded. A signal that reaches a worker in
    between (the server being stopped while a worker starts; the admin API makes that take a
    while) ran the inherited handler, which only flags the worker's copy of the main loop: the
    signal was lost, the worker went on to serve, and the main process waited for it forever.
    Such a worker now ends as the signal's default action ends a process.
    """
    from granian import Granian

    class Server(Granian):  # type: ignore[misc,valid-type]
        def signal_handler_interrupt(self, signum: int, *args: Any, **kwargs: Any) -> None:
            if self.pid is not None and os.getpid() != self.pid:  # a worker not yet serving: nothing to drain
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
                return
            super().signal_handler_interrupt(signum, *args, **kwargs)

    return Server
