"""The edge shim: answers the seed's device protocol from the static site.

It needs neither the shared secret nor the fleet YAML: a device's answer is found at the
path its own token names (design.md §4), so a request is a couple of file reads. Every
path the shim opens is assembled from validated hex digits and a restricted file-name
alphabet: there is no user-supplied path to traverse. A rebuilt site is picked up at once.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from otapub import checkins
from otapub.checkins import CheckinLog, utc_now
from otapub.clients import (
    DEFAULT_CLIENTS,
    HTTPUpdateRequest,
    httpupdate_check,
    httpupdate_decision,
    manifest_target,
    site_firmware,
)
from otapub.mac import mac12 as to_mac12
from otapub.mac import normalize_mac
from otapub.record import RECORD
from otapub.static_files import JSON, STATUS, StartResponse, json_response, serve_file, serve_whole
from otapub.tokens import basic_auth_token, canonical_token
from otapub.versions import parse_version

log = logging.getLogger(__name__)


_ANSWER = re.compile(r"/d/([0-9A-F]{8,64})/([0-9A-F]{12})\.json")
_FIRMWARE = re.compile(r"/f/([0-9a-f]{64})/([A-Za-z0-9_-][A-Za-z0-9._-]{0,99})")
_SEED_FIRMWARE = re.compile(r"/firmware/([A-Za-z0-9_-][A-Za-z0-9._-]{0,99})")
# Static manifests (esp32FOTA, ESPHome) beside a device's answer: the token in the path is the credential.
_MANIFEST = re.compile(r"/d/([0-9A-F]{8,64})/([0-9A-F]{12})/(esp32fota|esphome)\.json")
# Arduino HTTPUpdate / ESP8266httpUpdate: the token in the path, X-Device-Auth or Basic authorization.
_HTTPUPDATE = re.compile(r"/api/httpupdate(?:/([0-9A-Fa-f]{1,64}))?")
_MAX_PATH = 512
_MAX_QUERY = 2048
_MAX_FIELD = 128
_REQUIRED = ("device_id", "hardware", "version", "mac")
_SIGNED_MARK = b',"signature":'  # a signed answer (otapub.signing); the shim holds no key to check it


class Shim:
    """WSGI application serving a site rendered by ``otapub build``."""

    def __init__(self, site_dir: Path, base_url: str | None = None, checkin_log: Path | None = None,
                 log_max_bytes: int = 0, log_daily: bool = False):
        self.site = os.path.realpath(site_dir)
        self.base_url = base_url.rstrip("/") if base_url else None
        self.checkins = CheckinLog(checkin_log, log_max_bytes, log_daily)
        self._seed_index: tuple[int, dict[str, str]] = (-1, {})

    # -- WSGI entry point -------------------------------------------------------------------
    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        try:
            return self._route(environ, start_response)
        except Exception:  # a bug, never a user mistake: log it, answer JSON, keep serving
            log.exception("internal error on %s", environ.get("PATH_INFO", "")[:_MAX_PATH])
            return json_response(start_response, 500, {"error": "Internal server error"})

    def _route(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if len(path) > _MAX_PATH:
            return json_response(start_response, 404, {"error": "Not found"})
        if method not in ("GET", "HEAD"):
            known = path in ("/api/firmware", "/status", "/keys.json") or _FIRMWARE.fullmatch(path) \
                or _ANSWER.fullmatch(path) or _SEED_FIRMWARE.fullmatch(path) or _MANIFEST.fullmatch(path) \
                or _HTTPUPDATE.fullmatch(path)
            if known:
                return json_response(start_response, 405, {"error": "Method not allowed"}, [("Allow", "GET, HEAD")])
            return json_response(start_response, 404, {"error": "Not found"})
        if path == "/api/firmware":
            return self.check(environ, start_response)
        if path == "/status":
            return self.status(start_response)
        if path == "/keys.json":
            return self.keys(environ, start_response)
        match = _FIRMWARE.fullmatch(path)
        if match:
            return serve_file(environ, start_response, self.site, f"f/{match[1]}/{match[2]}", immutable=True)
        match = _ANSWER.fullmatch(path)
        if match:
            return self.answer_file(environ, start_response, match[1], match[2])
        match = _MANIFEST.fullmatch(path)
        if match:
            return self.manifest(environ, start_response, match[1], match[2], match[3])
        match = _HTTPUPDATE.fullmatch(path)
        if match:
            return self.httpupdate(environ, start_response, match[1])
        match = _SEED_FIRMWARE.fullmatch(path)
        if match:
            rel = self._seed_firmware(match[1])
            if rel is not None:
                return serve_file(environ, start_response, self.site, rel, immutable=False)
        return json_response(start_response, 404, {"error": "Not found"})

    # -- the device protocol ----------------------------------------------------------------
    def check(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        """GET /api/firmware: the seed's update check."""
        query = environ.get("QUERY_STRING", "")
        record: dict[str, Any] = {"time": utc_now(), "ip": environ.get("REMOTE_ADDR"), "client": "seed"}
        values = _fields(query[:_MAX_QUERY])
        record.update(mac=values["mac"] or None, device_id=values["device_id"] or None,
                      hardware=values["hardware"] or None, version=values["version"] or None)
        missing = [name for name in _REQUIRED if not values[name]]
        if len(query) > _MAX_QUERY:
            return self._refuse(start_response, record, 400, "Query string too long")
        if missing:
            return self._refuse(start_response, record, 400, f"Missing required parameters: {', '.join(missing)}")
        try:
            mac12 = to_mac12(values["mac"])
        except ValueError:
            return self._refuse(start_response, record, 400, "Invalid MAC address format")
        record["mac"] = normalize_mac(mac12)
        try:
            reported = parse_version(values["version"])
        except ValueError:
            return self._refuse(start_response, record, 400, "Invalid version format")
        token = canonical_token(environ.get("HTTP_X_DEVICE_AUTH"))
        raw = self._read(f"d/{token}/{mac12}.json") if token else None
        answer = self._parse_answer(raw, mac12)
        if answer is None:
            record["decision"] = checkins.AUTH_FAILED
            return self._refuse(start_response, record, 401, "Authentication failed")
        target = answer.get("firmware_version")
        record["target"] = target
        if "seed" not in (answer.get("clients") or DEFAULT_CLIENTS):
            record["decision"] = checkins.CLIENT_NOT_DECLARED
            return self._refuse(start_response, record, 403, "Device is not declared for client seed (fleet YAML "
                                                             "`client:`)")
        allowed = answer.get("release_hardware")
        if not target:
            record["decision"] = checkins.NO_TARGET
            body: dict[str, Any] = {"update_available": False}
        elif allowed is not None and values["hardware"] not in allowed:
            record["decision"] = checkins.HARDWARE_MISMATCH
            body = {"update_available": False}
        elif _offer(parse_version(target), reported, answer.get("allow_downgrade") is True):
            record["decision"] = checkins.UPDATE_OFFERED
            body = {"update_available": True, "firmware_version": target,
                    "firmware_url": self._absolute(answer["firmware_url"], environ),
                    "checksum": answer["checksum"], "sha256": answer["sha256"], "size": answer["size"]}
        else:
            record["decision"] = checkins.UP_TO_DATE
            body = {"update_available": False}
        record["status"] = 200
        self.checkins.append(record)
        log.debug("check %s %s reports %s: %s", record["mac"], values["device_id"], values["version"],
                  record["decision"])
        if raw is not None and environ.get("HTTP_X_OTA_SIGNED", "").strip() == "1" and _SIGNED_MARK in raw:
            return _json_with_signed(start_response, body, raw)
        return json_response(start_response, 200, body)

    def _refuse(self, start_response: StartResponse, record: dict, status: int, error: str) -> Iterable[bytes]:
        record.setdefault("decision", checkins.BAD_REQUEST)
        record["status"] = status
        self.checkins.append(record)
        log.debug("check refused (%d %s) mac=%s", status, error, record.get("mac"))
        return json_response(start_response, status, {"error": error})

    def _parse_answer(self, data: bytes | None, mac12: str) -> dict[str, Any] | None:
        if data is None:
            return None
        try:
            answer = json.loads(data)
        except ValueError:
            log.error("answer for %s is not JSON: rebuild the site", mac12)
            return None
        return answer if isinstance(answer, dict) else None

    def _read(self, rel: str) -> bytes | None:
        # rel is built from validated components only; O_NOFOLLOW refuses a planted symlink.
        try:
            fd = os.open(os.path.join(self.site, rel), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            # Answers are a few hundred bytes: a small first read avoids allocating a large buffer.
            chunks = [os.read(fd, 1 << 14)]
            while len(chunks[-1]) == 1 << 14 and len(chunks) < 64:
                chunks.append(os.read(fd, 1 << 14))
            return b"".join(chunks)
        except OSError:  # e.g. a directory planted where a file belongs
            return None
        finally:
            os.close(fd)

    def _absolute(self, url: str, environ: dict) -> str:
        if not url.startswith("/"):
            return url
        if self.base_url:
            return self.base_url + url
        host = environ.get("HTTP_HOST") or f"{environ.get('SERVER_NAME', 'localhost')}:{environ.get('SERVER_PORT')}"
        return f"{environ.get('wsgi.url_scheme', 'http')}://{host}{url}"

    def answer_file(self, environ: dict, start_response: StartResponse, token: str, mac12: str) -> Iterable[bytes]:
        """GET /d/<TOKEN>/<MAC12>.json, only for the device that holds the token.

        ESP-IDF devices (client idf) read their answer here and compare versions themselves.
        """
        record: dict[str, Any] = {"time": utc_now(), "ip": environ.get("REMOTE_ADDR"), "client": "idf",
                                  "mac": normalize_mac(mac12)}
        offered = canonical_token(environ.get("HTTP_X_DEVICE_AUTH")) or ""
        data = self._read(f"d/{token}/{mac12}.json") if hmac.compare_digest(offered, token) else None
        if data is None:
            record.update(decision=checkins.AUTH_FAILED, status=401)
            self.checkins.append(record)
            return json_response(start_response, 401, {"error": "Authentication failed"})
        answer = self._parse_answer(data, mac12) or {}
        record.update(target=answer.get("firmware_version"), decision=checkins.ANSWER_SERVED, status=200)
        self.checkins.append(record)
        headers = [("Content-Type", JSON), ("Content-Length", str(len(data))), ("Cache-Control", "no-store")]
        start_response(STATUS[200], headers)
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [data]

    def manifest(self, environ: dict, start_response: StartResponse, token: str, mac12: str, client: str
                 ) -> Iterable[bytes]:
        """GET /d/<TOKEN>/<MAC12>/<client>.json: a static manifest (otapub.clients), as a static host serves it.

        The token in the path is the credential: no header is needed (esp32FOTA and ESPHome cannot send one).
        """
        data = self._read(f"d/{token}/{mac12}/{client}.json")
        if data is None:
            return json_response(start_response, 404, {"error": "Not found"})
        self.checkins.append({"time": utc_now(), "ip": environ.get("REMOTE_ADDR"), "client": client,
                              "mac": normalize_mac(mac12), "target": manifest_target(client, data),
                              "decision": checkins.MANIFEST_SERVED, "status": 200})
        start_response(STATUS[200], [("Content-Type", JSON), ("Content-Length", str(len(data))),
                                     ("Cache-Control", "no-store")])
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [data]

    def httpupdate(self, environ: dict, start_response: StartResponse, path_token: str | None) -> Iterable[bytes]:
        """GET /api/httpupdate[/<TOKEN>]: Arduino HTTPUpdate and ESP8266httpUpdate (otapub.clients).

        304 when nothing is newer, else the image itself with Content-Length (the clients read it
        with HTTP/1.0: never chunked) and x-MD5; ESP8266's version mode gets x-version.
        """
        def header(name: str) -> str | None:
            return environ.get("HTTP_" + name.upper().replace("-", "_"))

        request = HTTPUpdateRequest.read(header)
        record: dict[str, Any] = {"time": utc_now(), "ip": environ.get("REMOTE_ADDR"), "client": "httpupdate",
                                  "mac": request.mac or None, "device_id": None, "hardware": None,
                                  "version": request.version or None}
        bad = httpupdate_check(request)
        if bad is not None:
            if bad.mac12:
                record["mac"] = normalize_mac(bad.mac12)
            return self._refuse(start_response, record, bad.status, bad.error or "")
        mac12 = to_mac12(request.mac or "")
        record["mac"] = normalize_mac(mac12)
        offered = path_token if path_token is not None else header("X-Device-Auth")
        if offered is None:
            offered = basic_auth_token(header("Authorization"))
        token = canonical_token(offered)
        answer = self._parse_answer(self._read(f"d/{token}/{mac12}.json") if token else None, mac12)
        if answer is None:
            record["decision"] = checkins.AUTH_FAILED
            return self._refuse(start_response, record, 401, "Authentication failed")
        target = answer.get("firmware_version")
        record["target"] = target
        result = httpupdate_decision(request, answer)
        record["decision"] = result.decision
        if result.error is not None:
            return self._refuse(start_response, record, result.status, result.error)
        extra = [("x-version", target), ("x-MD5", answer["md5"])] if target else []
        record["status"] = result.status
        if result.version_only:
            self.checkins.append(record)
            return json_response(start_response, 200, {"firmware_version": target}, extra)
        if not result.send_image:
            self.checkins.append(record)
            start_response(STATUS[result.status], [("Cache-Control", "no-store")])
            return []
        rel = site_firmware(answer)
        headers = [("Content-Type", "application/octet-stream"), ("Cache-Control", "no-store"), *extra]
        body = serve_whole(environ, start_response, self.site, rel, headers) if rel is not None else None
        if body is None:
            log.error("httpupdate: the firmware of %s's answer is not in the site: rebuild it", mac12)
            return self._refuse(start_response, record, 404, "Not found")
        self.checkins.append(record)
        return body

    def keys(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        """GET /keys.json: the public keys answers are signed with (present only when signing is on)."""
        data = self._read("keys.json")
        if data is None:
            return json_response(start_response, 404, {"error": "Not found"})
        start_response(STATUS[200], [("Content-Type", JSON), ("Content-Length", str(len(data))),
                                      ("Cache-Control", "public, max-age=300")])
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [data]

    def status(self, start_response: StartResponse) -> Iterable[bytes]:
        record = self._read(RECORD)
        site: Any = None
        if record is not None:
            try:
                site = json.loads(record)
            except ValueError:
                site = None
        return json_response(start_response, 200, {"status": "ok", "site": site, "time": utc_now()})

    # -- static files -------------------------------------------------------------------------
    def _seed_firmware(self, name: str) -> str | None:
        """The seed's /firmware/<name>: the newest published firmware file with that name."""
        root = os.path.join(self.site, "f")
        try:
            version = os.stat(root).st_mtime_ns
        except OSError:
            return None
        if version != self._seed_index[0]:
            index: dict[str, tuple[int, str]] = {}  # name -> (mtime_ns, site path)
            for entry in os.scandir(root):
                if entry.is_dir(follow_symlinks=False):
                    for item in os.scandir(entry.path):
                        if item.is_file(follow_symlinks=False):
                            candidate = (item.stat().st_mtime_ns, f"f/{entry.name}/{item.name}")
                            if item.name not in index or index[item.name] < candidate:  # newest; ties by path
                                index[item.name] = candidate
            self._seed_index = (version, {k: v[1] for k, v in index.items()})
        return self._seed_index[1].get(name)

def _fields(query: str) -> dict[str, str]:
    """The required parameters, as ``parse_qs(keep_blank_values=True, max_num_fields=16)`` reads
    them (first occurrence wins; '+' is a space), without decoding fields nobody asked for."""
    values = dict.fromkeys(_REQUIRED, "")
    parts = query.split("&")
    if len(parts) > 16:  # parse_qs's max_num_fields: the request is answered as if it had none
        return values
    seen: set[str] = set()
    for part in parts:
        if not part:
            continue
        name, _, value = part.partition("=")
        name = unquote_plus(name)
        if name in values and name not in seen:
            seen.add(name)
            values[name] = unquote_plus(value)[:_MAX_FIELD]
    return values


def _offer(target: tuple[int, ...], reported: tuple[int, ...], allow_downgrade: bool) -> bool:
    """Offer newer firmware; older only where the fleet explicitly allows a downgrade."""
    return target > reported or (allow_downgrade and target != reported)


def _json_with_signed(start_response: StartResponse, body: dict, signed: bytes) -> list[bytes]:
    """The seed-shaped body plus, as its last member, the stored signed answer byte for byte:
    ``<body without its final "}">, "signed": <answer file>}`` (docs/security.md)."""
    data = json.dumps(body, separators=(", ", ": ")).encode()[:-1] + b', "signed": ' + signed.strip() + b"}"
    headers = [("Content-Type", JSON), ("Content-Length", str(len(data))), ("Cache-Control", "no-store")]
    start_response(STATUS[200], headers)
    return [data]
