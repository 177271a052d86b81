"""Digest authentication: the RFC vectors, nonce life, replay and header parsing."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

import pytest

from switch.registrar.digest import (
    Algorithm,
    AuthFailure,
    AuthResult,
    Challenge,
    Credentials,
    DigestChallenger,
    DigestError,
    authorize,
    response_for,
)

# RFC 2617 section 3.5, as printed there (note the capital O in the password).
RFC2617_AUTHORIZATION = """Digest username="Mufasa",
                 realm="testrealm@host.com",
                 nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
                 uri="/dir/index.html",
                 qop=auth,
                 nc=00000001,
                 cnonce="0a4f113b",
                 response="6629fae49393a05397450978507c4ef1",
                 opaque="5ccc069c403ebaf9f0171e9517f40e41\""""

# RFC 7616 section 3.9.1, as printed there (the password is "Circle of Life").
RFC7616_SHA256_AUTHORIZATION = """Digest username="Mufasa",
       realm="http-auth@example.org",
       uri="/dir/index.html",
       algorithm=SHA-256,
       nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
       nc=00000001,
       cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
       qop=auth,
       response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
       opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""""

REALM = "dialswitch.test"
SECRET = b"0123456789abcdef0123456789abcdef"
URI = "sip:dialswitch.test"
PASSWORDS = {"alice": "wonderland", "bob": "builder"}
T0 = 1_700_000_000.0


def counter_bytes() -> Callable[[int], bytes]:
    counter: Iterator[int] = iter(range(1, 1_000_000))
    return lambda size: next(counter).to_bytes(size, "big")


@pytest.fixture
def challenger() -> DigestChallenger:
    return DigestChallenger(REALM, SECRET, nonce_ttl=300.0, random_bytes=counter_bytes())


def answer(
    challenger: DigestChallenger,
    now: float,
    *,
    username: str = "alice",
    password: str = "wonderland",
    algorithm: Algorithm = Algorithm.SHA256,
    nc: int = 1,
    challenge: Challenge | None = None,
) -> tuple[Challenge, str]:
    if challenge is None:
        offered = [Challenge.parse(value) for value in challenger.challenge(now)]
        challenge = next(c for c in offered if c.algorithm is algorithm)
    credentials = authorize(
        challenge,
        username=username,
        password=password,
        method="REGISTER",
        uri=URI,
        cnonce="c0ffee",
        nc=nc,
    )
    return challenge, credentials.header_value()


def verify(challenger: DigestChallenger, header: str | None, now: float) -> AuthResult:
    return challenger.verify("REGISTER", header, PASSWORDS.get, now)


# The published vectors.


def test_rfc2617_md5_vector() -> None:
    response = response_for(
        algorithm=Algorithm.MD5,
        username="Mufasa",
        realm="testrealm@host.com",
        password="Circle Of Life",
        method="GET",
        uri="/dir/index.html",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
    )
    assert response == "6629fae49393a05397450978507c4ef1"


def test_rfc2617_header_parses_to_its_own_response() -> None:
    credentials = Credentials.parse(RFC2617_AUTHORIZATION)
    assert credentials.username == "Mufasa"
    assert credentials.realm == "testrealm@host.com"
    assert credentials.algorithm is Algorithm.MD5  # absent means MD5
    assert (credentials.qop, credentials.nc, credentials.cnonce) == ("auth", "00000001", "0a4f113b")
    assert credentials.opaque == "5ccc069c403ebaf9f0171e9517f40e41"
    expected = response_for(
        algorithm=credentials.algorithm,
        username=credentials.username,
        realm=credentials.realm,
        password="Circle Of Life",
        method="GET",
        uri=credentials.uri,
        nonce=credentials.nonce,
        qop=credentials.qop,
        nc=credentials.nc,
        cnonce=credentials.cnonce,
    )
    assert expected == credentials.response


def test_rfc7616_sha256_vector() -> None:
    response = response_for(
        algorithm=Algorithm.SHA256,
        username="Mufasa",
        realm="http-auth@example.org",
        password="Circle of Life",
        method="GET",
        uri="/dir/index.html",
        nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        qop="auth",
        nc="00000001",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )
    assert response == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"


def test_rfc7616_md5_vector_of_the_same_exchange() -> None:
    response = response_for(
        algorithm=Algorithm.MD5,
        username="Mufasa",
        realm="http-auth@example.org",
        password="Circle of Life",
        method="GET",
        uri="/dir/index.html",
        nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        qop="auth",
        nc="00000001",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )
    assert response == "8ca523f5e9506fed4657c9700eebdbec"


