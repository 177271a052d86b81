"""The SIP torture-test corpora of RFC 4475 and RFC 5118, as exact bytes.

The messages live under `tests/fixtures/sip_torture/` (see the README there for where
each set came from and how it was produced): the 49 messages of RFC 4475 section 3 in
`rfc4475/<name>.dat` and the 12 messages of RFC 5118 section 4 in `rfc5118/<name>.dat`,
named as the RFCs name them ("Message Details: wsinv").

`CASES` lists all 61 in RFC order, each with its section, title and whether it is a
request or a response. `load()` returns a message's bytes exactly as its RFC's
bit-exact archive holds them; nothing is normalised. In particular the RFC 5118 files
use bare LF line ends (the archive has no CR at all) and two of them lack the empty
line that ends the header section; `to_wire()` turns such bytes into CRLF-framed SIP
without touching anything else. What a receiver should do with each message is left
to the tests that use this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["CASES", "CORPUS", "TortureCase", "by_name", "load", "to_wire"]

CORPUS = Path(__file__).parents[1] / "fixtures" / "sip_torture"

Kind = Literal["request", "response"]


@dataclass(frozen=True)
class TortureCase:
    """One torture-test message: its RFC, section, kind and the section's title.

    `name` is the RFC's own name for the message and the stem of its fixture file.
    """

    name: str
    rfc: int
    section: str
    kind: Kind
    title: str

    @property
    def path(self) -> Path:
        """The fixture file holding this message's bytes."""
        return CORPUS / f"rfc{self.rfc}" / f"{self.name}.dat"


def _c4475(name: str, section: str, kind: Kind, title: str) -> TortureCase:
    return TortureCase(name=name, rfc=4475, section=section, kind=kind, title=title)


def _c5118(name: str, section: str, kind: Kind, title: str) -> TortureCase:
    return TortureCase(name=name, rfc=5118, section=section, kind=kind, title=title)


