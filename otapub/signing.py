"""Signed answers: Ed25519 keys, the canonical serialisation, signing and verification.

The format is specified in docs/security.md ("Signed answers"); in short:

- *content*: the per-device answer plus ``expires`` (UTC, ``YYYY-MM-DDTHH:MM:SSZ``) and
  ``manifest_version`` (an integer that never decreases);
- *signed bytes*: the canonical JSON of the content: keys sorted, no whitespace, UTF-8 with
  non-ASCII characters unescaped (Python's ``json.dumps(sort_keys=True, separators=(",", ":"),
  ensure_ascii=False)``);
- *file*: the signed bytes with ``,"signature":{"keyid":"<16 hex>","sig":"<128 hex>"}`` inserted
  before the final ``}``. So a device needs no JSON canonicaliser: it cuts the file at the last
  ``,"signature":`` and appends ``}`` to get back the exact signed bytes;
- *keyid*: the first 16 hex digits of SHA-256 over the raw 32-byte public key.

Private keys are parsed here and never printed, logged or put into an error message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from otapub.errors import OtapubError
from otapub.git import work_tree_of

KEYS_FILE = "keys.json"
KEYS_FORMAT = 1
ALGORITHM = "ed25519"
SIGNATURE_MEMBER = b',"signature":'
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
SIGNED_FIELDS = ("expires", "manifest_version")  # added to the answer by signing
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_KEYID = re.compile(r"[0-9a-f]{16}")
_SIG = re.compile(r"[0-9a-f]{128}")


class SigningError(OtapubError):
    """A signing key or key setting is unusable."""

    exit_code = 2


class VerificationError(OtapubError):
    """An answer failed verification; ``reason`` is a short machine-readable word."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


# -- time --------------------------------------------------------------------------------------
def format_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime(TIME_FORMAT)