def test_rfc7616_header_parses_to_its_own_response() -> None:
    credentials = Credentials.parse(RFC7616_SHA256_AUTHORIZATION)
    assert credentials.algorithm is Algorithm.SHA256
    expected = response_for(
        algorithm=credentials.algorithm,
        username=credentials.username,
        realm=credentials.realm,
        password="Circle of Life",
        method="GET",
        uri=credentials.uri,
        nonce=credentials.nonce,
        qop=credentials.qop,
        nc=credentials.nc,
        cnonce=credentials.cnonce,
    )
    assert expected == credentials.response


@pytest.mark.parametrize(
    ("algorithm", "hash_name"), [(Algorithm.MD5_SESS, "md5"), (Algorithm.SHA256_SESS, "sha256")]
)
def test_session_algorithms_hash_nonce_and_cnonce_into_ha1(
    algorithm: Algorithm, hash_name: str
) -> None:
    def h(text: str) -> str:
        return hashlib.new(hash_name, text.encode()).hexdigest()

    ha1 = h(f"{h('u:r:p')}:n:c")
    expected = h(f"{ha1}:n:00000001:c:auth:{h('REGISTER:sip:r')}")
    got = response_for(
        algorithm=algorithm,
        username="u",
        realm="r",
        password="p",
        method="REGISTER",
        uri="sip:r",
        nonce="n",
        cnonce="c",
    )
    assert got == expected


