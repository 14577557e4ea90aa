"""The `otapub` command line: a thin skin over the library.

Library errors (OtapubError) become one clean message and a non-zero exit; a traceback
means a bug in otapub, never a user mistake.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shlex
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
        except OSError as exc:  # a path that cannot be used (a setting naming a file as a folder, no permission ...)
            log.debug("file system error", exc_info=True)  # the traceback, for OTA_SERVER_LOG_LEVEL=DEBUG
            click.echo(f"error: {_os_error(exc)}", err=True)
            sys.exit(1)

    return wrapper


def _os_error(exc: OSError) -> str:
    path = exc.filename
    if path is None:
        return exc.strerror or str(exc)
    if isinstance(exc, FileExistsError) and not os.path.isdir(path):
        why = "exists and is not a folder"
    elif isinstance(exc, NotADirectoryError):
        why = "part of this path is a file, not a folder"
    else:
        why = exc.strerror or str(exc)
    return f"{path}: {why} (check the paths in the config: site_dir, state_dir, firmware_directory, ...)"


pass_ctx = click.make_pass_decorator(Context)


def echo_table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    """Print rows as aligned columns; None shows as '-'. One write: a fleet's status is 100,000 rows."""
    table = [header, *(tuple("-" if cell is None else str(cell) for cell in row) for row in rows)]
    widths = [max(map(len, column)) for column in zip(*table, strict=True)]
    line = "  ".join(f"{{:<{width}}}" for width in widths).format
    click.echo("\n".join(line(*row).rstrip() for row in table))


def parse_now(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time (e.g. 2026-12-01T09:00:00Z)",
                                 param_hint="'--now'") from None
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


@main.command("init")
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--package", "requirement", metavar="REQUIREMENT",
              help="The pip requirement CI installs otapub from, written to requirements.txt (default: this "
                   "otapub, pinned: the git commit or https archive pip installed, or its version from an index).")
@handle_errors
def init_command(directory: Path, requirement: str | None) -> None:
    """Create a new fleet repository in DIRECTORY (default: here); never overwrites a file.

    It holds an example fleet (fleet/, firmware/ with a generated example image), config.json
    (no secrets), .gitignore, requirements.txt, the GitHub workflows (check and plan pull
    requests, publish to GitHub Pages) and a README. It passes `otapub check` at once.
    """
    from otapub.scaffold import init_repository, installed_requirement

    done = init_repository(directory, requirement if requirement is not None else installed_requirement())
    click.echo(f"created {len(done.files)} files in {directory}:")
    for name in done.files:
        click.echo(f"  {name}")
    click.echo(f"CI installs {done.requirement} (requirements.txt)\n"
               f"next: cd {shlex.quote(str(directory))} && git init && otapub check; then see README.md")


@main.command()
@click.option("--now", metavar="TIME", help="Evaluate time-based rollout stages at TIME (ISO 8601, UTC); "
              "signed answers still expire relative to the real clock.")
@click.option("--force", is_flag=True, help="Re-render every file, even when no input changed.")
@pass_ctx
@handle_errors
def build(ctx: Context, now: str | None, force: bool) -> None:
    """Validate the fleet, verify firmware and render the static site."""
    from otapub.build import build_site

    result = build_site(ctx.config, rollout_time=parse_now(now), force=force)
    click.echo(result.summary())


@main.command()
@now_option
@pass_ctx
@handle_errors
def check(ctx: Context, now: str | None) -> None:
    """Run every check build runs (fleet, firmware, anti-rollback); write nothing."""
    from otapub.check import check_site

    fleet = check_site(ctx.config, now=parse_now(now)).fleet
    click.echo(f"ok: {len(fleet.devices)} devices, {len(fleet.releases)} releases, {len(fleet.files)} fleet files")


@main.command()
@click.argument("mac")
@click.option("--scheme", help="Token scheme (default: the device's in the fleet, else the config's token_scheme).")
@click.option("--canonical", is_flag=True, help="Print the canonical form (the site's path key), not the wire form.")
@click.option("--urls", is_flag=True, help="Print where each of the device's clients (fleet YAML `client:`) is "
                                           "pointed: URL and header (docs/clients.md).")
