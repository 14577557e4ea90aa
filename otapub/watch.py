"""`otapub watch`: rebuild on every change and serve the result through the shim, locally.

File events are debounced (a rebuild starts once changes have stopped for ~0.1 s). A failed
rebuild prints the problems and the last good site keeps being served: the build writes
nothing unless the whole fleet validates, so there is never a half-built site to serve.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from otapub.build import BuildResult, build_site
from otapub.config import Config, load_config
from otapub.errors import OtapubError
from otapub.fsutil import is_temp
from otapub.server import make_app

log = logging.getLogger(__name__)
DEBOUNCE = 0.1
TICK = 30.0  # also rebuild this often: time-based rollout stages and answer expiry move on their own


class _Changes(FileSystemEventHandler):
    """Collects changed paths below the watched folders, ignoring our own output."""

    def __init__(self, ignore: list[Path]):
        self.ignore = [str(p) for p in ignore]
        self.paths: set[str] = set()
        self.last = 0.0
        self.lock = threading.Lock()
        self.event = threading.Event()

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        for path in (event.src_path, getattr(event, "dest_path", "")):
            if not path or is_temp(Path(path).name) or any(path.startswith(i) for i in self.ignore):
                continue
            with self.lock:
                self.paths.add(path)
                self.last = time.monotonic()
            self.event.set()

    def take_when_quiet(self, stop: threading.Event, timeout: float = TICK) -> set[str]:
        """Block until something changed and then nothing for DEBOUNCE seconds (empty after timeout)."""
        deadline = time.monotonic() + timeout
        while not stop.is_set():
            if not self.event.wait(0.2):
                if time.monotonic() >= deadline:
                    return set()
                continue
            quiet = time.monotonic() - self.last
            if quiet < DEBOUNCE:
                time.sleep(DEBOUNCE - quiet)
                continue
            with self.lock:
                paths, self.paths = self.paths, set()
                self.event.clear()
            return paths
        return set()


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)


class Watcher:
    """Build, serve, and rebuild on change until stopped."""

    def __init__(self, config_path: str | None, host: str, port: int, poll: bool,
                 echo: Callable[[str], None] = log.info):
        self.config_path = config_path
        self.config: Config = load_config(config_path)
        self.echo = echo
        self.stop_event = threading.Event()
        self.changes = _Changes([self.config.path("site_dir"), self.config.path("state_dir"),
                                 self.config.path("checkin_log").parent])
        self.observer = PollingObserver(timeout=0.2) if poll else Observer()
        self.app = make_app(self.config)
        try:
            self.server = make_server(host, port, self.app, server_class=_Server, handler_class=_QuietHandler)
        except OSError as exc:
            raise OtapubError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def rebuild(self, why: str, quiet: bool = False) -> BuildResult | None:
        """Build now; with ``quiet``, say nothing when nothing changed."""
        started = time.monotonic()
        try:
            config = load_config(self.config_path)
            result = build_site(config)
        except OtapubError as exc:
            self.echo(f"rebuild failed ({why}); still serving the last good site:\n{exc}")
            return None
        if config.public() != self.config.public():
            self.config = config
            self.server.set_app(make_app(config))
        if quiet and result.noop:
            return result
        self.echo(f"rebuilt ({why}): {len(result.written)} written, {len(result.pruned)} pruned "
                  f"in {time.monotonic() - started:.2f}s")
        return result

    def watched(self) -> list[Path]:
        config = self.config
        folders = [config.path("fleet_dir"), config.root / config.firmware_directory, config.root / "templates"]
        if config.source is not None:
            folders.append(config.source.parent)  # the config file itself: its folder, non-recursively
        return folders

    def run(self) -> None:
        self.rebuild("start")
        for folder in self.watched():
            if folder.is_dir():
                recursive = self.config.source is None or folder != self.config.source.parent
                self.observer.schedule(self.changes, str(folder), recursive=recursive)
        self.observer.start()
        threading.Thread(target=self.server.serve_forever, name="otapub-watch-http", daemon=True).start()
        self.echo(f"serving {self.config.path('site_dir')} at {self.url} (Ctrl-C to stop)")
        try:
            while not self.stop_event.is_set():
                paths = self.changes.take_when_quiet(self.stop_event)
                if paths:
                    self.rebuild(_describe(paths, self.config.root))
                elif not self.stop_event.is_set():
                    self.rebuild("time passed", quiet=True)
        finally:
            self.observer.stop()
            self.server.shutdown()
            self.server.server_close()
            self.observer.join(5)

    def stop(self) -> None:
        self.stop_event.set()


def _describe(paths: set[str], root: Path) -> str:
    names = sorted(str(Path(p).relative_to(root)) if Path(p).is_relative_to(root) else p for p in paths)
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "") + " changed"
