"""Static files over WSGI: GET and HEAD, ETag and Last-Modified, If-None-Match and
If-Modified-Since (304), a single Range (206/416), and sendfile through ``wsgi.file_wrapper``.

The shim serves firmware with it; the Cloudflare Worker's counterpart is
edge/cloudflare/src/storage.mjs (with protocol.mjs's conditional and range requests).
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from datetime import timezone
from email.utils import formatdate, parsedate_to_datetime
from typing import Any

StartResponse = Callable[..., Any]

JSON = "application/json"
STATUS = {200: "200 OK", 206: "206 Partial Content", 304: "304 Not Modified", 400: "400 Bad Request",
          401: "401 Unauthorized", 403: "403 Forbidden", 404: "404 Not Found", 405: "405 Method Not Allowed",
          409: "409 Conflict", 416: "416 Range Not Satisfiable", 500: "500 Internal Server Error"}
_IMMUTABLE = "public, max-age=31536000, immutable"
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_BEYOND_ANY_FILE = 1 << 64  # a range bound of more digits than this has (Python's int() refuses 4,300)


def json_response(start_response: StartResponse, status: int, body: dict, extra: list | None = None) -> list[bytes]:
    data = json.dumps(body, separators=(", ", ": ")).encode()
    headers = [("Content-Type", JSON), ("Content-Length", str(len(data))), ("Cache-Control", "no-store")]
    start_response(STATUS[status], headers + (extra or []))
    return [data]


def serve_whole(environ: dict, start_response: StartResponse, root: str, rel: str, headers: list
                ) -> Iterable[bytes] | None:
    """200 with the whole file and ``headers`` plus its Content-Length (never chunked), for an
    answer that is not a cacheable file (HTTPUpdate's image); None when there is no such regular file."""
    try:
        fd = os.open(os.path.join(root, rel), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    handle = os.fdopen(fd, "rb")
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        handle.close()
        return None
    start_response(STATUS[200], [*headers, ("Content-Length", str(info.st_size))])
    if environ.get("REQUEST_METHOD") == "HEAD":
        handle.close()
        return []
    wrapper = environ.get("wsgi.file_wrapper")
    return wrapper(handle, 1 << 20) if wrapper is not None else _limited(handle, info.st_size)


def serve_file(environ: dict, start_response: StartResponse, root: str, rel: str, immutable: bool) -> Iterable[bytes]:
    """GET/HEAD a regular file below ``root`` (a real path); ``rel`` is built from validated parts only.

    ``immutable``: a content-addressed file (its ETag is its SHA-256 folder, cached for a year).
    """
    try:
        fd = os.open(os.path.join(root, rel), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return json_response(start_response, 404, {"error": "Not found"})
    handle = os.fdopen(fd, "rb")
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or os.path.realpath(os.path.join(root, rel)) != os.path.join(root, rel):
        handle.close()
        return json_response(start_response, 404, {"error": "Not found"})
    size = info.st_size
    etag = f'"{rel.split("/")[1]}"' if immutable else f'"{info.st_mtime_ns:x}-{size:x}"'
    headers = [("Content-Type", "application/octet-stream"), ("ETag", etag),
               ("Last-Modified", formatdate(info.st_mtime, usegmt=True)), ("Accept-Ranges", "bytes"),
               ("Cache-Control", _IMMUTABLE if immutable else "public, max-age=300")]
    if _not_modified(environ, etag, info.st_mtime):
        handle.close()
        start_response(STATUS[304], headers)
        return []
    start, end = 0, size - 1
    status = 200
    spec = environ.get("HTTP_RANGE")
    if spec and _if_range_ok(environ, etag):
        parsed = _parse_range(spec, size)
        if parsed == "unsatisfiable":
            handle.close()
            body = json.dumps({"error": "Range not satisfiable"}).encode()
            start_response(STATUS[416], [("Content-Type", JSON), ("Content-Length", str(len(body))),
                                          ("Cache-Control", "no-store"), ("Content-Range", f"bytes */{size}")])
            return [body]
        if parsed is not None:
            start, end = parsed
            status = 206
            headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
    length = end - start + 1 if size else 0
    headers.append(("Content-Length", str(length)))
    start_response(STATUS[status], headers)
    if environ.get("REQUEST_METHOD") == "HEAD":
        handle.close()
        return []
    if status == 200:
        wrapper = environ.get("wsgi.file_wrapper")
        if wrapper is not None:
            return wrapper(handle, 1 << 20)  # sendfile() where the server can
    handle.seek(start)
    return _limited(handle, length)


def _limited(handle: Any, length: int) -> Iterator[bytes]:
    with handle:
        while length > 0:
            chunk = handle.read(min(length, 1 << 20))
            if not chunk:
                return
            length -= len(chunk)
            yield chunk


def _parse_range(spec: str, size: int) -> tuple[int, int] | str | None:
    """A single byte range → (start, end); multiple or malformed ranges are ignored (200)."""
    match = _RANGE.fullmatch(spec.strip())
    if not match or (not match[1] and not match[2]):
        return None
    if not match[1]:  # suffix: the last N bytes
        count = _bound(match[2])
        if count == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - count), size - 1
    start = _bound(match[1])
    if start >= size:
        return "unsatisfiable"
    end = _bound(match[2]) if match[2] else size - 1
    if end < start:
        return None
    return start, min(end, size - 1)


def _bound(digits: str) -> int:
    """A range bound's value; any number too long to be a file offset is one past every file (as the
    Worker's Number() makes it Infinity)."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 20 else _BEYOND_ANY_FILE


def _not_modified(environ: dict, etag: str, mtime: float) -> bool:
    tags = environ.get("HTTP_IF_NONE_MATCH")
    if tags is not None:
        return tags.strip() == "*" or etag in [t.strip().removeprefix("W/") for t in tags.split(",")]
    since = environ.get("HTTP_IF_MODIFIED_SINCE")
    if since:
        try:
            moment = parsedate_to_datetime(since)
            if moment.tzinfo is None:  # HTTP dates are GMT, whatever the server's zone
                moment = moment.replace(tzinfo=timezone.utc)
            return int(mtime) <= moment.timestamp()
        except (TypeError, ValueError, OverflowError):
            return False
    return False


def _if_range_ok(environ: dict, etag: str) -> bool:
    condition = environ.get("HTTP_IF_RANGE")
    return condition is None or condition.strip() == etag
