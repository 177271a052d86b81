"""TLS and SRTP settings, SDP offers under a leg's SRTP mode, TLS destinations."""

from __future__ import annotations

from pathlib import Path

import pytest

from switch.config import ConfigError, load_config
from switch.engine.core import tls_destination
from switch.engine.tls import KEEP_SECONDS, TlsFailures
from switch.sipuri import parse_dial_uri
from switch.srtp import audio_offer, refusal
from tests.support.certs import TestCa
from tests.unit.test_config import text

PLAIN = "v=0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
BEST_EFFORT = PLAIN + "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + "A" * 40 + "\r\n"
SAVP = BEST_EFFORT.replace("RTP/AVP", "RTP/SAVP")
VIDEO_KEYED = PLAIN + "m=video 4002 RTP/SAVP 96\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x\r\n"


# ---- SDP offers under off / optional / mandatory ------------------------------------------


@pytest.mark.parametrize(
    ("mode", "sdp", "expected"),
    [
        ("optional", PLAIN, None),
        ("optional", SAVP, None),
        ("optional", BEST_EFFORT, None),
        ("mandatory", PLAIN, "SRTP Required"),
        ("mandatory", BEST_EFFORT, None),
        ("mandatory", SAVP, None),
        ("mandatory", VIDEO_KEYED, "SRTP Required"),  # keys on another stream only
        ("off", SAVP, "SRTP Not Accepted"),
        ("off", PLAIN, None),
        ("mandatory", "", None),  # no offer: ours follows the leg's policy
    ],
)
def test_offer_refusal(mode: str, sdp: str, expected: str | None) -> None:
    assert refusal(mode, sdp) == expected


def test_audio_offer_reads_the_first_audio_stream() -> None:
    offer = audio_offer(SAVP)
    assert offer is not None and offer.requires_srtp and offer.keyed
    assert audio_offer("v=0\r\nm=video 1 RTP/AVP 96\r\n") is None


# ---- <Sip> URIs -----------------------------------------------------------------------


def test_secure_true_means_tls_and_is_not_sent() -> None:
    parsed = parse_dial_uri("sip:jack@example.com;secure=true?X-A=1")
    assert parsed.uri == "sip:jack@example.com;transport=tls"
    assert (parsed.transport, parsed.secure, parsed.headers) == ("tls", True, (("X-A", "1"),))
    assert parse_dial_uri("sips:jack@example.com").transport == "tls"
    assert parse_dial_uri("sip:jack@example.com;secure=false").uri == "sip:jack@example.com"


def test_secure_true_with_another_transport_is_refused() -> None:
    with pytest.raises(ValueError, match="secure=true needs transport=tls"):
        parse_dial_uri("sip:jack@example.com;transport=udp;secure=true")


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sips:+1555@127.0.0.1:5999", "127.0.0.1:5999"),
        ("sip:+1@carrier.example;transport=TLS", "carrier.example:5061"),
        ("sip:a@[::1]:5071;transport=tls", "[::1]:5071"),
        ("sip:a@carrier.example", ""),
        ("sip:a@carrier.example;transport=tcp", ""),
    ],
)
def test_tls_destination(uri: str, expected: str) -> None:
    assert tls_destination(uri) == expected


def test_tls_failures_explain_recent_failures_of_their_destination() -> None:
    failures = TlsFailures()
    failures.record("127.0.0.1:5061", "expired", now=100.0)
    failures.record("127.0.0.1:5062", "untrusted", now=101.0)
    assert failures.explain("127.0.0.1:5061", now=101.5) == "expired"
    assert failures.explain("carrier.example:5061", now=101.5) == "untrusted"  # newest
    assert failures.explain("127.0.0.1:5061", now=101.0 + KEEP_SECONDS + 1) is None


# ---- configuration ----------------------------------------------------------------------


def tls_sip(certificate: Path | str, key: Path | str, extra: str = "") -> str:
    return (
        'listen = ["udp:127.0.0.1:5060", "tls:127.0.0.1:5061"]\n'
        f'tls_certificate = "{certificate}"\ntls_private_key = "{key}"\n{extra}'
    )


