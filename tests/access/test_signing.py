"""Links and grants: tamper-evident, salted per purpose, expiring, rotatable (SECURITY-BAR token inputs)."""

from __future__ import annotations

import hashlib

import pytest

from resolver.access.signing import Link, Signer
from resolver.errors import BadGrant, NotFound

KEYS = ["o" * 40, "n" * 40]
LINK = Link(source="recordings", key="RE" + "1" * 32, type="VoiceRecording", task="WT" + "3" * 32)
NOW = 1_800_000_000


@pytest.fixture
def signer() -> Signer:
    return Signer(KEYS)


def grant_token(signer: Signer, issued: int = NOW, expires: int = NOW + 60) -> str:
    return signer.sign_grant(LINK, identity="sup@example.com", worker="WK" + "2" * 32, issued_at=issued,
                             expires_at=expires)[1]


def flip(token: str, index: int) -> str:
    c = token[index]
    return token[:index] + ("A" if c != "A" else "B") + token[index + 1:]


def test_link_round_trip_is_stable(signer):
    token = signer.sign_link(LINK)
    assert signer.sign_link(LINK) == token
    assert signer.load_link(token) == LINK


def test_grant_round_trip(signer):
    grant = signer.load_grant(grant_token(signer), now=NOW + 1)
    assert grant.identity == "sup@example.com" and grant.link == LINK.id and grant.key == LINK.key


def bad_tokens(signer: Signer) -> dict[str, str]:
    good = grant_token(signer)
    payload_end = good.rindex(".")
    return {
        "empty": "",
        "a.b": "a.b",
        "a.b.c": "a.b.c",
        "flipped payload": flip(good, 2),
        "flipped signature": flip(good, len(good) - 3),
        "truncated": good[:-4],
        "extended": good + "A",
        "junk 5KB": "x" * 5000,
        "payload only": good[:payload_end],
    }


@pytest.mark.parametrize("case", list(bad_tokens(Signer(KEYS))))
def test_tampered_grant_is_refused(signer, case):
    with pytest.raises(BadGrant):
        signer.load_grant(bad_tokens(signer)[case], now=NOW + 1)


@pytest.mark.parametrize("case", ["empty", "a.b", "a.b.c", "flipped", "truncated", "junk"])
def test_tampered_link_is_unknown(signer, case):
    good = signer.sign_link(LINK)
    token = {"empty": "", "a.b": "a.b", "a.b.c": "a.b.c", "flipped": flip(good, 3), "truncated": good[:-2],
             "junk": "j" * 5000}[case]
    with pytest.raises(NotFound):
        signer.load_link(token)


def test_expired_grant_is_refused(signer):
    with pytest.raises(BadGrant):
        signer.load_grant(grant_token(signer), now=NOW + 60)


def test_grant_dated_in_the_future_is_refused(signer):
    with pytest.raises(BadGrant):
        signer.load_grant(grant_token(signer, issued=NOW + 3600, expires=NOW + 3660), now=NOW)


def test_rotation_old_key_still_verifies_until_retired():
    old = Signer(["o" * 40])
    token = grant_token(old)
    assert Signer(KEYS).load_grant(token, now=NOW + 1).identity == "sup@example.com"
    with pytest.raises(BadGrant):
        Signer(["n" * 40]).load_grant(token, now=NOW + 1)


def test_newest_key_signs():
    token = grant_token(Signer(KEYS))
    Signer(["n" * 40]).load_grant(token, now=NOW + 1)
    with pytest.raises(BadGrant):
        Signer(["o" * 40]).load_grant(token, now=NOW + 1)


def test_link_never_works_as_grant_and_grant_never_as_link(signer):
    with pytest.raises(BadGrant):
        signer.load_grant(signer.sign_link(LINK), now=NOW + 1)
    with pytest.raises(NotFound):
        signer.load_link(grant_token(signer))


