"""The seed's admin REST API, over the fleet YAML instead of a hidden devices.json.

Routes, header and payloads are the seed's (``/admin/devices…``, ``X-Admin-API-Key``). A write
goes through the same code as ``otapub device`` (otapub.edit: validated like ``otapub check``,
atomic, serialised), then the site is rebuilt so the shim serves the change at once; with
``admin_git_commit`` each change also becomes a git commit naming the verb, MAC and client.

The shim mounts this application for every path under ``/admin/``; it also runs on its own.
Bad input always gets a 4xx JSON ``{"error": …}``, never a 5xx.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from otapub.build import build_site
from otapub.config import Config
from otapub.devices import Views, checkin_history, load
from otapub.edit import (
    KEEP,
    DeviceExists,
    DeviceNotFound,
    EditResult,
    FleetEdit,
    Target,
    edit_fleet,
    parse_mac,
    repo_path,
)
from otapub.errors import OtapubError, ValidationError
from otapub.git import run_git

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
_COLLECTION = re.compile(r"/admin/devices/?")
_ITEM = re.compile(r"/admin/devices/([^/]{1,64})/?")
_STATUS = {200: "200 OK", 201: "201 Created", 400: "400 Bad Request", 401: "401 Unauthorized",
           404: "404 Not Found", 405: "405 Method Not Allowed", 409: "409 Conflict",
           500: "500 Internal Server Error", 503: "503 Service Unavailable"}
_TEXT_FIELDS = ("mac_address", "device_id", "hardware_version", "hardware", "target_version", "firmware_url",
                "checksum", "release")
# Read-only fields of a device view: accepted and ignored, so a client may PUT back what it GOT.
_IGNORED = frozenset({"last_check", "last_update", "last_version", "last_decision", "checks", "sha256", "size",
                      "pinned_by", "token_scheme", "clients", "declared_in", "first_seen", "last_ip",
                      "last_client", "versions_first_reported", "checks_per_day"})
_TARGET_FIELDS = ("release", "target_version", "firmware_url")

StartResponse = Callable[..., Any]
DASHBOARD_SECONDS = 60  # the served dashboard is at most this old


class _Reply(Exception):
    def __init__(self, status: int, error: str, **extra: Any):
        super().__init__(error)
        self.status = status
        self.body = {"error": error, **extra}


class AdminApp:
    """WSGI application for ``/admin/devices`` and ``/admin/devices/<mac>``."""

    def __init__(self, config: Config, rebuild: bool = True):
        self.config = config
        key = config.admin_api_key or None
        config.refuse_placeholders(["admin_api_key"])
        self._key = key.encode("utf-8") if key is not None else None
        self.rebuild = rebuild
        self._page: tuple[float, bytes | None] = (0.0, None)
        self._page_lock = threading.Lock()

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        if (environ.get("PATH_INFO") or "/") in ("/admin/dashboard", "/admin/dashboard/"):
            return self.dashboard(environ, start_response)
        extra: list[tuple[str, str]] = []
        try:
            status, body = self._handle(environ, extra)
        except _Reply as reply:
            status, body = reply.status, reply.body
        except OtapubError as exc:  # the server's own files (e.g. an unusable check-in store), not the request
            status, body = _unavailable(exc)
        except Exception:  # a bug, not a user mistake: log it, keep serving
            log.exception("admin API: internal error on %s %s", environ.get("REQUEST_METHOD"),
                          str(environ.get("PATH_INFO", ""))[:200])
            status, body = 500, {"error": "Internal server error"}
        data = json.dumps(body, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                   ("Cache-Control", "no-store"), *extra]
        start_response(_STATUS[status], headers)
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [data]

    # -- routing -------------------------------------------------------------------------
    def _handle(self, environ: dict, extra: list[tuple[str, str]]) -> tuple[int, Any]:
        if self._key is None:  # the API is off: do not even admit that it exists
            raise _Reply(404, "Not found")
        offered = environ.get("HTTP_X_ADMIN_API_KEY", "")
        if not hmac.compare_digest(offered.encode("latin-1", "replace"), self._key):
            raise _Reply(401, "Unauthorized: a valid X-Admin-API-Key header is required")
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if _COLLECTION.fullmatch(path):
            routes = {"GET": self.list, "POST": self.add}
            args: tuple = ()
        elif match := _ITEM.fullmatch(path):
            routes = {"GET": self.get, "PUT": self.update, "DELETE": self.delete}
            args = (_mac(match[1]),)
        else:
            raise _Reply(404, "Not found")
        handler = routes.get(method)
        if handler is None:
            extra.append(("Allow", ", ".join(routes)))
            raise _Reply(405, "Method not allowed")
        return handler(environ, *args)

    # -- the dashboard page ----------------------------------------------------------------
    def _browser_key_ok(self, environ: dict) -> bool:
        """The admin key from X-Admin-API-Key, or as the password of HTTP Basic (a browser's only way)."""
        offered = environ.get("HTTP_X_ADMIN_API_KEY", "").encode("latin-1", "replace")
        basic = environ.get("HTTP_AUTHORIZATION", "")
        if not offered and basic[:6].lower() == "basic ":
            try:
                offered = base64.b64decode(basic[6:].strip(), validate=True).partition(b":")[2]
            except ValueError:
                offered = b""
        return self._key is not None and hmac.compare_digest(offered, self._key)

    def _dashboard_page(self) -> bytes:
        """The page, computed at most once per DASHBOARD_SECONDS (100,000 devices take seconds)."""
        from otapub.dashboard import dashboard_data, render_page

        with self._page_lock:
            made, page = self._page
            if page is None or time.monotonic() - made > DASHBOARD_SECONDS:
                page = render_page(dashboard_data(self.config)).encode("utf-8")
                self._page = (time.monotonic(), page)
            return page

    def dashboard(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        """GET /admin/dashboard: the fleet dashboard page (otapub.dashboard), admin key required."""
        headers = [("Cache-Control", "no-store"), ("X-Frame-Options", "DENY"), ("Referrer-Policy", "no-referrer"),
                   ("X-Content-Type-Options", "nosniff")]
        if self._key is None:
            status, body, kind = 404, b'{"error": "Not found"}\n', "application/json"
        elif not self._browser_key_ok(environ):
            status, body, kind = 401, b'{"error": "Unauthorized: the admin key is required"}\n', "application/json"
            headers.append(("WWW-Authenticate", 'Basic realm="otapub admin", charset="UTF-8"'))
        elif environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            status, body, kind = 405, b'{"error": "Method not allowed"}\n', "application/json"
            headers.append(("Allow", "GET, HEAD"))
        else:
            try:
                status, kind = 200, "text/html; charset=utf-8"
                body = self._dashboard_page()
                headers.append(("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; "
                                "style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"))
            except ValidationError as exc:
                status, kind = 400, "application/json"
                body = json.dumps({"error": "the fleet YAML does not validate",
                                   "problems": [str(p) for p in exc.problems]}).encode() + b"\n"
            except OtapubError as exc:
                status, kind = 503, "application/json"
                body = json.dumps(_unavailable(exc)[1]).encode() + b"\n"
            except Exception:  # a bug, not a user mistake: log it, keep serving
                log.exception("admin dashboard: internal error")
                status, body, kind = 500, b'{"error": "Internal server error"}\n', "application/json"
        headers += [("Content-Type", kind), ("Content-Length", str(len(body)))]
        start_response(_STATUS[status], headers)
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]

    # -- reads ---------------------------------------------------------------------------
    def list(self, environ: dict) -> tuple[int, Any]:
        return 200, Views(self.config, self._fleet()).all()

    def get(self, environ: dict, mac: str) -> tuple[int, Any]:
        fleet = self._fleet()
        if mac not in fleet.devices:
            raise _Reply(404, "Device not found")
        return 200, {**Views(self.config, fleet).view(fleet.devices[mac]), **checkin_history(self.config, mac)}

    def _fleet(self) -> Any:
        try:
            return load(self.config)
        except ValidationError as exc:  # the YAML in the repository is broken: say so, once
            raise _Reply(400, "the fleet YAML does not validate", problems=[str(p) for p in exc.problems]) from None

    # -- writes --------------------------------------------------------------------------
    def add(self, environ: dict) -> tuple[int, Any]:
        body = _body(environ)
        fields = _fields(body)
        if body.get("mac_address") is None:
            raise _Reply(400, "MAC address is required (mac_address)")
        mac = _mac(body["mac_address"])
        result, git = self._edit(environ, "add", mac, lambda e: e.add(
            mac, device_id=fields.get("device_id"), hardware=fields.get("hardware"), target=fields["target"]))
        return 201, {"message": "Device added", "device": self._view(result, mac), **self._after(result, git)}

    def update(self, environ: dict, mac: str) -> tuple[int, Any]:
        body = _body(environ)
        fields = _fields(body)
        if body.get("mac_address") is not None and _mac(body["mac_address"]) != mac:
            raise _Reply(400, "mac_address in the body differs from the one in the URL")
        result, git = self._edit(environ, "update", mac, lambda e: e.update(
            mac, device_id=fields.get("device_id", KEEP), hardware=fields.get("hardware", KEEP),
            target=fields["target"], unpin=fields["unpin"]))
        return 200, {"message": "Device updated", "device": self._view(result, mac), **self._after(result, git)}

    def delete(self, environ: dict, mac: str) -> tuple[int, Any]:
        result, git = self._edit(environ, "delete", mac, lambda e: e.delete(mac))
        return 200, {"message": "Device deleted", "mac_address": mac, **self._after(result, git)}

    def _edit(self, environ: dict, verb: str, mac: str,
              change: Callable[[FleetEdit], Any]) -> tuple[EditResult, dict[str, Any] | None]:
        remote = environ.get("REMOTE_ADDR") or "unknown"
        git = None
        try:
            with edit_fleet(self.config) as edit:
                change(edit)
                result = edit.commit()
                if result.changed and self.config.admin_git_commit:
                    git = git_commit(self.config, result, f"otapub admin: {verb} {mac} (from {remote})")
        except DeviceNotFound as exc:
            raise _Reply(404, "Device not found", detail=str(exc)) from None
        except DeviceExists as exc:
            raise _Reply(409, "Device already exists", detail=str(exc)) from None
        except ValidationError as exc:
            raise _Reply(400, "the change does not validate; nothing was written",
                         problems=[str(p) for p in exc.problems]) from None
        except OtapubError as exc:
            raise _Reply(400, str(exc)) from None
        log.info("admin API: %s %s from %s (%s)", verb, mac, remote,
                 ", ".join(repo_path(p, self.config.root) for p in result.written) or "no change")
        return result, git

    def _view(self, result: EditResult, mac: str) -> dict[str, Any]:
        return Views(self.config, result.fleet, result.digests).view(result.fleet.devices[mac])

    def _after(self, result: EditResult, git: dict[str, Any] | None) -> dict[str, Any]:
        """Rebuild the site (the shim serves the change at once); report git and build."""
        out: dict[str, Any] = {"changed": [repo_path(p, self.config.root) for p in result.written + result.firmware]}
        if git is not None:
            out["git"] = git
        if self.rebuild and result.changed:
            try:
                out["site"] = {"rebuilt": True, "summary": build_site(self.config).summary()}
            except OtapubError as exc:  # the YAML change stands; the site lags until the next build
                log.error("admin API: site rebuild failed: %s", exc)
                out["site"] = {"rebuilt": False, "error": str(exc)}
        return out


def git_commit(config: Config, result: EditResult, message: str) -> dict[str, Any]:
    """Commit the files an edit wrote, and only those, when the repository is a git work tree."""
    root = config.root
    paths = [str(p) for p in result.written + result.firmware]

    def git(*args: str) -> tuple[int, str]:
        done = run_git(root, *args)
        return done.returncode, (done.stderr or done.stdout).decode(errors="replace").strip() if done.returncode \
            else done.stdout.decode(errors="replace").strip()

    try:
        if git("rev-parse", "--is-inside-work-tree")[1] != "true":
            return {"committed": False, "error": f"{root} is not in a git work tree"}
        identity: list[str] = []
        if not git("config", "user.email")[1]:
            identity = ["-c", "user.name=otapub admin API", "-c", "user.email=otapub@localhost"]
        status, output = git("add", "--", *paths)
        if status == 0:
            status, output = git(*identity, "commit", "--quiet", "-m", message, "--", *paths)
        if status != 0:
            error = output.splitlines()
            log.error("admin API: git commit failed: %s", error[-1] if error else status)
            return {"committed": False, "error": error[-1] if error else "git failed"}
        return {"committed": True, "commit": git("rev-parse", "HEAD")[1], "message": message}
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.error("admin API: git commit failed: %s", exc)
        return {"committed": False, "error": str(exc)}


def _unavailable(exc: OtapubError) -> tuple[int, dict[str, str]]:
    log.error("admin API: %s", exc)
    return 503, {"error": str(exc)}


# -- request parsing -----------------------------------------------------------------------
def _mac(value: Any) -> str:
    try:
        return parse_mac(value)
    except OtapubError:
        raise _Reply(400, "Invalid MAC address format", detail=f"{str(value)[:40]!r} is not a MAC address") from None


def _body(environ: dict) -> dict[str, Any]:
    raw = environ.get("CONTENT_LENGTH") or "0"
    try:
        length = int(raw)
    except ValueError:
        raise _Reply(400, "invalid Content-Length") from None
    if length < 0:
        raise _Reply(400, "invalid Content-Length")
    if length > MAX_BODY:
        raise _Reply(400, f"request body too large (at most {MAX_BODY} bytes)")
    data = environ["wsgi.input"].read(length) if length else b""
    if not data.strip():
        raise _Reply(400, "a JSON object is required in the request body")
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        raise _Reply(400, "malformed JSON in the request body") from None
    if not isinstance(body, dict):
        raise _Reply(400, f"the request body must be a JSON object, not {type(body).__name__}")
    return body


def _fields(body: dict[str, Any]) -> dict[str, Any]:
    """Check types and names; map the seed's fields onto a Target."""
    unknown = sorted(set(body) - set(_TEXT_FIELDS) - _IGNORED)
    if unknown:
        raise _Reply(400, f"unknown field(s): {', '.join(unknown)[:200]}",
                     accepted=[*_TEXT_FIELDS])
    for name in _TEXT_FIELDS:
        if name in body and body[name] is not None and not isinstance(body[name], str):
            raise _Reply(400, f"{name}: expected a string, found {type(body[name]).__name__}")
    fields: dict[str, Any] = {}
    if "device_id" in body:
        fields["device_id"] = body["device_id"] or None
    hardware = [body[k] for k in ("hardware", "hardware_version") if k in body]
    if len(set(hardware)) > 1:
        raise _Reply(400, "hardware and hardware_version differ: give one")
    if hardware:
        fields["hardware"] = hardware[0] or None
    target = Target(release=body.get("release") or None, version=body.get("target_version") or None,
                    firmware_url=body.get("firmware_url") or None, checksum=body.get("checksum") or None)
    fields["target"] = target
    # {"release": null} (or target_version/firmware_url null) and nothing else naming a target: unpin.
    fields["unpin"] = any(k in body for k in _TARGET_FIELDS) and not (target.release or target.version or
                                                                        target.firmware_url)
    return fields