@pass_ctx
@handle_errors
def token(ctx: Context, mac: str, scheme: str | None, canonical: bool, urls: bool) -> None:
    """Print the X-Device-Auth token a device must send."""
    from otapub.devices import client_urls_for, token_for

    if urls:
        if canonical:
            raise click.UsageError("--urls prints both forms of the token: leave out --canonical")
        click.echo("\n".join(client_urls_for(ctx.config, mac, scheme)))
        return
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
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default: server_port).")
@click.option("--workers", type=click.IntRange(1, 64),
              help="Worker processes (default: one per core plus one; gunicorn: two per core, at most 8).")
@click.option("--server", type=click.Choice(("granian", "gunicorn")), default="granian", show_default=True,
              help="Production WSGI server to run the shim under.")
@pass_ctx
@handle_errors
def serve(ctx: Context, host: str | None, port: int | None, workers: int | None, server: str) -> None:
    """Serve the site and the device protocol (a rebuilt site is picked up live)."""
    from otapub.server import serve as run

    run(ctx.config, host, port, workers, server)


@main.command()
@click.option("--log", "logs", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Another check-in log to fold into the store first, e.g. the Worker's converted logs "
                   "(repeatable; the shim's checkin_log is always folded).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@handle_errors
def status(ctx: Context, logs: tuple[Path, ...], as_json: bool) -> None:
    """Per device: last check, last reported version, target and state.

    Answers from the check-in store (checkin_db), after folding in what the logs gained since
    the last call.
    """
    from otapub import fleetstatus

    click.echo((fleetstatus.fleet_status_json if as_json else fleetstatus.fleet_status_table)(ctx.config, logs))


@main.command()
@click.option("--log", "logs", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Another check-in log to fold too, e.g. the Worker's converted logs (repeatable; the "
                   "shim's checkin_log is always folded).")
@click.option("--every", type=click.FloatRange(0.1, 86400), metavar="SECONDS",
              help="Keep folding, this often, until SIGTERM or SIGINT; a line is printed for the first fold "
                   "and for each that folded something.")
@pass_ctx
@handle_errors
def fold(ctx: Context, logs: tuple[Path, ...], every: float | None) -> None:
    """Fold what the check-in logs gained into the check-in store, and say how much.

    For a cron job or systemd timer beside a server whose checkin_fold_seconds is 0, and for the
    Worker's exports. `otapub status` folds what is left anyway, but has less to do then.
    """
    from otapub.checkinstore import FoldResult, fold_logs
    from otapub.folding import follow_until_signalled

    def say(result: FoldResult) -> None:
        skipped = f", lines skipped: {result.skipped}" if result.skipped else ""
        click.echo(f"folded check-ins: {result.lines}, bytes: {result.bytes}{skipped}, seconds: {result.seconds:.2f}")

    if every is None:
        say(fold_logs(ctx.config, logs))
        return
    first = True

    def report(result: FoldResult) -> None:
        nonlocal first
        if first or result.lines or result.skipped:
            say(result)
        first = False

    follow_until_signalled(ctx.config, every, logs, report)


@main.command()
@click.argument("rollout", required=False)
@click.option("--log", "logs", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Another check-in log to fold into the store first (repeatable).")
@click.option("--write", is_flag=True,
              help="Record what a gate decided in the fleet YAML (`halted:`, or the waiting stage's "
                   "`not_before:`) for review as a pull request.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@now_option
@pass_ctx
@handle_errors
def health(ctx: Context, rollout: str | None, logs: tuple[Path, ...], write: bool, as_json: bool,
           now: str | None) -> None:
    """Per rollout stage: devices offered, updated, failed, silent; checked against the gates.

    Exit status: 0 when no gate decided anything, 4 when a stage crossed its `halt_if` gate (the
    rollout must halt), 3 when the open stage passed its `advance_after` gate (the next stage may
    open). With --write the decision is written into the rollout's YAML file first.
    """
    from otapub.health import exit_code, fleet_health, write_gates

    moment = parse_now(now)
    healths = fleet_health(ctx.config, rollout, logs, moment)
    if as_json:
        click.echo(json.dumps([h.to_dict() for h in healths], indent=2))
    else:
        for item in healths:
            click.echo("\n".join(item.lines()))
        if not healths:
            click.echo("no rollouts")
    if write:
        for path in write_gates(ctx.config, healths, moment):
            click.echo(f"wrote {path}", err=True)
    code = exit_code(healths)
    if code:
        sys.exit(code)


@main.command()
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write index.html into (not inside site_dir: the page names every device).")
@click.option("--days", type=click.IntRange(1, 3650), default=90, show_default=True,
              help="Days of version history to plot.")
@click.option("--silent-days", type=click.IntRange(1, 3650), default=3, show_default=True,
              help="A device not seen for this many days counts as silent.")
@click.option("--log", "logs", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Another check-in log to fold into the store first (repeatable).")
@now_option
@pass_ctx
@handle_errors
def dashboard(ctx: Context, out: Path, days: int, silent_days: int, logs: tuple[Path, ...], now: str | None) -> None:
    """Write the fleet dashboard as one self-contained HTML page (works offline).

    The same page is served by `otapub serve` at /admin/dashboard to whoever presents the admin
    key (X-Admin-API-Key, or as the password of HTTP Basic authentication in a browser).
    """
    from otapub.dashboard import export

    click.echo(f"wrote {export(ctx.config, out, parse_now(now), days, silent_days, logs)}")


@main.command()
@click.option("--base", metavar="GIT-REF",
              help="Compare with this ref (default: the merge base with origin/main, or HEAD).")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json"]), default="text", show_default=True,
              help="text for a terminal, markdown for a pull-request comment, json for scripts.")
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
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default: server_port).")
@click.option("--poll", is_flag=True, help="Poll for changes (Docker bind mounts, network file systems).")
@pass_ctx
@handle_errors
def watch(ctx: Context, host: str, port: int | None, poll: bool) -> None:
    """Build, serve locally, and rebuild on every change to the fleet, firmware, templates or config."""
    from otapub.watch import Watcher

    ctx.config.refuse_placeholders(doing="refusing to start: ")
    watcher = Watcher(ctx.config_path, host, port if port is not None else ctx.config.server_port, poll, click.echo)
    try:
        watcher.run()
    except KeyboardInterrupt:
        watcher.stop()


# -- fleet administration (the seed's admin_tools.py verbs) ----------------------------------
@main.group()
def device() -> None:
    """List, show, add, update and delete devices: every change is an edit of the fleet YAML."""


def _device_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--chip", help="The device's chip (esp32c6, ESP32-C6 …): its target release must be "
                                       "for it; '' removes it.")(func)
    func = click.option("--channel", help="Its release channel (default: stable); '' removes it.")(func)
    func = click.option("--token-scheme", help="Its token scheme, when not the configured token_scheme "
                                               "(djb2-0: the seed's firmware); '' removes it.")(func)
    func = click.option("--release", help="Pin this release by name.")(func)
    func = click.option("--firmware-file", type=click.Path(dir_okay=False, path_type=Path),
                        help="Use this firmware (copied into firmware_directory when outside it); "
                             "its release is reused or created.")(func)
    func = click.option("--version", "version", help="Firmware version: alone, pins like target_version.")(func)
    func = click.option("--hardware", help="Board name (the firmware's `hardware`); '' removes it.")(func)
    return click.option("--device-id", help="The name the firmware calls itself; '' removes it.")(func)


def _edit_summary(verb: str, mac: str, result: Any, config: Config) -> str:
    from otapub.edit import repo_path

    if not result.changed:
        return f"{mac}: unchanged"
    files = ", ".join(repo_path(p, config.root) for p in result.written)
    lines = [f"{verb} {mac} in {files}"]
    lines += [f"created release {name}" for name in result.releases]
    lines += [f"copied firmware to {repo_path(p, config.root)}" for p in result.firmware]
    lines.append("commit the change to publish it (or run `otapub build`)")
    return "\n".join(lines)


@device.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, keyed by MAC.")
@pass_ctx
@handle_errors
def device_list(ctx: Context, as_json: bool) -> None:
    """All devices: target and what the check-in log last saw."""
    from otapub.devices import Views, load

    views = Views(ctx.config, load(ctx.config)).all()
    if as_json:
        click.echo(json.dumps(views, indent=2))
        return
    if not views:
        click.echo("no devices in the fleet")
        return
    echo_table(("MAC", "DEVICE ID", "HARDWARE", "TARGET", "LAST CHECK", "REPORTED"),
               [(v["mac_address"], v["device_id"], v["hardware"],
                 f"{v['target_version']} ({v['release']})" if v["release"] else None,
                 v["last_check"], v["last_version"]) for v in views.values()])


@device.command("get")
@click.argument("mac")
@click.option("--show-token", is_flag=True, help="Also print the X-Device-Auth token (needs the secret).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@handle_errors
def device_get(ctx: Context, mac: str, show_token: bool, as_json: bool) -> None:
    """Everything known about one device."""
    from otapub.devices import Views, checkin_history, device_token, load
    from otapub.edit import DeviceNotFound, parse_mac

    mac = parse_mac(mac)
    fleet = load(ctx.config)
    if mac not in fleet.devices:
        raise DeviceNotFound(f"no device {mac} in the fleet")
    view = {**Views(ctx.config, fleet).view(fleet.devices[mac]), **checkin_history(ctx.config, mac)}
    if show_token:
        view["token"] = device_token(ctx.config, fleet.devices[mac])
    if as_json:
        click.echo(json.dumps(view, indent=2))
        return
    width = max(len(k) for k in view)
    for key, value in view.items():
        click.echo(f"{key + ':':<{width + 1}} {'-' if value is None else value}")


def _keep(value: str | None) -> Any:
    from otapub.edit import KEEP

    return KEEP if value is None else (value or None)


def _edit_keywords(options: dict[str, Any], update: bool) -> dict[str, Any]:
    """The device options as add_device/update_device keywords: '' removes a field, and in an
    update an option not given leaves its field as it is."""
    from otapub.edit import Target

    target = Target(release=options.pop("release"), version=options.pop("version"),
                    firmware_file=options.pop("firmware_file"))
    return {"target": target, **{name: _keep(value) if update else (value or None) for name, value in options.items()}}


@device.command("add")
@click.argument("mac")
@_device_options
@pass_ctx
@handle_errors
def device_add(ctx: Context, mac: str, **options: Any) -> None:
    """Add a device to default_device_file."""
    from otapub.edit import add_device, parse_mac

    result = add_device(ctx.config, mac, **_edit_keywords(options, update=False))
    click.echo(_edit_summary("added", parse_mac(mac), result, ctx.config))


@device.command("update")
@click.argument("mac")
@_device_options
@pass_ctx
@handle_errors
def device_update(ctx: Context, mac: str, **options: Any) -> None:
    """Change a device in the file that declares it; options not given stay as they are."""
    from otapub.edit import parse_mac, update_device

    result = update_device(ctx.config, mac, **_edit_keywords(options, update=True))
    click.echo(_edit_summary("updated", parse_mac(mac), result, ctx.config))


@device.command("delete")
@click.argument("mac")
@pass_ctx
@handle_errors
def device_delete(ctx: Context, mac: str) -> None:
    """Remove a device's entry from the fleet YAML."""
    from otapub.edit import delete_device, parse_mac

    result = delete_device(ctx.config, mac)
    click.echo(_edit_summary("deleted", parse_mac(mac), result, ctx.config))


# -- safe releases: firmware inspection and target explanation -------------------------------
@main.command("inspect")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON (also for an invalid image, with its error).")
@handle_errors
def inspect_command(file: Path, as_json: bool) -> None:
    """Check that FILE is an ESP32 app image; print its chip, version, project and segments."""
    from otapub.inspection import describe, inspect_report

    info, report = inspect_report(file)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    elif info is not None:
        click.echo(f"{file}: ESP32-family application image")
        click.echo("\n".join(describe(info)))
    if info is None:
        if not as_json:
            click.echo(f"error: {file} is not an ESP32 application image: {report['error']}", err=True)
        sys.exit(1)


@main.command()
@click.argument("mac")
@now_option
@pass_ctx
@handle_errors
def explain(ctx: Context, mac: str, now: str | None) -> None:
    """Say which rule gives device MAC its target (pin, rollout, channel), and why others do not."""
    from otapub.devices import explain_device

    click.echo("\n".join(explain_device(ctx.config, mac, parse_now(now)).lines()))


@main.command("import-seed")
@click.argument("devices_json", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--config", "seed_config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The seed server's config.json (non-secret settings carry over into otapub's).")
@click.option("--firmware-dir", type=click.Path(file_okay=False, path_type=Path),
              help="The seed's firmware folder (default: its firmware_directory, else ./firmware beside the JSON).")
@click.option("--token-scheme", default="djb2-0", show_default=True,
              help="Token scheme the imported devices use (the seed's server checked djb2-0).")
@click.option("--skip-missing", is_flag=True,
              help="Import devices whose firmware is not found without a release, instead of failing.")
@pass_ctx
@handle_errors
def import_seed(ctx: Context, devices_json: Path, seed_config: Path | None, firmware_dir: Path | None,
                token_scheme: str, skip_missing: bool) -> None:
    """Convert a seed server's devices.json (and config.json) into fleet YAML."""
    from otapub.edit import repo_path
    from otapub.seedimport import import_seed as run

    config = ctx.config
    report = run(config, devices_json, seed_config, firmware_dir, skip_missing=skip_missing,
                 token_scheme=token_scheme)
    result = report.result
    click.echo(f"{len(report.added)} added, {len(report.updated)} updated, {len(report.unchanged)} unchanged")
    if result is not None:
        for name in result.releases:
            click.echo(f"created release {name}")
        for path in result.firmware:
            click.echo(f"copied firmware to {repo_path(path, config.root)}")
        for path in result.written:
            click.echo(f"wrote {repo_path(path, config.root)}")
    for name, value in report.config_changes.items():
        click.echo(f"config: {name} = {json.dumps(value)} ({report.config_file})")
    for note in report.notes:
        click.echo(f"note: {note}")
    if report.runtime:
        click.echo("runtime state, not imported (the shim's check-in log records it from now on):")
        echo_table(("MAC", "LAST CHECK", "LAST UPDATE"),
                   [(mac, r.get("last_check"), r.get("last_update")) for mac, r in sorted(report.runtime.items())])
    if not report.changed:
        click.echo("nothing to change: the fleet already holds this data")


# -- security: per-device keys, signed answers, audit (docs/security.md) ----------------------
@main.command()
@click.argument("mac")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "nvs-csv"]), default="text", show_default=True,
              help="text for a person, json for a provisioning script, nvs-csv for nvs_partition_gen.py.")
