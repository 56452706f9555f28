"""X-Twilio-Signature, checked against the vectors of Twilio's own helper library (twilio-python's tests)."""

from __future__ import annotations

import pytest

from resolver.taskrouter.signature import compute_signature, is_valid

TOKEN = "12345"
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = [("CallSid", "CA1234567890ABCDE"), ("Digits", "1234"), ("From", "+14158675309"), ("To", "+18005551212"),
          ("Caller", "+14158675309")]
EXPECTED = "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def test_signature_matches_twilios_vector():
    assert compute_signature(TOKEN, URL, PARAMS) == EXPECTED


def test_repeated_parameters_are_sorted_by_value():
    params = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234")]
    assert compute_signature(TOKEN, URL, params) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="


@pytest.mark.parametrize("url, signature", [
    (URL, EXPECTED),
    (URL.replace(".com", ".com:1234"), EXPECTED),  # a port the signer did not see
    (URL, "kvajT1Ptam85bY51eRf/AJRuM3w="),  # signed with :443
    (URL.replace("https", "http"), "0ZXoZLH/DfblKGATFgpif+LLRf4="),  # signed with :80
    (URL.replace(".com", ".com:1234").replace("https", "http"), "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="),
])
def test_valid_signatures(url, signature):
    assert is_valid(TOKEN, url, PARAMS, signature)


@pytest.mark.parametrize("token, url, params, signature", [
    (TOKEN, URL, PARAMS, None),
    (TOKEN, URL, PARAMS, ""),
    (TOKEN, URL, PARAMS, EXPECTED[:-2] + "9="),
    (TOKEN, URL, PARAMS, EXPECTED.lower()),
    ("54321", URL, PARAMS, EXPECTED),
    ("", URL, PARAMS, EXPECTED),
    (TOKEN, URL.replace("myapp", "other"), PARAMS, EXPECTED),
    (TOKEN, "https://evil.example/myapp.php?foo=1&bar=2", PARAMS, EXPECTED),
    (TOKEN, URL, [*PARAMS, ("Extra", "1")], EXPECTED),
    (TOKEN, URL, PARAMS[1:], EXPECTED),
    (TOKEN, URL, [(k, v + " ") for k, v in PARAMS], EXPECTED),
    (TOKEN, URL, PARAMS, "ü" * 28),
])
def test_invalid_signatures(token, url, params, signature):
    assert not is_valid(token, url, params, signature)
