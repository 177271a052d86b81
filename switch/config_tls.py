"""TLS and SRTP settings of the config file (``[sip]``, trunks and clients).

One TLS configuration serves every ``tls:`` listener and every TLS connection
the switch opens: the certificate and key it presents, the CAs it trusts for
far ends (the system store unless ``tls_ca`` is set) and whether phones must
present a certificate. TLS 1.2 and 1.3 only. Certificates are loaded with
Python's `ssl` module when the file is read, so a wrong path, a key that does
not match, or a file that is not PEM is reported under its key before the
switch starts.

SRTP (SDES, RFC 4568) is chosen per trunk and per client, falling back to
``[sip] srtp``:

- ``off``: SRTP is never offered; an offer that requires it (RTP/SAVP) gets 488.
- ``optional``: offers carry keys on RTP/AVP (best effort); an SRTP offer is
  answered with SRTP and a plain one with plain RTP.
- ``mandatory``: offers are RTP/SAVP; a plain offer gets 488, and an answer
  without keys ends the leg.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SRTP_MODES = ("off", "optional", "mandatory")
SYSTEM_CA_FILE = Path("/etc/ssl/certs/ca-certificates.crt")
"""Debian's bundle of the system store (package ca-certificates)."""


@dataclass(frozen=True)
class TlsConfig:
    certificate: Path | None = None
    private_key: Path | None = None
    ca: Path | None = None
    """CAs trusted for far ends and phones' certificates; None: the system store."""
    verify_client: bool = False
    """Phones connecting over TLS must present a certificate signed by `ca`."""
    verify_server: bool = True
    """Far ends we connect to must present a valid certificate for their name."""

    @property
    def ca_file(self) -> Path | None:
        """The CA file handed to the SIP stack."""
        if self.ca is not None:
            return self.ca
        default = ssl.get_default_verify_paths().cafile
        if default:
            return Path(default)
        return SYSTEM_CA_FILE if SYSTEM_CA_FILE.exists() else None


def build_tls(t: Any, needed: bool) -> TlsConfig:
    """The ``tls_*`` keys of ``[sip]``; ``needed`` when a listener or trunk uses TLS.

    ``t`` is switch.config's table reader. Files are checked here: every
    problem names its key and the reason.
    """
    certificate = _path(t, "tls_certificate")
    private_key = _path(t, "tls_private_key")
    ca = _path(t, "tls_ca")
    verify_client = t.boolean("tls_verify_client", False)
    verify_server = t.boolean("tls_verify_server", True)
    if needed:
        for name, value in (("tls_certificate", certificate), ("tls_private_key", private_key)):
            if value is None and name not in t.data:
                t.problem(name, "required by the tls: listeners and TLS trunks")
    elif (certificate is None) != (private_key is None):
        missing = "tls_private_key" if certificate is not None else "tls_certificate"
        t.problem(missing, "tls_certificate and tls_private_key go together")
    if certificate is not None and private_key is not None:
        problem = _load_pair(certificate, private_key)
        if problem is not None:
            t.problem(*problem)
    if ca is not None:
        problem_text = _load_ca(ca)
        if problem_text is not None:
            t.problem("tls_ca", problem_text)
    if verify_client and ca is None and "tls_ca" not in t.data:
        t.problem("tls_ca", "required by tls_verify_client: the CA that signs the phones")
    return TlsConfig(certificate, private_key, ca, verify_client, verify_server)


def srtp_mode(t: Any, default: str) -> str:
    """A table's ``srtp`` key: off, optional or mandatory."""
    return str(t.choice("srtp", default, SRTP_MODES, "lower"))


def _path(t: Any, name: str) -> Path | None:
    text = t.string(name)
    if text is None:
        return None
    if not text:
        t.problem(name, "must not be empty")
        return None
    path = Path(text).expanduser()
    return path if path.is_absolute() else Path.cwd() / path


def _load_pair(certificate: Path, private_key: Path) -> tuple[str, str] | None:
    """(key, reason) when the certificate and key cannot be used together."""
    for name, path in (("tls_certificate", certificate), ("tls_private_key", private_key)):
        reason = _unreadable(path)
        if reason:
            return name, reason
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certificate, private_key)
    except ssl.SSLError as error:
        text = str(error).lower()
        if "key values mismatch" in text or "key_values_mismatch" in text:
            return "tls_private_key", f"{private_key} does not match {certificate}"
        if "pem" in text or "no start line" in text:
            which, path = _which_is_bad(certificate, private_key)
            return which, f"{path} is not a PEM file ({error.reason or error})"
        return "tls_certificate", f"cannot load {certificate}: {error.reason or error}"
    except OSError as error:
        return "tls_certificate", f"cannot load {certificate}: {error.strerror or error}"
    return None


def _which_is_bad(certificate: Path, private_key: Path) -> tuple[str, Path]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=certificate)
    except ssl.SSLError:
        return "tls_certificate", certificate
    return "tls_private_key", private_key


def _load_ca(path: Path) -> str | None:
    reason = _unreadable(path)
    if reason:
        return reason
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=path)
    except ssl.SSLError as error:
        return f"{path} holds no PEM certificate ({error.reason or error})"
    return None


def _unreadable(path: Path) -> str | None:
    try:
        with path.open("rb"):
            pass
    except FileNotFoundError:
        return f"{path} does not exist"
    except IsADirectoryError:
        return f"{path} is a directory"
    except PermissionError:
        return f"cannot read {path}: permission denied"
    except OSError as error:
        return f"cannot read {path}: {error.strerror or error}"
    return None


def server_context(config: TlsConfig) -> ssl.SSLContext:
    """The TLS server side of wss: listeners: the switch's certificate, TLS 1.2+."""
    assert config.certificate is not None and config.private_key is not None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.certificate, config.private_key)
    return context
