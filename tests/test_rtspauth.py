"""Specification tests for gateway.protocols.rtsp_auth: Basic/Digest for RTSP (RFC 2326 +
RFC 2617)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.protocols.rtsp import RtspError
from gateway.protocols.rtsp_auth import (
    BasicCredentials,
    Challenge,
    DigestChallenger,
    DigestCredentials,
    NonceStatus,
    authorization_header,
    parse_authorization,
    parse_www_authenticate,
)

FAST = settings(max_examples=300, deadline=None)
SECRET = b"k" * 32
NOW = 1_700_000_000.0
URI = "rtsp://127.0.0.1:8554/cam1"


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def challenger() -> DigestChallenger:
    return DigestChallenger(SECRET)


def digest_header(nonce: str, response: str, *, uri: str = URI, extra: str = "") -> str:
    # Exactly ffmpeg's layout (libavformat/httpauth.c make_digest_auth).
    return (
        f'Digest username="alice", realm="feedgate", nonce="{nonce}", uri="{uri}", '
        f'response="{response}"{extra}'
    )


def rfc2069_response(nonce: str, method: str = "DESCRIBE", password: str = "s3cret") -> str:
    ha1 = md5(f"alice:feedgate:{password}")
    return md5(f"{ha1}:{nonce}:{md5(f'{method}:{URI}')}")


# --------------------------------------------------------------------------- Authorization


def test_parse_basic() -> None:
    assert parse_authorization("Basic YWxhZGRpbjpvcGVuc2VzYW1l") == BasicCredentials(
        "aladdin", "opensesame"
    )


def test_basic_password_may_contain_colons_and_scheme_is_case_insensitive() -> None:
    token = base64.b64encode(b"user:pa:ss").decode()
    assert parse_authorization(f"basic {token}") == BasicCredentials("user", "pa:ss")


def test_basic_non_utf8_falls_back_to_latin1() -> None:
    token = base64.b64encode(b"j\xf6rg:pw").decode()
    assert parse_authorization(f"Basic {token}") == BasicCredentials("j\xf6rg", "pw")


@pytest.mark.parametrize(
    "value",
    [
        "Basic",
        "Basic !!!!",
        "Basic YWxhZGRpbg",  # bad padding
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic YWxh ZGRp",
        "",
        "   ",
        "=Basic abc",
        "Basic\x00YWJjOmRlZg==",
    ],
)
def test_basic_junk_is_400(value: str) -> None:
    with pytest.raises(RtspError) as info:
        parse_authorization(value)
    assert info.value.status == 400


def test_parse_digest_as_sent_by_ffmpeg_with_qop() -> None:
    value = digest_header(
        "n1",
        "6629fae49393a05397450978507c4ef1",
        extra=', algorithm="MD5", opaque="op", qop="auth", cnonce="0a4f113b", nc=00000001',
    )
    assert parse_authorization(value) == DigestCredentials(
        username="alice",
        realm="feedgate",
        nonce="n1",
        uri=URI,
        response="6629fae49393a05397450978507c4ef1",
        algorithm="MD5",
        opaque="op",
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
    )


def test_parse_digest_as_sent_by_live555_without_qop() -> None:
    # VLC/live555 RTSPClient: no spaces after commas, no algorithm, no qop.
    value = (
        'Digest username="alice",realm="feedgate",nonce="abc",uri="rtsp://h/cam1/",'
        'response="0123456789abcdef0123456789abcdef"'
    )
    creds = parse_authorization(value)
    assert isinstance(creds, DigestCredentials)
    assert (creds.uri, creds.algorithm, creds.qop, creds.nc, creds.cnonce) == (
        "rtsp://h/cam1/",
        "MD5",
        None,
        None,
        None,
    )


def test_parse_digest_quoted_strings_with_escapes_and_commas() -> None:
    value = (
        r'Digest username="a\"b\\c", realm="r, with comma", nonce=tok, uri="rtsp://h/x?a=1,2",'
        r' response="00"'
    )
    creds = parse_authorization(value)
    assert isinstance(creds, DigestCredentials)
    assert creds.username == 'a"b\\c'
    assert creds.realm == "r, with comma"
    assert creds.nonce == "tok"
    assert creds.uri == "rtsp://h/x?a=1,2"


@pytest.mark.parametrize(
    "value",
    [
        "Digest",
        'Digest username="alice", realm="r", nonce="n", uri="u"',  # no response
        'Digest username="alice" realm="r"',
        'Digest username="alice, realm="r", nonce="n", uri="u", response="x"',
        'Digest username=, realm="r", nonce="n", uri="u", response="x"',
        'Digest username="a", username="b", realm="r", nonce="n", uri="u", response="x"',
        'Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth',
        'Digest username="a", realm="r", nonce="n", uri="u", response="x" junk',
    ],
)
def test_digest_junk_is_400(value: str) -> None:
    with pytest.raises(RtspError) as info:
        parse_authorization(value)
    assert info.value.status == 400


def test_unsupported_scheme_is_401_so_the_server_rechallenges() -> None:
    with pytest.raises(RtspError) as info:
        parse_authorization("Bearer eyJhbGciOi.abc.def")
    assert info.value.status == 401


@FAST
@given(st.text(max_size=200))
def test_parse_authorization_only_raises_rtsp_error(value: str) -> None:
    for candidate in (value, "Digest " + value, "Basic " + value):
        try:
            parse_authorization(candidate)
        except RtspError:
            pass


@FAST
@given(st.text(max_size=30).filter(lambda u: ":" not in u), st.text(max_size=30))
def test_basic_round_trips(username: str, password: str) -> None:
    header = authorization_header(
        [Challenge("basic", {"realm": "r"})], "PLAY", URI, username, password
    )
    assert parse_authorization(header) == BasicCredentials(username, password)


# --------------------------------------------------------------------------- nonces


def test_nonce_made_now_checks_ok() -> None:
    c = challenger()
    assert c.check_nonce(c.make_nonce(NOW), NOW)
    assert c.check_nonce(c.make_nonce(NOW), NOW + 59.0)


def test_nonces_are_unique() -> None:
    c = challenger()
    assert len({c.make_nonce(NOW) for _ in range(100)}) == 100


def test_nonce_older_than_max_age_fails() -> None:
    c = challenger()
    nonce = c.make_nonce(NOW)
    assert not c.check_nonce(nonce, NOW + 61.0)  # a minute: captured nonces soon go stale
    assert c.nonce_status(nonce, NOW + 61.0) is NonceStatus.STALE
    assert c.check_nonce(nonce, NOW + 500.0, max_age=600.0)
    assert DigestChallenger(SECRET, max_age=600.0).check_nonce(nonce, NOW + 500.0)


def test_nonce_bound_to_one_connection_is_foreign_on_another() -> None:
    c = challenger()
    nonce = c.make_nonce(NOW, bind="10.0.0.5:40000")
    assert c.check_nonce(nonce, NOW, bind="10.0.0.5:40000")
    assert c.nonce_status(nonce, NOW, bind="10.0.0.5:40001") is NonceStatus.FOREIGN
    assert c.nonce_status(nonce, NOW) is NonceStatus.FOREIGN


def test_nonce_from_the_future_fails() -> None:
    c = challenger()
    assert not c.check_nonce(c.make_nonce(NOW + 60), NOW)


def test_nonce_from_another_secret_fails() -> None:
    assert not DigestChallenger(b"other" * 8).check_nonce(challenger().make_nonce(NOW), NOW)


def test_tampered_nonce_fails() -> None:
    c = challenger()
    stamp, salt, mac = c.make_nonce(NOW).split(".")
    later = f"{int(stamp, 16) + 100_000:x}"
    assert not c.check_nonce(f"{later}.{salt}.{mac}", NOW + 100)
    assert not c.check_nonce(f"{stamp}.{salt}.{'0' * 32}", NOW)


@pytest.mark.parametrize("nonce", ["", "abc", "1.2.3", "zz.0000000000000000." + "0" * 32, "é"])
def test_garbage_nonce_fails(nonce: str) -> None:
    assert not challenger().check_nonce(nonce, NOW)


def test_default_secret_is_random_per_instance() -> None:
    assert not DigestChallenger().check_nonce(DigestChallenger().make_nonce(NOW), NOW)


# --------------------------------------------------------------------------- challenges


def test_www_authenticate_offers_digest_with_qop_then_basic() -> None:
    headers = challenger().www_authenticate_headers("feedgate", NOW)
    assert [name for name, _ in headers] == ["WWW-Authenticate", "WWW-Authenticate"]
    assert headers[0][1].startswith('Digest realm="feedgate", nonce="')
    assert headers[0][1].endswith(', qop="auth"')
    assert headers[1][1] == 'Basic realm="feedgate"'


def test_www_authenticate_without_basic_and_with_stale() -> None:
    headers = challenger().www_authenticate_headers("feedgate", NOW, stale=True, basic=False)
    assert len(headers) == 1 and headers[0][1].endswith(", stale=TRUE")


def test_www_authenticate_realm_is_escaped() -> None:
    headers = challenger().www_authenticate_headers('a "quoted" realm', NOW)
    (digest, basic) = parse_www_authenticate([v for _, v in headers])
    assert digest.params["realm"] == basic.params["realm"] == 'a "quoted" realm'


def test_challenge_nonce_is_checkable() -> None:
    c = challenger()
    (digest, _) = parse_www_authenticate([v for _, v in c.www_authenticate_headers("r", NOW)])
    assert c.check_nonce(digest.params["nonce"], NOW + 1)


# --------------------------------------------------------------------------- verification


def test_verify_rfc2069_digest_as_sent_by_vlc() -> None:
    c = challenger()
    nonce = c.make_nonce(NOW)
    creds = parse_authorization(digest_header(nonce, rfc2069_response(nonce)))
    assert isinstance(creds, DigestCredentials)
    assert c.verify_digest(creds, "DESCRIBE", "s3cret", NOW + 1)
    assert c.verify_digest(creds, "DESCRIBE", "s3cret", NOW + 1, realm="feedgate")


def test_verify_rejects_wrong_password_method_realm_or_stale_nonce() -> None:
    c = challenger()
    nonce = c.make_nonce(NOW)
    creds = parse_authorization(digest_header(nonce, rfc2069_response(nonce)))
    assert isinstance(creds, DigestCredentials)
    assert not c.verify_digest(creds, "DESCRIBE", "wrong", NOW)
    assert not c.verify_digest(creds, "PLAY", "s3cret", NOW)
    assert not c.verify_digest(creds, "DESCRIBE", "s3cret", NOW, realm="other")
    assert not c.verify_digest(creds, "DESCRIBE", "s3cret", NOW + 61)


def test_verify_rejects_nonce_we_did_not_issue() -> None:
    creds = parse_authorization(digest_header("deadbeef", rfc2069_response("deadbeef")))
    assert isinstance(creds, DigestCredentials)
    assert not challenger().verify_digest(creds, "DESCRIBE", "s3cret", NOW)


def test_verify_accepts_upper_case_response_hex() -> None:
    c = challenger()
    nonce = c.make_nonce(NOW)
    creds = parse_authorization(digest_header(nonce, rfc2069_response(nonce).upper()))
    assert isinstance(creds, DigestCredentials)
    assert c.verify_digest(creds, "DESCRIBE", "s3cret", NOW)


def qop_creds_response(nonce: str, nc: str, cnonce: str = "0a4f113b") -> str:
    ha1, ha2 = md5("alice:feedgate:s3cret"), md5(f"SETUP:{URI}")
    return md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")


def qop_creds(c: DigestChallenger, **overrides: str) -> DigestCredentials:
    nonce = c.make_nonce(NOW)
    params = {"qop": "auth", "nc": "00000001", "cnonce": "0a4f113b", "algorithm": "MD5"}
    params.update(overrides)
    ha1 = md5("alice:feedgate:s3cret")
    ha2 = md5(f"SETUP:{URI}")
    response = md5(f"{ha1}:{nonce}:{params['nc']}:{params['cnonce']}:{params['qop']}:{ha2}")
    return DigestCredentials(
        "alice",
        "feedgate",
        nonce,
        URI,
        response,
        params["algorithm"],
        None,
        params["qop"],
        params["nc"],
        params["cnonce"],
    )


def test_verify_qop_auth_as_sent_by_ffmpeg() -> None:
    c = challenger()
    assert c.verify_digest(qop_creds(c), "SETUP", "s3cret", NOW)


@pytest.mark.parametrize(
    "overrides",
    [
        {"qop": "auth-int"},
        {"nc": "1"},
        {"nc": "zzzzzzzz"},
        {"cnonce": ""},
        {"algorithm": "MD5-sess"},
    ],
)
def test_verify_rejects_unsupported_or_malformed_qop_fields(overrides: dict[str, str]) -> None:
    c = challenger()
    assert not c.verify_digest(qop_creds(c, **overrides), "SETUP", "s3cret", NOW)


def test_a_qop_answer_is_accepted_once_and_its_nc_must_rise() -> None:
    """The issue's replay: one Digest header sent again. With qop=auth each request counts up
    ``nc``; an answer that does not is refused, however right its response."""
    c = challenger()
    first = qop_creds(c)
    assert c.verify_digest(first, "SETUP", "s3cret", NOW)
    assert c.replayed(first)
    assert not c.verify_digest(first, "SETUP", "s3cret", NOW + 1)
    later = qop_creds(c, nc="00000002")
    later.nonce = first.nonce
    later.response = qop_creds_response(first.nonce, "00000002")
    assert c.verify_digest(later, "SETUP", "s3cret", NOW + 2)
    assert not c.verify_digest(first, "SETUP", "s3cret", NOW + 3)  # going back is a replay too


def test_a_wrong_answer_does_not_move_the_counter() -> None:
    c = challenger()
    right = qop_creds(c)
    assert not c.verify_digest(right, "SETUP", "wrong", NOW)
    assert not c.replayed(right)
    assert c.verify_digest(right, "SETUP", "s3cret", NOW)


def test_the_counter_table_is_bounded_and_forgets_expired_nonces() -> None:
    c = DigestChallenger(SECRET, max_tracked=3)
    accepted = []
    for i in range(5):
        creds = qop_creds(c)
        assert c.verify_digest(creds, "SETUP", "s3cret", NOW + i)
        accepted.append(creds)
    assert len(c._counts) == 3
    assert [c.replayed(a) for a in accepted] == [False, False, True, True, True]
    late = qop_creds(c)
    late.nonce = c.make_nonce(NOW + 100)
    late.response = qop_creds_response(late.nonce, "00000001")
    assert c.verify_digest(late, "SETUP", "s3cret", NOW + 100)
    assert len(c._counts) == 1  # the others are past their life: nothing to remember


def test_verify_rejects_non_ascii_response() -> None:
    c = challenger()
    creds = qop_creds(c)
    creds.response = "é" * 32
    assert not c.verify_digest(creds, "SETUP", "s3cret", NOW)


# --------------------------------------------------------------------------- client side


def test_parse_www_authenticate_separate_headers() -> None:
    challenges = parse_www_authenticate(
        ['Digest realm="feedgate", nonce="abc", stale=FALSE', 'Basic realm="feedgate"']
    )
    assert challenges == [
        Challenge("digest", {"realm": "feedgate", "nonce": "abc", "stale": "FALSE"}),
        Challenge("basic", {"realm": "feedgate"}),
    ]


def test_parse_www_authenticate_several_challenges_in_one_value() -> None:
    challenges = parse_www_authenticate(
        ['Basic realm="cam", Digest realm="cam", qop="auth,auth-int", nonce="n", opaque="o"']
    )
    assert [c.scheme for c in challenges] == ["basic", "digest"]
    assert challenges[1].params == {
        "realm": "cam",
        "qop": "auth,auth-int",
        "nonce": "n",
        "opaque": "o",
    }


def test_parse_www_authenticate_token68_and_bare_scheme() -> None:
    challenges = parse_www_authenticate(["Negotiate abc==, Basic", "NTLM"])
    assert challenges == [
        Challenge("negotiate", {"": "abc=="}),
        Challenge("basic", {}),
        Challenge("ntlm", {}),
    ]


@pytest.mark.parametrize(
    "value",
    [
        'Digest realm="unterminated',
        'Digest realm=, nonce="x"',
        "(bad)",
        'Digest realm="a" nonce="b"',
    ],
)
def test_parse_www_authenticate_junk_is_400(value: str) -> None:
    with pytest.raises(RtspError) as info:
        parse_www_authenticate([value])
    assert info.value.status == 400


@FAST
@given(st.lists(st.text(max_size=80), max_size=3))
def test_parse_www_authenticate_only_raises_rtsp_error(values: list[str]) -> None:
    try:
        parse_www_authenticate(values)
    except RtspError:
        pass


def test_client_answers_rfc2617_example_like_ffmpeg() -> None:
    # RFC 2617 §3.5 example, rendered in ffmpeg's exact Authorization layout.
    challenges = parse_www_authenticate(
        [
            'Digest realm="testrealm@host.com", qop="auth,auth-int", '
            'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
        ]
    )
    header = authorization_header(
        challenges,
        "GET",
        "/dir/index.html",
        "Mufasa",
        "Circle Of Life",
        cnonce_factory=lambda: "0a4f113b",
    )
    assert header == (
        'Digest username="Mufasa", realm="testrealm@host.com", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", '
        'response="6629fae49393a05397450978507c4ef1", '
        'opaque="5ccc069c403ebaf9f0171e9517f40e41", qop="auth", cnonce="0a4f113b", nc=00000001'
    )


def test_client_prefers_digest_over_basic() -> None:
    challenges = [
        Challenge("basic", {"realm": "r"}),
        Challenge("digest", {"realm": "r", "nonce": "n"}),
    ]
    header = authorization_header(challenges, "DESCRIBE", URI, "alice", "pw")
    assert header.startswith('Digest username="alice", realm="r", nonce="n", uri="')
    assert "qop" not in header


def test_client_falls_back_to_basic() -> None:
    header = authorization_header(
        [
            Challenge("digest", {"realm": "r", "nonce": "n", "algorithm": "SHA-256"}),
            Challenge("basic", {"realm": "r"}),
        ],
        "DESCRIBE",
        URI,
        "alice",
        "pw",
    )
    assert header == "Basic " + base64.b64encode(b"alice:pw").decode()


def test_client_without_supported_challenge_raises() -> None:
    with pytest.raises(ValueError):
        authorization_header([Challenge("negotiate", {"": "x"})], "PLAY", URI, "a", "b")


def test_client_repeats_quoted_algorithm_like_ffmpeg() -> None:
    header = authorization_header(
        [Challenge("digest", {"realm": "r", "nonce": "n", "algorithm": "MD5"})],
        "PLAY",
        URI,
        "a",
        "b",
    )
    assert ', algorithm="MD5"' in header


def test_client_nc_counter_is_hex() -> None:
    header = authorization_header(
        [Challenge("digest", {"realm": "r", "nonce": "n", "qop": "auth"})],
        "PLAY",
        URI,
        "a",
        "b",
        cnonce_factory=lambda: "c",
        nc=26,
    )
    assert header.endswith("nc=0000001a")


@pytest.mark.parametrize("with_qop", [False, True])
def test_end_to_end_server_challenge_client_answer_server_verify(with_qop: bool) -> None:
    c = challenger()
    values = [v for _, v in c.www_authenticate_headers("feedgate", NOW, qop=with_qop)]
    header = authorization_header(parse_www_authenticate(values), "SETUP", URI, "alice", "s3cret")
    creds = parse_authorization(header)
    assert isinstance(creds, DigestCredentials)
    assert (creds.qop == "auth") is with_qop
    assert c.verify_digest(creds, "SETUP", "s3cret", NOW + 5, realm="feedgate")
    assert not c.verify_digest(creds, "SETUP", "nope", NOW + 5)


@FAST
@given(
    st.text(max_size=20),
    st.text(max_size=20),
    st.text(max_size=20),
    st.sampled_from(["OPTIONS", "DESCRIBE", "SETUP", "PLAY", "ANNOUNCE", "RECORD"]),
    st.booleans(),
)
def test_digest_round_trips_for_any_credentials(
    username: str, password: str, realm: str, method: str, with_qop: bool
) -> None:
    c = challenger()
    params = {"realm": realm, "nonce": c.make_nonce(NOW)}
    if with_qop:
        params["qop"] = "auth"
    header = authorization_header([Challenge("digest", params)], method, URI, username, password)
    creds = parse_authorization(header)
    assert isinstance(creds, DigestCredentials)
    assert (creds.username, creds.realm) == (username, realm)
    assert c.verify_digest(creds, method, password, NOW, realm=realm)
