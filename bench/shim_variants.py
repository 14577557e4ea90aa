"""Serve the shim under gunicorn with settings `otapub serve` does not expose (experiments only).

    python bench/shim_variants.py --config CFG --port P [--workers W] [--threads T]
                                  [--worker-class gthread|sync] [--app shim|bare] [--log-level LEVEL]

Uses otapub.server's own option set (gunicorn_options) and overrides only what is asked, so a
variant differs from `otapub serve` in exactly those settings. ``--app bare`` serves a constant
JSON body instead of the shim: gunicorn's own ceiling on this machine. Used by bench_shim.py
(--variants) to back the worker recommendation with numbers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def bare_app(environ, start_response):
    body = b'{"update_available": false}'
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--worker-class", default="gthread")
    parser.add_argument("--app", choices=("shim", "bare"), default="shim")
    parser.add_argument("--log-level", help="override the config's log_level (the shim logs each check at INFO)")
    parser.add_argument("--no-checkin-log", action="store_true", help="serve without the check-in log")
    args = parser.parse_args()

    from otapub.config import configure_logging, load_config
    from otapub.server import gunicorn_options, make_app, run_gunicorn

    config = load_config(args.config)
    if args.log_level:
        config = config.replace(log_level=args.log_level.upper())
    configure_logging(config.log_level)
    options = gunicorn_options(config, args.host, args.port, args.workers, args.threads)
    options["worker_class"] = args.worker_class
    app = make_app(config) if args.app == "shim" else bare_app
    if args.no_checkin_log and args.app == "shim":
        app.checkins.path = None  # CheckinLog.append returns at once
    run_gunicorn(app, options)


if __name__ == "__main__":
    main()