@pass_ctx
@handle_errors
def provision(ctx: Context, mac: str, fmt: str) -> None:
    """Print device MAC's own hmac-sha256 key (to flash into NVS) and its token. The key is a secret."""
    from otapub.provision import provision as make

    found = make(ctx.config, mac)
    if fmt == "json":
        click.echo(json.dumps(found.to_dict(), indent=2))
    elif fmt == "nvs-csv":
        click.echo(found.nvs_csv(), nl=False)
    else:
        click.echo(f"device:     {found.mac}\nscheme:     {found.scheme}\n"
                   f"device key: {found.device_key}\ntoken:      {found.token}\n\n"
                   "NVS partition CSV (nvs_partition_gen.py; Arduino: Preferences \"otapub\", getBytes "
                   "\"device_key\"):\n" + found.nvs_csv() + "\n" + found.next_step())


@main.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the private key to this new file (mode 0600; refused inside any git work tree or the site); "
                   "without it, the private key goes to standard output only.")
@pass_ctx
@handle_errors
def keygen(ctx: Context, out: Path | None) -> None:
    """Create an Ed25519 key for signing answers; print its key id and public key."""
    from otapub.signing import generate_key, write_key_file

    private_b64, key = generate_key()
    public = f"keyid:      {key.keyid}\npublic key: {key.public_raw.hex()}"
    if out is None:
        click.echo(private_b64)  # for a pipe into a secret store: OTA_SERVER_SIGNING_KEY
        click.echo(public, err=True)
        return
    write_key_file(out, private_b64, ctx.config)
    click.echo(f"wrote the private key to {out} (mode 0600): keep it out of the repository and the site\n{public}\n"
               f"use it with `signing_key_file: {out}` in config.json, or OTA_SERVER_SIGNING_KEY=\"$(cat {out})\"")