def test_rfc2069_form_without_qop() -> None:
    def h(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    expected = h(f"{h('u:r:p')}:n:{h('INVITE:sip:x')}")
    got = response_for(
        algorithm=Algorithm.MD5,
        username="u",
        realm="r",
        password="p",
        method="INVITE",
        uri="sip:x",
        nonce="n",
        qop=None,
        nc=None,
    )
    assert got == expected


# Challenges.


def test_challenge_offers_md5_then_sha256_with_one_nonce(challenger: DigestChallenger) -> None:
    """MD5 first by default: clients that read only the first challenge can answer it."""
    values = challenger.challenge(T0)
    assert [value.split()[0] for value in values] == ["Digest", "Digest"]
    md5, sha256 = (Challenge.parse(value) for value in values)
    assert (sha256.algorithm, md5.algorithm) == (Algorithm.SHA256, Algorithm.MD5)
    assert sha256.nonce == md5.nonce
    assert sha256.realm == md5.realm == REALM
    assert sha256.qop == md5.qop == ("auth",)
    assert sha256.opaque and sha256.opaque == md5.opaque
    assert not sha256.stale
    assert 'qop="auth"' in values[0]


def test_an_algorithm_refused_for_a_user_gets_the_wrong_password_answer(
    challenger: DigestChallenger,
) -> None:
    def only_sha256(user: str, algorithm: Algorithm) -> bool:
        return algorithm is Algorithm.SHA256

    _, md5 = answer(challenger, T0, algorithm=Algorithm.MD5)
    refused = challenger.verify("REGISTER", md5, PASSWORDS.get, T0, allowed=only_sha256)
    assert refused.failure is AuthFailure.UNKNOWN_USER_OR_BAD_PASSWORD
    _, sha256 = answer(challenger, T0, algorithm=Algorithm.SHA256)
    accepted = challenger.verify("REGISTER", sha256, PASSWORDS.get, T0, allowed=only_sha256)
    assert accepted.ok and accepted.username == "alice"


def test_each_challenge_has_a_fresh_nonce(challenger: DigestChallenger) -> None:
    first = Challenge.parse(challenger.challenge(T0)[0]).nonce
    second = Challenge.parse(challenger.challenge(T0)[0]).nonce
    assert first != second


def test_stale_challenge_says_so(challenger: DigestChallenger) -> None:
    values = challenger.challenge(T0, stale=True)
    assert all(Challenge.parse(value).stale for value in values)
    assert all("stale=true" in value for value in values)


def test_challenge_round_trips() -> None:
    challenge = Challenge(
        realm='odd "realm" \\ here',
        nonce="abc",
        algorithm=Algorithm.SHA256_SESS,
        qop=("auth", "auth-int"),
        opaque="xyz",
        stale=True,
    )
    assert Challenge.parse(challenge.header_value()) == challenge


def test_credentials_round_trip() -> None:
    credentials = Credentials.parse(RFC7616_SHA256_AUTHORIZATION)
    assert Credentials.parse(credentials.header_value()) == credentials


# Verification.


@pytest.mark.parametrize("algorithm", [Algorithm.SHA256, Algorithm.MD5])
def test_correct_answer_is_accepted(challenger: DigestChallenger, algorithm: Algorithm) -> None:
    _, header = answer(challenger, T0, algorithm=algorithm)
    result = verify(challenger, header, T0 + 1)
    assert result.ok
    assert result.username == "alice"
    assert result.status_code == 200


@pytest.mark.parametrize("algorithm", [Algorithm.SHA256_SESS, Algorithm.MD5_SESS])
def test_session_forms_are_accepted(challenger: DigestChallenger, algorithm: Algorithm) -> None:
    offered = Challenge.parse(challenger.challenge(T0)[0])
    challenge = Challenge(offered.realm, offered.nonce, algorithm, offered.qop, offered.opaque)
    _, header = answer(challenger, T0, challenge=challenge)
    assert verify(challenger, header, T0).ok


def test_nonce_expires_after_ttl(challenger: DigestChallenger) -> None:
    challenge, header = answer(challenger, T0)
    assert verify(challenger, header, T0 + 300.0).ok
    _, later = answer(challenger, T0, challenge=challenge, nc=2)
    result = verify(challenger, later, T0 + 300.5)
    assert result.failure is AuthFailure.STALE
    assert result.stale and result.status_code == 401


def test_stale_needs_the_right_password(challenger: DigestChallenger) -> None:
    _, header = answer(challenger, T0, password="guess")
    result = verify(challenger, header, T0 + 1000)
    assert result.failure is AuthFailure.UNKNOWN_USER_OR_BAD_PASSWORD
    assert not result.stale


def test_unknown_user_and_bad_password_look_the_same(challenger: DigestChallenger) -> None:
    looked_up: list[str] = []

    def lookup(username: str) -> str | None:
        looked_up.append(username)
        return PASSWORDS.get(username)

    _, bad_password = answer(challenger, T0, password="guess")
    _, unknown_user = answer(challenger, T0, username="mallory", password="guess")
    one = challenger.verify("REGISTER", bad_password, lookup, T0)
    two = challenger.verify("REGISTER", unknown_user, lookup, T0)
    assert one.failure is two.failure is AuthFailure.UNKNOWN_USER_OR_BAD_PASSWORD
    assert (one.reason, one.status_code) == (two.reason, two.status_code)
    assert one.username is two.username is None
    assert (one.claimed_username, two.claimed_username) == ("alice", "mallory")
    assert looked_up == ["alice", "mallory"]


def test_wrong_method_fails(challenger: DigestChallenger) -> None:
    _, header = answer(challenger, T0)
    result = challenger.verify("INVITE", header, PASSWORDS.get, T0)
    assert result.failure is AuthFailure.UNKNOWN_USER_OR_BAD_PASSWORD


def test_replayed_nonce_count_is_refused(challenger: DigestChallenger) -> None:
    challenge, first = answer(challenger, T0)
    assert verify(challenger, first, T0).ok
    replay = verify(challenger, first, T0 + 1)
    assert replay.failure is AuthFailure.REPLAY
    assert replay.status_code == 401 and not replay.stale
    _, third = answer(challenger, T0, challenge=challenge, nc=3)
    assert verify(challenger, third, T0 + 2).ok
    _, second = answer(challenger, T0, challenge=challenge, nc=2)
    assert verify(challenger, second, T0 + 3).failure is AuthFailure.REPLAY


def test_nonce_counts_are_per_nonce(challenger: DigestChallenger) -> None:
    _, one = answer(challenger, T0)
    _, two = answer(challenger, T0)
    assert verify(challenger, one, T0).ok
    assert verify(challenger, two, T0).ok


def test_forged_or_foreign_nonce_is_stale_only_with_the_right_password(
    challenger: DigestChallenger,
) -> None:
    other = DigestChallenger(REALM, b"another secret", random_bytes=counter_bytes())
    foreign = Challenge.parse(other.challenge(T0)[0])
    _, header = answer(challenger, T0, challenge=Challenge(REALM, foreign.nonce, Algorithm.SHA256))
    assert verify(challenger, header, T0).failure is AuthFailure.STALE
    _, guess = answer(
        challenger, T0, password="x", challenge=Challenge(REALM, "bm90IG91cnM", Algorithm.MD5)
    )
    assert verify(challenger, guess, T0).failure is AuthFailure.UNKNOWN_USER_OR_BAD_PASSWORD


def test_tampered_nonce_timestamp_is_not_trusted(challenger: DigestChallenger) -> None:
    nonce = Challenge.parse(challenger.challenge(T0)[0]).nonce
    tampered = ("A" if nonce[0] != "A" else "B") + nonce[1:]
    _, header = answer(challenger, T0, challenge=Challenge(REALM, tampered, Algorithm.SHA256))
    assert verify(challenger, header, T0).failure is AuthFailure.STALE


@pytest.mark.parametrize("header", [None, "", "Bearer abc", 'Basic realm="x"'])
def test_missing_credentials(challenger: DigestChallenger, header: str | None) -> None:
    result = verify(challenger, header, T0)
    assert result.failure is AuthFailure.MISSING
    assert result.status_code == 401


def test_credentials_for_another_realm_count_as_missing(challenger: DigestChallenger) -> None:
    result = verify(challenger, RFC2617_AUTHORIZATION, T0)
    assert result.failure is AuthFailure.MISSING


def test_the_header_for_our_realm_is_picked_among_several(challenger: DigestChallenger) -> None:
    _, ours = answer(challenger, T0)
    result = challenger.verify("REGISTER", [RFC2617_AUTHORIZATION, ours], PASSWORDS.get, T0)
    assert result.ok


def test_wrong_opaque_is_malformed(challenger: DigestChallenger) -> None:
    offered = Challenge.parse(challenger.challenge(T0)[0])
    forged = Challenge(REALM, offered.nonce, Algorithm.SHA256, ("auth",), opaque="nope")
    _, header = answer(challenger, T0, challenge=forged)
    assert verify(challenger, header, T0).failure is AuthFailure.MALFORMED


def test_absent_opaque_is_tolerated(challenger: DigestChallenger) -> None:
    offered = Challenge.parse(challenger.challenge(T0)[0])
    _, header = answer(challenger, T0, challenge=Challenge(REALM, offered.nonce, Algorithm.SHA256))
    assert verify(challenger, header, T0).ok


def test_request_uri_must_match_when_given(challenger: DigestChallenger) -> None:
    _, header = answer(challenger, T0)
    wrong = challenger.verify("REGISTER", header, PASSWORDS.get, T0, request_uri="sip:elsewhere")
    assert wrong.failure is AuthFailure.MALFORMED
    right = challenger.verify("REGISTER", header, PASSWORDS.get, T0, request_uri=URI)
    assert right.ok


def test_no_qop_is_refused(challenger: DigestChallenger) -> None:
    offered = Challenge.parse(challenger.challenge(T0)[1])
    old_style = Challenge(REALM, offered.nonce, Algorithm.MD5, qop=(), opaque=offered.opaque)
    _, header = answer(challenger, T0, challenge=old_style)
    assert "qop" not in header
    result = verify(challenger, header, T0)
    assert result.failure is AuthFailure.MALFORMED
    assert result.status_code == 400


def test_nonce_table_is_bounded_and_eviction_never_lets_a_replay_in() -> None:
    challenger = DigestChallenger(REALM, SECRET, max_tracked_nonces=2, random_bytes=counter_bytes())
    headers = [answer(challenger, T0 + i) for i in range(3)]
    for _, header in headers:
        assert verify(challenger, header, T0 + 10).ok
    assert challenger.tracked_nonces == 2
    # The first nonce was forgotten to make room: its replay must not pass.
    assert verify(challenger, headers[0][1], T0 + 11).failure is AuthFailure.STALE
    assert verify(challenger, headers[2][1], T0 + 11).failure is AuthFailure.REPLAY


def test_expired_nonces_leave_the_table(challenger: DigestChallenger) -> None:
    for offset in (0.0, 100.0, 200.0):
        _, header = answer(challenger, T0 + offset)
        assert verify(challenger, header, T0 + offset).ok
    assert challenger.purge(T0 + 350.0) == 1
    assert challenger.tracked_nonces == 2


def test_full_table_purges_expired_before_evicting_live() -> None:
    challenger = DigestChallenger(
        REALM, SECRET, nonce_ttl=10.0, max_tracked_nonces=2, random_bytes=counter_bytes()
    )
    _, old = answer(challenger, T0)
    _, live = answer(challenger, T0 + 1)
    assert verify(challenger, live, T0 + 1).ok  # tracked first, so oldest in the table
    assert verify(challenger, old, T0 + 2).ok
    _, new = answer(challenger, T0 + 10.5)
    assert verify(challenger, new, T0 + 10.5).ok
    # The expired nonce made room; the live one is still tracked, not forgotten.
    assert verify(challenger, live, T0 + 10.6).failure is AuthFailure.REPLAY


def test_constructor_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        DigestChallenger(REALM, b"")
    with pytest.raises(ValueError):
        DigestChallenger(REALM, SECRET, nonce_ttl=0)


# Header parsing.


def test_parsing_handles_escapes_commas_case_and_spacing() -> None:
    value = (
        'digest USERNAME="a\\"b,c" ,realm = "r, with comma",, NONCE="n",'
        '\turi="sip:x", Response="' + "A" * 32 + '", Algorithm=md5, QOP=auth,'
        ' nc=0000000A, cnonce="cn", unknown-param=whatever'
    )
    credentials = Credentials.parse(value)
    assert credentials.username == 'a"b,c'
    assert credentials.realm == "r, with comma"
    assert credentials.algorithm is Algorithm.MD5
    assert credentials.response == "a" * 32
    assert credentials.nc == "0000000A"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('Digest username="a", realm="r", nonce="n", uri="u"', "missing response"),
        ('Digest username="a", realm="r", nonce="n", uri="u", response="', "unterminated"),
        ('Digest username="a", username="b"', "duplicate"),
        ("Digest username", "without '='"),
        ("Digest username=", "without a value"),
        ('Digest username="a" realm="r"', "expected ','"),
        ("Digest", "without params"),
        ('Digestusername="a"', "not a Digest"),
    ],
)
def test_malformed_headers(value: str, reason: str) -> None:
    with pytest.raises(DigestError, match=reason):
        Credentials.parse(value)


