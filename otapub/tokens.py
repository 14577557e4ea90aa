"""Device token schemes: a small registry, so stronger schemes can be added.

A token keys a device's answer in the site (``d/<TOKEN>/<MAC12>.json``). Whatever the
device sends in ``X-Device-Auth`` is canonicalised first (upper case, djb2 tokens
zero-padded to 8 digits), because two firmware variants exist in the field (design.md §2).

djb2 is forgeable (one (MAC, token) pair gives every other MAC's token, docs/security.md);
``hmac-sha256`` gives each device its own key, so a leaked key or token exposes one device.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

_HEX_TOKEN = re.compile(r"[0-9A-Fa-f]{1,64}")
DJB2_DIGITS = 8


@dataclass(frozen=True)
class TokenScheme:
    name: str
    description: str
    # (mac12, secret) -> canonical token (upper-case hex)
    compute: Callable[[str, str], str]
    # (mac12, secret) -> the exact string the device sends
    wire: Callable[[str, str], str]


def _djb2(data: bytes, seed: int) -> int:
    value = seed
    for byte in data:
        value = (value * 33 + byte) & 0xFFFFFFFF
    return value


@functools.lru_cache(maxsize=16)
def _djb2_suffix(secret: bytes, seed: int, prefix_length: int) -> tuple[int, tuple[int, ...]]:
    """djb2 of (prefix + secret) as ``constant + sum(prefix[i] * weights[i])`` mod 2**32.

    djb2 is linear: over n bytes it is seed * 33**n + sum(byte[i] * 33**(n-1-i)). A build hashes
    100,000 MACs with one secret, so the secret's share is computed once, and each MAC costs one
    weighted sum of its 12 bytes instead of a Python loop over MAC and secret.
    """
    total = prefix_length + len(secret)
    constant = (seed * pow(33, total, 2**32) + _djb2(secret, 0)) & 0xFFFFFFFF
    weights = tuple(pow(33, total - 1 - i, 2**32) for i in range(prefix_length))
    return constant, weights


def _djb2_mac(mac12: str, secret: str, seed: int) -> int:
    """djb2 over the bytes of MAC12 + secret, with the secret's share computed once.

    The firmware hashes the characters of (MAC + secret) as bytes; ASCII secrets are portable,
    other bytes are taken as unsigned UTF-8 bytes (see examples/README.md).
    """
    prefix = mac12.encode("utf-8")
    constant, weights = _djb2_suffix(secret.encode("utf-8"), seed, len(prefix))
    return (constant + sum(map(operator.mul, prefix, weights))) & 0xFFFFFFFF


def djb2_5381(mac12: str, secret: str) -> str:
    return f"{_djb2_mac(mac12, secret, 5381):08X}"


def djb2_0(mac12: str, secret: str) -> str:
    return f"{_djb2_mac(mac12, secret, 0):08X}"


def djb2_0_wire(mac12: str, secret: str) -> str:
    # Arduino's String(hash, HEX): lower case, no zero padding.
    return f"{_djb2_mac(mac12, secret, 0):x}"


HMAC_TOKEN_BYTES = 16  # 128 bits, sent as 32 upper-case hex digits
HMAC_TOKEN_LABEL = "otapub-token:"  # noqa: S105 (a domain-separation label, not a secret)


def device_key(mac12: str, secret: str) -> bytes:
    """A device's own 32-byte key: HMAC-SHA256(key = UTF-8 secret, message = ASCII MAC12).

    It is what gets flashed into the device (``otapub provision``); the fleet secret never does.
    """
    return hmac.new(secret.encode("utf-8"), mac12.encode("ascii"), hashlib.sha256).digest()


def hmac_token_from_key(key: bytes, mac12: str) -> str:
    """The token a device computes from its own key: HMAC-SHA256(key, "otapub-token:" + MAC12), first 16 bytes."""
    tag = hmac.new(key, (HMAC_TOKEN_LABEL + mac12).encode("ascii"), hashlib.sha256).digest()
    return tag[:HMAC_TOKEN_BYTES].hex().upper()


def hmac_sha256(mac12: str, secret: str) -> str:
    return hmac_token_from_key(device_key(mac12, secret), mac12)


SCHEMES: dict[str, TokenScheme] = {
    "djb2-5381": TokenScheme(
        "djb2-5381",
        "djb2 from 5381 over MAC12+secret, sent as %08X (the seed README's snippet)",
        djb2_5381,
        djb2_5381,
    ),
    "djb2-0": TokenScheme(
        "djb2-0",
        "djb2 from 0 over MAC12+secret, sent as String(hash, HEX) (the seed's server and firmware)",
        djb2_0,
        djb2_0_wire,
    ),
    "hmac-sha256": TokenScheme(
        "hmac-sha256",
        "per-device key HMAC-SHA256(secret, MAC12); token = first 16 bytes of "
        "HMAC-SHA256(key, 'otapub-token:' + MAC12) as 32 upper-case hex digits",
        hmac_sha256,
        hmac_sha256,
    ),
}
# Schemes where one captured (MAC, token) pair gives away every other device's token.
FORGEABLE_SCHEMES = frozenset({"djb2-5381", "djb2-0"})

DEFAULT_SCHEME = "djb2-5381"


def get_scheme(name: str) -> TokenScheme:
    try:
        return SCHEMES[name]
    except KeyError:
        known = ", ".join(sorted(SCHEMES))
        raise ValueError(f"unknown token scheme {name!r} (known: {known})") from None


def device_token(mac12: str, secret: str, scheme: str = DEFAULT_SCHEME) -> str:
    """The canonical token of a device: the path key of its answer."""
    return get_scheme(scheme).compute(mac12, secret)


class _HasScheme(Protocol):
    mac12: str
    token_scheme: str | None


def scheme_of(device: _HasScheme, default: str) -> str:
    """A fleet device's token scheme: its own ``token_scheme``, else the fleet's default (config)."""
    return device.token_scheme or default


class DeviceTokens:
    """The tokens of a fleet's devices under one secret: the one place a device's token is derived."""

    def __init__(self, secret: str, default_scheme: str = DEFAULT_SCHEME):
        self.secret = secret
        self.default = default_scheme

    def canonical(self, device: _HasScheme) -> str:
        """The canonical token: the path key of the device's answer (called once per device per build)."""
        return SCHEMES[device.token_scheme or self.default].compute(device.mac12, self.secret)

    def wire(self, device: _HasScheme) -> str:
        """The X-Device-Auth value the device sends."""
        return SCHEMES[device.token_scheme or self.default].wire(device.mac12, self.secret)

    def for_mac(self, mac12: str, scheme: str | None, canonical: bool = True) -> str:
        """A MAC's token under ``scheme`` (None: the default), for a device that may not be in the fleet."""
        chosen = get_scheme(scheme or self.default)
        return (chosen.compute if canonical else chosen.wire)(mac12, self.secret)


def canonical_token(header: str | None) -> str | None:
    """Canonicalise an X-Device-Auth value; None when it cannot be a token.

    Case is folded to upper, and a short (djb2) token is zero-padded to 8 digits, so the
    seed's lower-case unpadded ``String(hash, HEX)`` form and ``%08X`` meet at one path.
    """
    if header is None:
        return None
    value = header.strip()
    if not _HEX_TOKEN.fullmatch(value):
        return None
    value = value.upper()
    if len(value) < DJB2_DIGITS:
        value = value.zfill(DJB2_DIGITS)
    return value


def basic_auth_token(header: str | None) -> str | None:
    """The password of an ``Authorization: Basic`` header (the user name is not checked), or None.

    Arduino's HTTPClient::setAuthorization(user, password) and a URL's userinfo (ESPHome, ESP-IDF)
    send it; otapub reads the password as the device's token.
    """
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or len(value) > 512:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    _user, colon, password = decoded.partition(":")
    return password if colon else None
