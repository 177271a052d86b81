"""TLS towards phones: ``tls_verify_client`` and the protocol floor, against a raw
TLS client (Python's ``ssl``) that sends an OPTIONS once connected.

This module's switch has a ``tls:`` listener with ``tls_verify_client = true``
and the test CA as ``tls_ca``: a phone must present a certificate that CA
signed, over TLS 1.2 or later.
"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.integration.conftest import AppServer, TlsSwitch, running
from tests.support.certs import Issued, TestCa

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def switch_process(
    app_server: AppServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[TlsSwitch]:
    workdir = tmp_path_factory.mktemp("tls-clients")
    handle = TlsSwitch.create(workdir, app_server.base, sip="tls_verify_client = true\n")
    async with running(handle):
        yield handle


def client_context(ca: TestCa, own: Issued | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=ca.path)
    if own is not None:
        context.load_cert_chain(own.certificate, own.private_key)
    return context


async def options_over_tls(switch: TlsSwitch, context: ssl.SSLContext) -> tuple[str, str]:
    """(status line of the answer to an OPTIONS, TLS version); raises if TLS fails."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(
            "127.0.0.1", switch.tls_port, ssl=context, server_hostname="127.0.0.1"
        ),
        5,
    )
    try:
        local = writer.get_extra_info("sockname")
        tag, branch = uuid.uuid4().hex[:8], uuid.uuid4().hex[:12]
        request = (
            f"OPTIONS sip:127.0.0.1:{switch.tls_port};transport=tls SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS 127.0.0.1:{local[1]};branch=z9hG4bK{branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@127.0.0.1>;tag={tag}\r\n"
            f"To: <sip:127.0.0.1:{switch.tls_port}>\r\n"
            f"Call-ID: {uuid.uuid4().hex}@127.0.0.1\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        writer.write(request.encode())
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 5)
        version = writer.get_extra_info("ssl_object").version()
        return status.decode().strip(), version
    finally:
        writer.close()


async def test_a_phone_with_a_certificate_of_tls_ca_is_served(switch: TlsSwitch) -> None:
    own = switch.ca.issue("phone")
    status, version = await options_over_tls(switch, client_context(switch.ca, own))
    assert status == "SIP/2.0 200 OK", status
    assert version in ("TLSv1.2", "TLSv1.3")


async def refused(switch: TlsSwitch, context: ssl.SSLContext) -> bool:
    """Whether the switch ends the TLS handshake or the connection without serving."""
    try:
        status, _ = await options_over_tls(switch, context)
    except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError, TimeoutError):
        return True
    return not status


async def test_a_phone_without_a_certificate_is_refused(switch: TlsSwitch) -> None:
    assert await refused(switch, client_context(switch.ca, None))


async def test_a_certificate_of_another_ca_is_refused(switch: TlsSwitch) -> None:
    rogue = TestCa(switch.workdir / "rogue", "rogue CA").issue("phone")
    assert await refused(switch, client_context(switch.ca, rogue))


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
async def test_tls_1_1_is_refused(switch: TlsSwitch) -> None:
    """This client does TLS 1.1 with a server that allows it; ours does not."""
    context = client_context(switch.ca, switch.ca.issue("old-phone"))
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.1 at all
    assert await refused(switch, context)