def _with(**changes: str) -> str:
    params = {
        "username": '"alice"',
        "realm": f'"{REALM}"',
        "nonce": '"n"',
        "uri": f'"{URI}"',
        "response": '"' + "0" * 32 + '"',
        "qop": "auth",
        "nc": "00000001",
        "cnonce": '"c"',
    }
    params.update(changes)
    return "Digest " + ", ".join(f"{k}={v}" for k, v in params.items() if v)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"qop": "auth-int"}, "unsupported qop"),
        ({"algorithm": "SHA-512-256"}, "unsupported algorithm"),
        ({"algorithm": "SHA-256"}, "bad response for SHA-256"),
        ({"response": '"xyz"'}, "bad response"),
        ({"nc": "1"}, "bad nc"),
        ({"nc": "0000000g"}, "bad nc"),
        ({"nc": "00000000"}, "bad nc"),
        ({"nc": ""}, "needs nc and cnonce"),
        ({"userhash": "true"}, "userhash"),
    ],
)
def test_unsupported_or_broken_params(changes: dict[str, str], reason: str) -> None:
    with pytest.raises(DigestError, match=reason):
        Credentials.parse(_with(**changes))


def test_well_formed_baseline_of_the_table_above_parses() -> None:
    assert Credentials.parse(_with()).username == "alice"
    assert Credentials.parse(_with(algorithm="sha-256-SESS", response='"' + "0" * 64 + '"'))