CASES: tuple[TortureCase, ...] = (
    # RFC 4475 3.1.1: parser tests, valid messages.
    _c4475("wsinv", "3.1.1.1", "request", "A Short Tortuous INVITE"),
    _c4475("intmeth", "3.1.1.2", "request", "Wide Range of Valid Characters"),
    _c4475("esc01", "3.1.1.3", "request", "Valid Use of the % Escaping Mechanism"),
    _c4475("escnull", "3.1.1.4", "request", "Escaped Nulls in URIs"),
    _c4475("esc02", "3.1.1.5", "request", "Use of % When It Is Not an Escape"),
    _c4475("lwsdisp", "3.1.1.6", "request", "Message with No LWS between Display Name and <"),
    _c4475("longreq", "3.1.1.7", "request", "Long Values in Header Fields"),
    _c4475("dblreq", "3.1.1.8", "request", "Extra Trailing Octets in a UDP Datagram"),
    _c4475("semiuri", "3.1.1.9", "request", "Semicolon-Separated Parameters in URI User Part"),
    _c4475("transports", "3.1.1.10", "request", "Varied and Unknown Transport Types"),
    _c4475("mpart01", "3.1.1.11", "request", "Multipart MIME Message"),
    _c4475("unreason", "3.1.1.12", "response", "Unusual Reason Phrase"),
    _c4475("noreason", "3.1.1.13", "response", "Empty Reason Phrase"),
    # RFC 4475 3.1.2: parser tests, invalid messages.
    _c4475("badinv01", "3.1.2.1", "request", "Extraneous Header Field Separators"),
    _c4475("clerr", "3.1.2.2", "request", "Content Length Larger Than Message"),
    _c4475("ncl", "3.1.2.3", "request", "Negative Content-Length"),
    _c4475("scalar02", "3.1.2.4", "request", "Request Scalar Fields with Overlarge Values"),
    _c4475("scalarlg", "3.1.2.5", "response", "Response Scalar Fields with Overlarge Values"),
    _c4475("quotbal", "3.1.2.6", "request", "Unterminated Quoted String in Display Name"),
    _c4475("ltgtruri", "3.1.2.7", "request", "<> Enclosing Request-URI"),
    _c4475("lwsruri", "3.1.2.8", "request", "Malformed SIP Request-URI (embedded LWS)"),
    _c4475("lwsstart", "3.1.2.9", "request", "Multiple SP Separating Request-Line Elements"),
    _c4475("trws", "3.1.2.10", "request", "SP Characters at End of Request-Line"),
    _c4475("escruri", "3.1.2.11", "request", "Escaped Headers in SIP Request-URI"),
    _c4475("baddate", "3.1.2.12", "request", "Invalid Time Zone in Date Header Field"),
    _c4475("regbadct", "3.1.2.13", "request", "Failure to Enclose name-addr URI in <>"),
    _c4475("badaspec", "3.1.2.14", "request", "Spaces within addr-spec"),
    _c4475("baddn", "3.1.2.15", "request", "Non-token Characters in Display Name"),
    _c4475("badvers", "3.1.2.16", "request", "Unknown Protocol Version"),
    _c4475("mismatch01", "3.1.2.17", "request", "Start Line and CSeq Method Mismatch"),
    _c4475("mismatch02", "3.1.2.18", "request", "Unknown Method with CSeq Method Mismatch"),
    _c4475("bigcode", "3.1.2.19", "response", "Overlarge Response Code"),
    # RFC 4475 3.2: transaction layer semantics.
    _c4475("badbranch", "3.2.1", "request", "Missing Transaction Identifier"),
    # RFC 4475 3.3: application-layer semantics.
    _c4475("insuf", "3.3.1", "request", "Missing Required Header Fields"),
    _c4475("unkscm", "3.3.2", "request", "Request-URI with Unknown Scheme"),
    _c4475("novelsc", "3.3.3", "request", "Request-URI with Known but Atypical Scheme"),
    _c4475("unksm2", "3.3.4", "request", "Unknown URI Schemes in Header Fields"),
    _c4475("bext01", "3.3.5", "request", "Proxy-Require and Require"),
    _c4475("invut", "3.3.6", "request", "Unknown Content-Type"),
    _c4475("regaut01", "3.3.7", "request", "Unknown Authorization Scheme"),
    _c4475("multi01", "3.3.8", "request", "Multiple Values in Single Value Required Fields"),
    _c4475("mcl01", "3.3.9", "request", "Multiple Content-Length Values"),
    _c4475("bcast", "3.3.10", "response", "200 OK Response with Broadcast Via Header Field Value"),
    _c4475("zeromf", "3.3.11", "request", "Max-Forwards of Zero"),
    _c4475("cparam01", "3.3.12", "request", "REGISTER with a Contact Header Parameter"),
    _c4475("cparam02", "3.3.13", "request", "REGISTER with a url-parameter"),
    _c4475("regescrt", "3.3.14", "request", "REGISTER with a URL Escaped Header"),
    _c4475("sdp01", "3.3.15", "request", "Unacceptable Accept Offering"),
    # RFC 4475 3.4: backward compatibility.
    _c4475("inv2543", "3.4.1", "request", "INVITE with RFC 2543 Syntax"),
    # RFC 5118 section 4: ten sections, twelve messages (4.5 and 4.10 hold a pair each).
    _c5118("ipv6-good", "4.1", "request", "Valid SIP Message with an IPv6 Reference"),
    _c5118("ipv6-bad", "4.2", "request", "Invalid SIP Message with an IPv6 Reference"),
    _c5118("port-ambiguous", "4.3", "request", "Port Ambiguous in a SIP URI"),
    _c5118("port-unambiguous", "4.4", "request", "Port Unambiguous in a SIP URI"),
    _c5118(
        "via-received-param-with-delim",
        "4.5",
        "request",
        "IPv6 Reference Delimiters in Via Header",
    ),
    _c5118(
        "via-received-param-no-delim",
        "4.5",
        "request",
        "IPv6 Reference Delimiters in Via Header",
    ),
    _c5118(
        "ipv6-in-sdp",
        "4.6",
        "request",
        "SIP Request with IPv6 Addresses in Session Description Protocol (SDP) Body",
    ),
    _c5118("mult-ip-in-header", "4.7", "request", "Multiple IP Addresses in SIP Headers"),
    _c5118("mult-ip-in-sdp", "4.8", "request", "Multiple IP Addresses in SDP"),
    _c5118("ipv4-mapped-ipv6", "4.9", "request", "IPv4-Mapped IPv6 Addresses"),
    _c5118("ipv6-bug-abnf-3-colons", "4.10", "request", "IPv6 Reference Bug in RFC 3261 ABNF"),
    _c5118(
        "ipv6-correct-abnf-2-colons",
        "4.10",
        "request",
        "IPv6 Reference Bug in RFC 3261 ABNF",
    ),
)

_BY_NAME: dict[str, TortureCase] = {case.name: case for case in CASES}


def by_name(name: str) -> TortureCase:
    """Return the case the RFCs call `name` (e.g. "wsinv", "ipv6-good").

    Raises `KeyError` for a name that is not in either corpus.
    """
    return _BY_NAME[name]


def load(case: TortureCase | str) -> bytes:
    """Return the message's bytes exactly as stored, with no normalisation at all."""
    if isinstance(case, str):
        case = by_name(case)
    return case.path.read_bytes()


def to_wire(data: bytes) -> bytes:
    """Frame LF-terminated message bytes as SIP expects: CRLF line ends, closed header.

    Meant for the RFC 5118 files, whose archive uses bare LF throughout. Every LF not
    already preceded by CR becomes CRLF, and if no empty line ends the header section
    (RFC 5118's two section 4.10 files) one is appended. Nothing else changes, so a
    Content-Length that was wrong in the RFC (RFC 5118's ipv6-in-sdp declares 268 for
    a body that is 251 octets once CRLF-framed; mult-ip-in-sdp declares 181 for 189)
    stays wrong. Bytes that already use CRLF throughout, as every RFC 4475 file but
    mpart01's binary body does, should be passed to a parser as loaded instead.
    """
    out = bytearray()
    previous = 0
    for byte in data:
        if byte == 0x0A and previous != 0x0D:
            out.append(0x0D)
        out.append(byte)
        previous = byte
    if b"\r\n\r\n" not in out:
        out += b"\r\n"
    return bytes(out)