def test_payload_holds_no_upstream_url(signer):
    from itsdangerous import URLSafeSerializer

    valid, data = URLSafeSerializer("anyone can read it").loads_unsafe(grant_token(signer))
    assert not valid and data["key"] == LINK.key  # readable without the key: identifiers only
    assert not any("http" in str(v) or "/" in str(v) for v in data.values())


def test_tokens_are_itsdangerous_own_whatever_is_kept_between_calls(signer):
    """The signer keeps its derived keys and signers between calls: the tokens stay byte for byte what a
    fresh itsdangerous serializer makes, and one made by a fresh serializer under the old key still loads."""
    from itsdangerous import URLSafeSerializer

    from resolver.access.signing import LINK_SALT, _payload

    def fresh(keys):
        return URLSafeSerializer(keys, salt=LINK_SALT,
                                 signer_kwargs={"digest_method": hashlib.sha256, "key_derivation": "hmac"})

    for _ in range(2):  # the second round uses what the first kept
        assert signer.sign_link(LINK) == fresh(KEYS).dumps(_payload(LINK))
    assert signer.load_link(fresh(KEYS[:1]).dumps(_payload(LINK))) == LINK
    with pytest.raises(NotFound):
        signer.load_link(fresh(["x" * 40]).dumps(_payload(LINK)))


def test_grants_are_itsdangerous_tokens_compressed_as_small_and_load_either_way(signer):
    """A grant's payload is compressed with a small window (cheaper per resolve): the token is still
    itsdangerous' format (a fresh serializer loads it) with zlib's usual header (the redactor knows it), no longer
    than itsdangerous' own compression makes it, and a grant itsdangerous made (another instance during a
    rolling deploy) loads here."""
    from itsdangerous import URLSafeSerializer

    from resolver import redact
    from resolver.access.signing import GRANT_SALT, _payload

    fresh = URLSafeSerializer(KEYS, salt=GRANT_SALT,
                              signer_kwargs={"digest_method": hashlib.sha256, "key_derivation": "hmac"})
    realistic = Link(source="recordings", key="RE" + "9f3a0c71e2b84d56a1c0e7f2b3d4a5c6", type="VoiceRecording",
                     task="WT" + "0b1c2d3e4f5a69788796a5b4c3d2e1f0")
    grant, token = signer.sign_grant(realistic, identity="supervisor.name@example.com",
                                     worker="WK" + "c0ffee11223344556677889900aabbcc", issued_at=NOW,
                                     expires_at=NOW + 60, realm="US" + "5e6f708192a3b4c5d6e7f8091a2b3c4d")
    assert token.startswith(".eJ")  # compressed (shorter than the JSON itself), behind zlib's usual header,
    assert redact.token_shaped(token)  # which is how logs and the audit trail know a bare grant to blank it
    assert fresh.loads(token) == _payload(grant)
    theirs = fresh.dumps(_payload(grant))
    assert len(token) <= len(theirs)
    assert signer.load_grant(theirs, now=NOW + 1) == grant


def test_links_that_verified_are_remembered_and_nothing_else_is(signer, monkeypatch):
    from resolver.access import signing

    token = signer.sign_link(LINK)
    assert signer.load_link(token) is signer.load_link(token)  # the second from memory, the same link
    for bad in (flip(token, len(token) - 5), flip(token, 3), token + "A", Signer(["x" * 40]).sign_link(LINK)):
        for _ in range(2):  # refused again: a failure is never remembered
            with pytest.raises(NotFound):
                signer.load_link(bad)
    assert signer._verified_link.cache_info().currsize == 1  # the good token only
    monkeypatch.setattr(signing, "LINKS_KEPT", 4)
    small = Signer(KEYS)
    for i in range(20):
        small.load_link(small.sign_link(Link(source="recordings", key=f"RE{i:032d}", type="VoiceRecording")))
    assert small._verified_link.cache_info().currsize <= 4
