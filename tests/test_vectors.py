"""The shared vectors in tests/vectors/ hold for the Python implementation.

The Worker shim (edge/cloudflare/src/protocol.mjs) is held to the same files by
edge/cloudflare/test/vectors.test.mjs, so the two languages cannot drift apart unnoticed.
"""

import json
from pathlib import Path

import pytest

from otapub.mac import mac12
from otapub.tokens import SCHEMES, canonical_token
from otapub.versions import is_newer, parse_version

VECTORS = Path(__file__).resolve().parent / "vectors"


def load(name: str):
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


VERSIONS = load("versions.json")
MACS = load("macs.json")
HEADERS = load("token_headers.json")
TOKENS = load("tokens.json")


@pytest.mark.parametrize("case", VERSIONS["valid"], ids=lambda c: repr(c["text"]))
def test_version_parses(case):
    assert list(parse_version(case["text"])) == case["key"]


@pytest.mark.parametrize("text", VERSIONS["invalid"], ids=repr)
def test_version_is_refused(text):
    with pytest.raises(ValueError):
        parse_version(text)


@pytest.mark.parametrize("case", VERSIONS["compare"], ids=lambda c: f"{c['a']}~{c['b']}")
def test_version_comparison(case):
    a, b = parse_version(case["a"]), parse_version(case["b"])
    assert (a > b) - (a < b) == case["result"]
    assert is_newer(case["a"], case["b"]) is (case["result"] > 0)


@pytest.mark.parametrize("case", MACS["valid"], ids=lambda c: repr(c["text"]))
def test_mac_spelling_is_accepted(case):
    assert mac12(case["text"]) == case["mac12"]


@pytest.mark.parametrize("text", MACS["invalid"], ids=repr)
def test_mac_spelling_is_refused(text):
    with pytest.raises(ValueError):
        mac12(text)


@pytest.mark.parametrize("case", HEADERS["cases"], ids=lambda c: repr(c["header"]))
def test_token_header_canonical_form(case):
    assert canonical_token(case["header"]) == case["canonical"]


@pytest.mark.parametrize("case", TOKENS, ids=lambda c: f"{c['scheme']}:{c['mac']}:{c['note'][:30]}")
def test_token_wire_form_canonicalises(case):
    assert canonical_token(case["wire"]) == case["canonical"]
    if case["scheme"] in SCHEMES:
        assert SCHEMES[case["scheme"]].compute(mac12(case["mac"]), case["secret"]) == case["canonical"]


def test_vectors_cover_both_outcomes():
    assert VERSIONS["valid"] and VERSIONS["invalid"] and {c["result"] for c in VERSIONS["compare"]} == {-1, 0, 1}
    assert MACS["valid"] and MACS["invalid"]
    assert {c["canonical"] is None for c in HEADERS["cases"]} == {True, False}


HTTPUPDATE = load("httpupdate.json")


@pytest.mark.parametrize("case", HTTPUPDATE["cases"], ids=lambda c: c["name"])
def test_httpupdate_decision(case):
    from otapub.clients import HTTPUpdateRequest, httpupdate_check, httpupdate_decision

    headers = {name.lower(): value for name, value in case["headers"].items()}
    request = HTTPUpdateRequest.read(lambda name: headers.get(name.lower()))
    answer = {k: v for k, v in {**HTTPUPDATE["answer"], **case.get("answer", {})}.items() if v is not None}
    got = httpupdate_check(request) or httpupdate_decision(request, answer)
    send = "image" if got.send_image else "version" if got.version_only else None
    assert (got.status, got.decision, got.error, send) == (case["status"], case["decision"], case["error"],
                                                           case["send"])


@pytest.mark.parametrize("case", HTTPUPDATE["basic"], ids=lambda c: c["header"])
def test_basic_auth_token(case):
    from otapub.tokens import basic_auth_token

    assert basic_auth_token(case["header"]) == case["token"]


@pytest.mark.parametrize("case", HTTPUPDATE["firmware"], ids=lambda c: str(c["answer"].get("firmware_url")))
def test_site_firmware_of_an_answer(case):
    from otapub.clients import site_firmware

    assert site_firmware(case["answer"]) == case["path"]
