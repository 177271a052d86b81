"""The registrar's digest policy: one offer for every identity, per-client limits."""

from __future__ import annotations

from pathlib import Path

from switch.config_clients import ClientConfig, RegistrarConfig
from switch.registrar.digest import Algorithm, Challenge, authorize
from switch.registrar.service import Registrar
from switch.sipmsg import SipMessage
from switch.store import Store

REALM = "dialswitch.test"


def client(identity: str, password: str, algorithms: tuple[str, ...] | None) -> ClientConfig:
    return ClientConfig(identity, password, None, "POST", None, "POST", algorithms)


def register(identity: str, authorization: str = "") -> SipMessage:
    header = f"Authorization: {authorization}\r\n" if authorization else ""
    return SipMessage.parse(
        f"REGISTER sip:{REALM} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\n"
        f"From: <sip:{identity}@{REALM}>;tag=1\r\n"
        f"To: <sip:{identity}@{REALM}>\r\n"
        "Call-ID: reg-1\r\nCSeq: 1 REGISTER\r\n"
        f"{header}Content-Length: 0\r\n\r\n"
    )


def test_challenges_are_the_same_for_every_identity_and_limits_apply_at_verification(
    tmp_path: Path,
) -> None:
    config = RegistrarConfig(digest_algorithms=("SHA-256", "MD5"))
    clients = (
        client("alice", "alice-secret", ("SHA-256",)),
        client("bob", "bob-secret-2", None),
    )
    with Store.open(tmp_path) as store:
        registrar = Registrar(config, REALM, clients, store, clock=lambda: 1000.0)
        offers = {}
        for identity in ("alice", "bob", "nobody"):
            user, reply = registrar.authenticate(
                "REGISTER", register(identity), "127.0.0.1", "Authorization"
            )
            assert user is None and reply is not None and reply.status == 401
            offers[identity] = [Challenge.parse(v).algorithm for _, v in reply.headers]
        assert offers["alice"] == offers["bob"] == offers["nobody"]
        assert offers["alice"] == [Algorithm.SHA256, Algorithm.MD5]

        def answer(identity: str, password: str, algorithm: Algorithm) -> str:
            _, reply = registrar.authenticate(
                "REGISTER", register(identity), "127.0.0.1", "Authorization"
            )
            assert reply is not None
            challenge = next(
                c
                for c in (Challenge.parse(v) for _, v in reply.headers)
                if c.algorithm is algorithm
            )
            credentials = authorize(
                challenge,
                username=identity,
                password=password,
                method="REGISTER",
                uri=f"sip:{REALM}",
                cnonce="abc",
            )
            user, refusal = registrar.authenticate(
                "REGISTER",
                register(identity, credentials.header_value()),
                "127.0.0.1",
                "Authorization",
            )
            return user if user is not None else str(refusal.status if refusal else "")

        assert answer("alice", "alice-secret", Algorithm.MD5) == "403"
        assert answer("alice", "alice-secret", Algorithm.SHA256) == "alice"
        assert answer("bob", "bob-secret-2", Algorithm.MD5) == "bob"