def parse_time(text: str) -> datetime:
    """An ISO 8601 time or date; without an offset it is UTC. ValueError when it is none."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


# -- keys --------------------------------------------------------------------------------------
def key_id(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:16]


@dataclass(frozen=True)
class SigningKey:
    private: Ed25519PrivateKey
    public_raw: bytes
    keyid: str

    @classmethod
    def from_private(cls, private: Ed25519PrivateKey) -> SigningKey:
        raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return cls(private, raw, key_id(raw))

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)

    def __repr__(self) -> str:  # never show the private key, even in a traceback
        return f"SigningKey(keyid={self.keyid})"


def generate_key() -> tuple[str, SigningKey]:
    """A new key: (base64 of the 32-byte private seed, the key)."""
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
    return base64.b64encode(seed).decode("ascii"), SigningKey.from_private(private)


def parse_private_key(text: str | bytes, source: str) -> SigningKey:
    """A private key as PEM (PKCS#8) or base64/hex of the 32-byte seed; the text is never echoed."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    data = data.strip()
    try:
        if data.startswith(b"-----BEGIN"):
            private = serialization.load_pem_private_key(data, password=None)
            if not isinstance(private, Ed25519PrivateKey):
                raise SigningError(f"{source}: not an Ed25519 private key")
            return SigningKey.from_private(private)
        raw = bytes.fromhex(data.decode("ascii")) if _HEX64.fullmatch(data.decode("ascii", "replace")) \
            else base64.b64decode(data, validate=True)
    except SigningError:
        raise
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise SigningError(f"{source}: not an Ed25519 private key (expected PEM, or base64 of its 32-byte "
                           "seed as written by `otapub keygen`)") from None
    if len(raw) != 32:
        raise SigningError(f"{source}: an Ed25519 private key seed is 32 bytes, found {len(raw)}")
    return SigningKey.from_private(Ed25519PrivateKey.from_private_bytes(raw))


def parse_public_key(text: str, source: str) -> bytes:
    """A raw 32-byte public key from hex (64 digits), base64, or a PEM public key."""
    value = text.strip()
    try:
        if value.startswith("-----BEGIN"):
            public = serialization.load_pem_public_key(value.encode("ascii"))
            if not isinstance(public, Ed25519PublicKey):
                raise SigningError(f"{source}: not an Ed25519 public key")
            return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        raw = bytes.fromhex(value) if _HEX64.fullmatch(value) else base64.b64decode(value, validate=True)
    except SigningError:
        raise
    except (ValueError, TypeError, binascii.Error, UnicodeError):
        raise SigningError(f"{source}: not an Ed25519 public key (64 hex digits or base64 of 32 bytes)") from None
    if len(raw) != 32:
        raise SigningError(f"{source}: an Ed25519 public key is 32 bytes, found {len(raw)}")
    return raw


def parse_public_keys(text: str | None, source: str) -> list[bytes]:
    """A comma- or whitespace-separated list of public keys (``previous_public_keys``)."""
    return [parse_public_key(item, f"{source}[{i}]")
            for i, item in enumerate(t for t in re.split(r"[,\s]+", text or "") if t)]


def forbidden_key_places(config: Any) -> list[tuple[str, Path]]:
    """Folders a private key must not live in: the repository, the site and the fleet."""
    root = Path(os.path.realpath(config.root))
    places: list[tuple[str, Path]] = []
    if getattr(config, "source", None) is not None:
        places.append(("the repository", root))  # the folder of config.json
    repo = work_tree_of(root)
    if repo is not None:
        places.append(("the repository", repo))
    for name in ("site_dir", "fleet_dir"):
        if getattr(config, name, None):
            places.append((name, Path(os.path.realpath(config.path(name)))))
    return places


def check_key_location(path: Path, config: Any | None, what: str) -> None:
    """Refuse a private key path inside any git work tree, or the repository, site or fleet folder."""
    real = Path(os.path.realpath(path))
    places = forbidden_key_places(config) if config is not None else []
    # The key's own work tree, wherever otapub runs from: a key there is one `git add -A` from a push.
    work_tree = work_tree_of(real)
    if work_tree is not None:
        places.append(("a git work tree", work_tree))
    for name, folder in places:
        if real == folder or real.is_relative_to(folder):
            raise SigningError(f"{what} {path} is inside {name} ({folder}): a private key must live outside "
                               "the repository and the site (e.g. ~/.config/otapub/, or a CI secret in "
                               "OTA_SERVER_SIGNING_KEY)")


def signing_key_path(config: Any) -> Path:
    """``signing_key_file``, absolute: ``~`` expands; a relative path is relative to config.json."""
    path = Path(config.signing_key_file).expanduser()
    return path if path.is_absolute() else config.path("signing_key_file")


def load_signing_key(config: Any) -> SigningKey | None:
    """The configured signing key (``signing_key`` / OTA_SERVER_SIGNING_KEY, or ``signing_key_file``)."""
    text = getattr(config, "signing_key", None)
    file_name = getattr(config, "signing_key_file", None)
    if text and file_name:
        raise SigningError("both signing_key (OTA_SERVER_SIGNING_KEY) and signing_key_file are set: use one")
    if text:
        return parse_private_key(text, "signing_key (OTA_SERVER_SIGNING_KEY)")
    if not file_name:
        return None
    path = signing_key_path(config)
    check_key_location(path, config, "signing_key_file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningError(f"signing_key_file {path}: cannot read: {exc.strerror}") from None
    return parse_private_key(data, f"signing_key_file {path}")


def write_key_file(path: Path, private_b64: str, config: Any | None) -> None:
    """Write a new private key file (mode 0600, never over an existing file, never in a git work tree)."""
    check_key_location(path, config, "--out")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        if exc.filename is not None and Path(exc.filename) != path:
            raise SigningError(f"--out {path}: {exc.filename} is a file, not a folder") from None
        if path.is_dir():
            raise SigningError(f"--out {path}: a folder; give the name of the key file to create") from None
        raise SigningError(f"{path} exists: refusing to overwrite a key") from None
    except OSError as exc:  # no permission, a file on the way, a read-only file system ...
        raise SigningError(f"--out {path}: cannot write the key there: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(private_b64 + "\n")


# -- answers -----------------------------------------------------------------------------------
def canonical_json(value: Any) -> bytes:
    """The canonical serialisation (see the module docstring)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def assemble(signed: bytes, keyid: str, sig_hex: str) -> bytes:
    """The answer file: signed bytes with the signature member appended last."""
    if not signed.endswith(b"}") or signed == b"{}":
        raise ValueError("signed content must be a non-empty JSON object")
    member = canonical_json({"keyid": keyid, "sig": sig_hex})
    return signed[:-1] + SIGNATURE_MEMBER + member + b"}"


def sign_content(content: Mapping[str, Any], key: SigningKey) -> tuple[bytes, str]:
    """(file bytes, signature hex) of a content object (which must already hold expires and version)."""
    signed = canonical_json(dict(content))
    sig = key.sign(signed).hex()
    return assemble(signed, key.keyid, sig), sig


def split_signed(data: bytes) -> tuple[bytes, dict[str, str]]:
    """(signed bytes, signature member) of an answer file, cut as a device does."""
    data = data.rstrip(b" \t\r\n")
    at = data.rfind(SIGNATURE_MEMBER)
    if at < 0 or not data.endswith(b"}"):
        raise VerificationError("unsigned", "the answer carries no signature")
    try:
        member = json.loads(data[at + len(SIGNATURE_MEMBER) : -1])
    except ValueError:
        member = None
    if not isinstance(member, dict) or not isinstance(member.get("keyid"), str) or \
            not isinstance(member.get("sig"), str) or not _KEYID.fullmatch(member["keyid"]) or \
            not _SIG.fullmatch(member["sig"]):
        raise VerificationError("format", "the signature member is not {\"keyid\": 16 hex, \"sig\": 128 hex}")
    return data[:at] + b"}", member


@dataclass(frozen=True)
class Verified:
    content: dict[str, Any]
    keyid: str
    expires: datetime
    manifest_version: int


def verify_answer(data: bytes, keys: Mapping[str, bytes], now: datetime | None = None, mac: str | None = None,
                  min_version: int | None = None, min_secure_version: int | None = None) -> Verified:
    """Check an answer as a device does: signature by a trusted key, its MAC, expiry, version."""
    now = now or datetime.now(timezone.utc)
    signed, member = split_signed(data)
    public = keys.get(member["keyid"])
    if public is None:
        raise VerificationError("unknown-key", f"signed by key {member['keyid']}, which is not trusted "
                                               f"(trusted: {', '.join(sorted(keys)) or 'none'})")
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(bytes.fromhex(member["sig"]), signed)
    except InvalidSignature:
        raise VerificationError("bad-signature", "the signature does not match the answer: it was altered "
                                                 "or not signed by this key") from None
    try:
        content = json.loads(signed)
    except ValueError:
        content = None
    if not isinstance(content, dict) or canonical_json(content) != signed:
        raise VerificationError("format", "the signed part is not canonical JSON of an object")
    expires_text, version = content.get("expires"), content.get("manifest_version")
    try:
        expires = parse_time(expires_text) if isinstance(expires_text, str) else None
    except ValueError:
        expires = None
    if expires is None or isinstance(version, bool) or not isinstance(version, int):
        raise VerificationError("format", "the signed answer lacks `expires` or `manifest_version`")
    if mac is not None and content.get("mac") != mac:
        raise VerificationError("wrong-mac", f"the answer is for {content.get('mac')}, not {mac}")
    if now >= expires:
        raise VerificationError("expired", f"the answer expired at {format_time(expires)} (now "
                                           f"{format_time(now)}): a stale answer may be a freeze attack")
    if min_version is not None and version < min_version:
        raise VerificationError("rollback", f"manifest_version {version} is lower than {min_version} already "
                                            "seen: an older answer is being replayed")
    secure = content.get("secure_version")
    if min_secure_version is not None and content.get("release") is not None and \
            (not isinstance(secure, int) or secure < min_secure_version):
        raise VerificationError("secure-version", f"the release's secure_version {secure} is below the "
                                                  f"device's {min_secure_version}")
    return Verified(content, member["keyid"], expires, version)


# -- keys.json ---------------------------------------------------------------------------------
def keys_document(current: SigningKey, previous: Iterable[bytes] = (), expires: datetime | None = None) -> bytes:
    """The published keys.json: the current key first, then keys still trusted during a rotation."""
    entry: dict[str, Any] = {"keyid": current.keyid, "public_key": current.public_raw.hex(), "status": "current"}
    if expires is not None:
        entry["expires"] = format_time(expires)
    keys = [entry]
    for raw in previous:
        if key_id(raw) not in {k["keyid"] for k in keys}:
            keys.append({"keyid": key_id(raw), "public_key": raw.hex(), "status": "previous"})
    document = {"format": KEYS_FORMAT, "algorithm": ALGORITHM, "keys": keys}
    return json.dumps(document, indent=2, sort_keys=True).encode("utf-8") + b"\n"


def load_keys_document(data: bytes, source: str) -> dict[str, bytes]:
    """keyid -> raw public key, from a keys.json; each key id is checked against its key."""
    try:
        document = json.loads(data)
        entries = document["keys"]
        if document.get("algorithm") != ALGORITHM or not isinstance(entries, list):
            raise ValueError
        keys: dict[str, bytes] = {}
        for entry in entries:
            raw = parse_public_key(entry["public_key"], source)
            if key_id(raw) != entry["keyid"]:
                raise SigningError(f"{source}: key id {entry['keyid']} does not match its public key")
            keys[entry["keyid"]] = raw
        return keys
    except SigningError:
        raise
    except (ValueError, KeyError, TypeError):
        raise SigningError(f"{source}: not a keys.json ({{\"algorithm\": \"ed25519\", \"keys\": [...]}})") from None