def test_malformed_header_gets_400(challenger: DigestChallenger) -> None:
    result = verify(challenger, _with(qop="auth-int"), T0)
    assert result.failure is AuthFailure.MALFORMED
    assert result.status_code == 400
    assert "auth-int" in result.reason


def test_authorize_refuses_a_challenge_without_auth_qop() -> None:
    with pytest.raises(DigestError):
        authorize(
            Challenge("r", "n", qop=("auth-int",)),
            username="u",
            password="p",
            method="REGISTER",
            uri="sip:r",
            cnonce="c",
        )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('Digest,username="a"', "no space after Digest"),
        ("Digest =x", "expected a param name"),
        ('Digest username="a\\', "unterminated"),
    ],
)
def test_more_malformed_headers(value: str, reason: str) -> None:
    with pytest.raises(DigestError, match=reason):
        Credentials.parse(value)


def test_session_algorithm_without_qop_needs_cnonce() -> None:
    value = _with(algorithm="MD5-sess", qop="", nc="", cnonce="")
    with pytest.raises(DigestError, match="needs cnonce"):
        Credentials.parse(value)


def test_challenge_without_nonce_is_refused() -> None:
    with pytest.raises(DigestError, match="realm or nonce"):
        Challenge.parse('Digest realm="r", qop="auth"')


@pytest.mark.parametrize("nonce", ["A", "!!!!", "QUJD"])
def test_undecodable_nonce_is_stale_with_the_right_password(
    challenger: DigestChallenger, nonce: str
) -> None:
    _, header = answer(challenger, T0, challenge=Challenge(REALM, nonce, Algorithm.SHA256))
    assert verify(challenger, header, T0).failure is AuthFailure.STALE


@pytest.mark.parametrize("guess", ["", "\0unknown-user"])
def test_unknown_user_never_passes_whatever_the_guess(
    challenger: DigestChallenger, guess: str
) -> None:
    _, header = answer(challenger, T0, username="mallory", password=guess)
    result = verify(challenger, header, T0)
    assert result.failure is AuthFailure.UNKNOWN_USER_OR_BAD_PASSWORD