@main.command()
@click.argument("answer", type=click.File("rb"))
@click.option("--keys", "keys_file", type=click.File("rb"), help="Trusted keys: a keys.json (as the site publishes).")
@click.option("--public-key", "public_keys", multiple=True,
              help="A trusted public key: 64 hex digits or base64 (repeatable).")
@click.option("--mac", help="The device the answer must be for (required: a device rejects another's answer).")
@click.option("--min-version", type=click.IntRange(0), help="Reject a manifest_version below this (the highest "
                                                             "the device has seen).")
@click.option("--min-secure-version", type=click.IntRange(0),
              help="Reject a release whose secure_version is below this (the device's eFuse counter).")
@now_option
@handle_errors
def verify(answer: Any, keys_file: Any, public_keys: tuple[str, ...], mac: str | None, min_version: int | None,
           min_secure_version: int | None, now: str | None) -> None:
    """Check a signed ANSWER file as a device does: signature, MAC, expiry and version ('-': stdin)."""
    from otapub.mac import normalize_mac
    from otapub.signing import SigningError, key_id, load_keys_document, parse_public_key, verify_answer

    keys: dict[str, bytes] = {}
    if keys_file is not None:
        keys.update(load_keys_document(keys_file.read(), keys_file.name))
    for index, text in enumerate(public_keys):
        raw = parse_public_key(text, f"--public-key #{index + 1}")
        keys[key_id(raw)] = raw
    if not keys:
        raise SigningError("give the trusted keys: --keys keys.json or --public-key KEY")
    if mac is None:  # "ok" must mean what a device checks, and a device checks that the answer is its own
        raise click.UsageError("give --mac MAC, the device the answer must be for: a device rejects an answer "
                               "for another MAC, so an answer is only verified against one")
    try:
        device = normalize_mac(mac)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--mac") from None
    found = verify_answer(answer.read(), keys, parse_now(now), device, min_version, min_secure_version)
    content = found.content
    release = content.get("release")
    what = f"release {release} (firmware {content.get('firmware_version')})" if release else "no release"
    click.echo(f"ok: answer for {content.get('mac')}: {what}; manifest_version {found.manifest_version}, "
               f"expires {content.get('expires')}, signed by key {found.keyid}")


@main.command("audit")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="text for a person, json for CI.")
@click.option("--strict", is_flag=True, help="Exit non-zero on warnings too, not only on errors.")
@now_option
@pass_ctx
@handle_errors
def audit_command(ctx: Context, fmt: str, strict: bool, now: str | None) -> None:
    """List the fleet's security posture: tokens, secrets, HTTPS, signing, keys, anti-rollback, checksums."""
    from otapub.audit import audit

    report = audit(ctx.config, parse_now(now))
    click.echo(report.to_json() if fmt == "json" else report.to_text(), nl=False)
    if report.failed(strict):
        sys.exit(1)
