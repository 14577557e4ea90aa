"""Run the shim under gunicorn, the production WSGI server (not the stdlib dev server)."""

from __future__ import annotations

import logging
import os
from typing import Any

from gunicorn.app.base import BaseApplication

from otapub.config import Config
from otapub.errors import OtapubError

log = logging.getLogger(__name__)


class _Gunicorn(BaseApplication):
    def __init__(self, app: Any, options: dict[str, Any]):
        self._app = app
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            if key in self.cfg.settings:  # settings newer than the installed gunicorn are skipped
                self.cfg.set(key, value)

    def load(self) -> Any:
        return self._app


def refuse_placeholders(config: Config) -> None:
    """The seed shipped well-known placeholder secrets: never serve with one of them."""
    names = config.placeholder_secrets()
    if names and not config.debug_mode:
        raise OtapubError(f"refusing to start: {', '.join(names)} still holds the seed's published placeholder "
                          "value; set a real secret (or debug_mode for local experiments)")


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
    }


def serve(config: Config, host: str | None = None, port: int | None = None, workers: int | None = None,
          threads: int = 4) -> None:
    """Serve the site (and the admin API when a key is set) until interrupted."""
    from otapub.shim import make_app

    refuse_placeholders(config)
    site = config.path("site_dir")
    if not (site / "build.json").is_file():
        log.warning("%s holds no built site yet: run `otapub build`; serving 401/404 until then", site)
    workers = workers or min(2 * (os.cpu_count() or 1), 8)
    options = gunicorn_options(config, host or config.server_host, port or config.server_port, workers, threads)
    _Gunicorn(make_app(config), options).run()
