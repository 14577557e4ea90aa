"""The `otapub` command line: a thin skin over the library.

Library errors (OtapubError) become one clean message and a non-zero exit; a traceback
means a bug in otapub, never a user mistake.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from otapub import __version__
from otapub.config import Config, configure_logging, load_config
from otapub.errors import OtapubError

log = logging.getLogger("otapub")


class Context:
    def __init__(self, config_path: str | None):
        self.config_path = config_path
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
            configure_logging(self._config.log_level)
        return self._config


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except OtapubError as exc:
            click.echo(f"error: {exc}" if "\n" not in str(exc) else str(exc), err=True)
            sys.exit(exc.exit_code)

    return wrapper


pass_ctx = click.make_pass_decorator(Context)


def echo_table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    """Print rows as aligned columns; None shows as '-'."""
    table = [header] + [tuple("-" if cell is None else str(cell) for cell in row) for row in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def parse_now(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time (e.g. 2026-12-01T09:00:00Z)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


now_option = click.option("--now", metavar="TIME", help="Evaluate time-based rules at TIME (ISO 8601, UTC).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="OTAPUB_CONFIG",
              help="config.json to use (default: ./config.json when present).")
@click.version_option(__version__, prog_name="otapub")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """Publish OTA updates for ESP32 fleets from version-controlled YAML."""
    ctx.obj = Context(config_path)


@main.command()
@now_option
@click.option("--force", is_flag=True, help="Re-render every file, even when no input changed.")
@pass_ctx
@handle_errors
def build(ctx: Context, now: str | None, force: bool) -> None:
    """Validate the fleet, verify firmware and render the static site."""
    from otapub.build import build_site

    result = build_site(ctx.config, now=parse_now(now), force=force)
    click.echo(result.summary())


@main.command()
@now_option
@pass_ctx
@handle_errors
def check(ctx: Context, now: str | None) -> None:
    """Validate the fleet and verify firmware checksums; write nothing."""
    from otapub.build import plan_site

    plan = plan_site(ctx.config, now=parse_now(now), require_secret=False)
    click.echo(f"ok: {len(plan.fleet.devices)} devices, {len(plan.fleet.releases)} releases, "
               f"{len(plan.fleet.files)} fleet files")


@main.command()
@click.argument("mac")
@click.option("--scheme", help="Token scheme (default: the device's in the fleet, else the config's token_scheme).")
@click.option("--canonical", is_flag=True, help="Print the canonical form (the site's path key), not the wire form.")
@pass_ctx
@handle_errors
def token(ctx: Context, mac: str, scheme: str | None, canonical: bool) -> None:
    """Print the X-Device-Auth token a device must send."""
    from otapub.devices import token_for

    click.echo(token_for(ctx.config, mac, scheme, canonical))


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def checksum(file: Path, as_json: bool) -> None:
    """Print the MD5, SHA-256 and size of a firmware file."""
    from otapub.firmware import digest_file

    d = digest_file(file)
    if as_json:
        click.echo(json.dumps({"file": str(file), "md5": d.md5, "sha256": d.sha256, "size": d.size}))
    else:
        click.echo(f"md5:    {d.md5}\nsha256: {d.sha256}\nsize:   {d.size}")


@main.command()
@click.option("--host", help="Address to listen on (default: server_host).")
@click.option("--port", type=int, help="Port (default: server_port).")
@click.option("--workers", type=click.IntRange(1, 64), help="Worker processes (default: 2 per core, at most 8).")
@pass_ctx
@handle_errors
def serve(ctx: Context, host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the site and the device protocol under gunicorn (a rebuilt site is picked up live)."""
    from otapub.server import serve as run

    run(ctx.config, host, port, workers)


@main.command()
@click.option("--log", "log_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Check-in log to read (default: checkin_log).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@handle_errors
def status(ctx: Context, log_path: Path | None, as_json: bool) -> None:
    """Per device: last check, last reported version, target and state."""
    from otapub.status import fleet_status

    rows = fleet_status(ctx.config, log_path)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    echo_table(("MAC", "DEVICE ID", "TARGET", "REPORTED", "STATE", "LAST CHECK", "LAST UPDATE"),
               [(r.mac, r.device_id, r.target, r.last_version, r.state, r.last_check, r.last_update) for r in rows])


@main.command()
@click.option("--base", metavar="GIT-REF",
              help="Compare with this ref (default: the merge base with origin/main, or HEAD).")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json"]), default="text", show_default=True)
@now_option
@pass_ctx
@handle_errors
def plan(ctx: Context, base: str | None, fmt: str, now: str | None) -> None:
    """Show what the working tree's fleet changes do to devices, compared with a git ref."""
    from otapub.plan import compute_plan, render_plan

    result = compute_plan(ctx.config, base, parse_now(now))
    click.echo(render_plan(result, fmt, ctx.config), nl=False)
    if not result.valid:
        sys.exit(1)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, help="Port (default: server_port).")
@click.option("--poll", is_flag=True, help="Poll for changes (Docker bind mounts, network file systems).")
@pass_ctx
@handle_errors
def watch(ctx: Context, host: str, port: int | None, poll: bool) -> None:
    """Build, serve locally, and rebuild on every change to the fleet, firmware, templates or config."""
    from otapub.server import refuse_placeholders
    from otapub.watch import Watcher

    refuse_placeholders(ctx.config)
    watcher = Watcher(ctx.config_path, host, port if port is not None else ctx.config.server_port, poll, click.echo)
    try:
        watcher.run()
    except KeyboardInterrupt:
        watcher.stop()