def problems_of(tmp_path: Path, content: str) -> dict[str, str]:
    path = tmp_path / "dialswitch.toml"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return {p.key: p.message for p in info.value.problems}


def test_tls_settings_load(tmp_path: Path) -> None:
    ca = TestCa(tmp_path)
    issued = ca.issue("switch")
    path = tmp_path / "dialswitch.toml"
    trunk = '[[trunks]]\nname = "t"\nuri = "sips:carrier.example"\nsrtp = "Mandatory"\n'
    client = '[[clients]]\nidentity = "alice"\npassword = "12345678"\nsrtp = "off"\n'
    extra = f'tls_ca = "{ca.path}"\ntls_verify_client = true\nsrtp = "optional"\n'
    sip = tls_sip(issued.certificate, issued.private_key, extra)
    path.write_text(text(sip=sip, extra=trunk + client))
    config = load_config(path)
    tls = config.sip.tls
    assert (tls.certificate, tls.private_key, tls.ca) == (
        issued.certificate,
        issued.private_key,
        ca.path,
    )
    assert tls.verify_client and tls.verify_server
    assert tls.ca_file == ca.path
    (trunk_config,) = config.trunks
    assert (trunk_config.scheme, trunk_config.transport, trunk_config.srtp) == (
        "sips",
        "tls",
        "mandatory",
    )
    assert config.clients[0].srtp == "off"


def test_a_tls_listener_needs_a_certificate(tmp_path: Path) -> None:
    sip = 'listen = ["tls:127.0.0.1:5061"]'
    found = problems_of(tmp_path, text(sip=sip))
    assert found["sip.tls_certificate"].startswith("required by the tls: listeners")
    assert found["sip.tls_private_key"].startswith("required by the tls: listeners")


def test_certificate_problems_name_the_key_and_why(tmp_path: Path) -> None:
    ca = TestCa(tmp_path)
    one, other = ca.issue("one"), ca.issue("other")
    missing = tmp_path / "missing.pem"
    assert (
        "does not exist"
        in problems_of(tmp_path, text(sip=tls_sip(missing, one.private_key)))["sip.tls_certificate"]
    )
    mismatch = problems_of(tmp_path, text(sip=tls_sip(one.certificate, other.private_key)))
    assert mismatch["sip.tls_private_key"] == (
        f"{other.private_key} does not match {one.certificate}"
    )
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    assert (
        "is not a PEM file"
        in problems_of(tmp_path, text(sip=tls_sip(garbage, one.private_key)))["sip.tls_certificate"]
    )
    assert (
        "is not a PEM file"
        in problems_of(tmp_path, text(sip=tls_sip(one.certificate, garbage)))["sip.tls_private_key"]
    )
    bad_ca = tls_sip(one.certificate, one.private_key, f'tls_ca = "{garbage}"\n')
    assert "holds no PEM certificate" in problems_of(tmp_path, text(sip=bad_ca))["sip.tls_ca"]


def test_verify_client_needs_a_ca(tmp_path: Path) -> None:
    issued = TestCa(tmp_path).issue("switch")
    sip = tls_sip(issued.certificate, issued.private_key, "tls_verify_client = true\n")
    assert "required by tls_verify_client" in problems_of(tmp_path, text(sip=sip))["sip.tls_ca"]


def test_a_tls_trunk_needs_a_tls_listener(tmp_path: Path) -> None:
    trunk = '[[trunks]]\nname = "t"\nuri = "sip:carrier.example;transport=tls"\n'
    found = problems_of(tmp_path, text(extra=trunk))
    assert found["trunks[0].uri"].startswith("TLS needs a tls: listener")


def test_srtp_values_are_checked(tmp_path: Path) -> None:
    sip = 'listen = ["udp:127.0.0.1:5060"]\nsrtp = "always"'
    assert (
        "expected one of off, optional, mandatory"
        in problems_of(tmp_path, text(sip=sip))["sip.srtp"]
    )
    trunk = '[[trunks]]\nname = "t"\nuri = "sips:carrier.example;transport=udp"\n'
    assert "reached over TLS only" in problems_of(tmp_path, text(extra=trunk))["trunks[0].uri"]
