"""Tokens, MAC spellings and version comparison: the protocol's building blocks (design.md §2)."""

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otapub.mac import mac12, normalize_mac
from otapub.tokens import SCHEMES, canonical_token, device_token, djb2_0, djb2_0_wire, djb2_5381
from otapub.versions import is_newer, parse_version


def reference_djb2(text: str, seed: int) -> int:
    # Straight transcription of the firmware loop: hash = ((hash << 5) + hash) + c, 32-bit wrap.
    h = seed
    for ch in text.encode():
        h = ((h << 5) + h + ch) % 2**32
    return h


@pytest.mark.parametrize("mac,secret", [("AABBCCDDEEFF", "my-secure-key"), ("001122334455", ""),
                                        ("FFFFFFFFFFFF", "x" * 300)])
def test_djb2_variants_match_the_firmware_loop(mac, secret):
    assert djb2_5381(mac, secret) == f"{reference_djb2(mac + secret, 5381):08X}"
    assert djb2_0(mac, secret) == f"{reference_djb2(mac + secret, 0):08X}"
    assert djb2_0_wire(mac, secret) == f"{reference_djb2(mac + secret, 0):x}"


@given(st.text(max_size=20), st.text(max_size=60))
def test_djb2_with_the_secrets_share_computed_once_is_the_same_hash(mac, secret):
    # tokens.py folds the secret's part of the hash into one constant (djb2 is linear):
    # any prefix, any secret (non-ASCII too), both seeds must give the loop's result.
    assert djb2_5381(mac, secret) == f"{reference_djb2(mac + secret, 5381):08X}"
    assert djb2_0_wire(mac, secret) == f"{reference_djb2(mac + secret, 0):x}"


def test_the_seed_firmware_form_is_lower_case_and_unpadded():
    # Find a MAC whose djb2-0 hash has leading zeros, as real devices do now and then.
    rng = random.Random(7)
    for _ in range(100000):
        mac, secret = f"{rng.getrandbits(48):012X}", f"k{rng.getrandbits(64):x}"
        wire = djb2_0_wire(mac, secret)
        if len(wire) < 8:
            break
    else:
        pytest.fail("no short token found")
    assert wire == wire.lower()
    assert canonical_token(wire) == djb2_0(mac, secret) == wire.upper().zfill(8)
    assert canonical_token(wire.upper()) == canonical_token(wire)


@pytest.mark.parametrize("header", [None, "", "  ", "xyz", "12 34", "0x1234", "g" * 8, "a" * 65, "é"])
def test_canonical_token_rejects_what_cannot_be_a_token(header):
    assert canonical_token(header) is None


def test_device_token_uses_the_named_scheme():
    assert device_token("AABBCCDDEEFF", "k", "djb2-0") == djb2_0("AABBCCDDEEFF", "k")
    assert device_token("AABBCCDDEEFF", "k") == djb2_5381("AABBCCDDEEFF", "k")
    assert set(SCHEMES) >= {"djb2-5381", "djb2-0"}
    with pytest.raises(ValueError, match="unknown token scheme"):
        device_token("AABBCCDDEEFF", "k", "md5")


@pytest.mark.parametrize("spelling", ["AA:BB:CC:DD:EE:FF", "aa:bb:cc:dd:ee:ff", "AA-BB-CC-DD-EE-FF",
                                      "aabb.ccdd.eeff", "AABBCCDDEEFF", " aabbccddeeff "])
def test_mac_spellings_normalise(spelling):
    assert normalize_mac(spelling) == "AA:BB:CC:DD:EE:FF"
    assert mac12(spelling) == "AABBCCDDEEFF"


@pytest.mark.parametrize("bad", ["", "AA:BB:CC:DD:EE", "AA:BB:CC:DD:EE:GG", "AA:BB-CC:DD:EE:FF",
                                 "AABBCCDDEEFF00", "AA::BB:CC:DD:EE:FF", 12345])
def test_bad_macs_are_refused(bad):
    with pytest.raises(ValueError):
        mac12(bad)


@pytest.mark.parametrize("a,b", [("1.10.0", "1.9.0"), ("2", "1.99.99"), ("1.2.1", "1.2"), ("v1.3.8", "1.3.7")])
def test_versions_compare_numerically(a, b):
    assert is_newer(a, b)
    assert not is_newer(b, a)


@pytest.mark.parametrize("a,b", [("1.2", "1.2.0"), ("1.2.0.0", "1.2"), ("01.2", "1.2"), ("V1", "1.0.0")])
def test_missing_parts_are_zero(a, b):
    assert parse_version(a) == parse_version(b)
    assert not is_newer(a, b) and not is_newer(b, a)


@pytest.mark.parametrize("bad", ["", "1.", ".1", "1..2", "1.2-beta", "abc", "1.2.x", "1 .2", "-1"])
def test_non_numeric_versions_are_refused(bad):
    with pytest.raises(ValueError):
        parse_version(bad)
