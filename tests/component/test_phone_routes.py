"""The browser phone's routes on a real aiohttp server (switch.phone.add_phone_routes).

The page's files are copied into a temporary directory with a stand-in JsSIP bundle,
so these tests do not depend on ``make install`` having run ``npm ci``.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from switch.phone import (
    JSSIP_BUNDLE,
    PHONE_ASSETS,
    IceServer,
    PhoneConfig,
    WsListener,
    add_phone_routes,
)

BUNDLE_TEXT = "var JsSIP = {version: 'stand-in'};\n"
LISTENERS = (WsListener("ws", "0.0.0.0", 5066), WsListener("wss", "0.0.0.0", 5067))


def page_files(directory: Path, *, bundle: bool = True) -> Path:
    """The page's own files in ``directory``, and a stand-in bundle unless told not to."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("index.html", "phone.js", "phone.css", "package.json"):
        shutil.copy(PHONE_ASSETS / name, directory / name)
    if bundle:
        path = directory / JSSIP_BUNDLE
        path.parent.mkdir(parents=True)
        path.write_text(BUNDLE_TEXT)
        (path.parent.parent / "package.json").write_text('{"name": "jssip"}')
    return directory


async def client_for(config: PhoneConfig) -> TestClient[web.Request, web.Application]:
    app = web.Application()
    add_phone_routes(app, config)
    client = TestClient(TestServer(app, host="127.0.0.1", port=0))
    await client.start_server()
    return client


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    config = PhoneConfig(
        LISTENERS,
        "example.com",
        (IceServer(("stun:stun.example.com:3478",)),),
        assets=page_files(tmp_path / "phone"),
    )
    client = await client_for(config)
    yield client
    await client.close()


@pytest.mark.parametrize("path", ["/phone", "/phone/"])
async def test_page_is_served_with_its_security_headers(
    client: TestClient[web.Request, web.Application], path: str
) -> None:
    response = await client.get(path)
    assert response.status == 200
    assert response.content_type == "text/html"
    text = await response.text()
    for element in ('id="identity"', 'id="password"', 'id="login"', 'id="dial"', 'id="level"'):
        assert element in text
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "connect-src 'self' ws: wss:" in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_every_file_the_page_names_is_served(
    client: TestClient[web.Request, web.Application],
) -> None:
    text = await (await client.get("/phone")).text()
    names = re.findall(r'(?:src|href)="(/phone/[^"]+)"', text)
    assert "/phone/phone.js" in names and f"/phone/{JSSIP_BUNDLE}" in names
    expected = {".js": "text/javascript", ".css": "text/css"}
    for name in names:
        response = await client.get(name)
        assert response.status == 200, name
        assert response.content_type == expected[Path(name).suffix], name
    bundle = await client.get(f"/phone/{JSSIP_BUNDLE}")
    assert await bundle.text() == BUNDLE_TEXT


@pytest.mark.parametrize(
    "path",
    [
        "/phone/package.json",
        "/phone/index.html",
        "/phone/node_modules/jssip/package.json",
        "/phone/node_modules/jssip/dist/../package.json",
        "/phone/%2e%2e/phone.py",
        "/phone/nothing.js",
    ],
)
async def test_nothing_else_is_served(
    client: TestClient[web.Request, web.Application], path: str
) -> None:
    response = await client.get(path)
    assert response.status == 404


async def test_config_uses_the_host_the_page_was_requested_by(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.get("/phone/config.json", headers={"Host": "pbx.example.com:8080"})
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert await response.json() == {
        "domain": "example.com",
        "websocket_urls": ["wss://pbx.example.com:5067", "ws://pbx.example.com:5066"],
        "ice_servers": [{"urls": ["stun:stun.example.com:3478"]}],
    }


async def test_config_on_loopback_prefers_ws(
    client: TestClient[web.Request, web.Application],
) -> None:
    body = await (await client.get("/phone/config.json")).json()
    assert body["websocket_urls"] == ["ws://127.0.0.1:5066", "wss://127.0.0.1:5067"]


async def test_config_without_domain_or_listeners(tmp_path: Path) -> None:
    """No [sip] domain: the page's host is the domain; no ws: listener: no URL (the
    page then asks for a server)."""
    client = await client_for(PhoneConfig((), "", assets=page_files(tmp_path)))
    try:
        body = await (await client.get("/phone/config.json", headers={"Host": "[::1]:80"})).json()
    finally:
        await client.close()
    assert body == {"domain": "[::1]", "websocket_urls": [], "ice_servers": []}


async def test_without_npm_ci_the_page_says_to_run_make_install(tmp_path: Path) -> None:
    client = await client_for(
        PhoneConfig(LISTENERS, "example.com", assets=page_files(tmp_path, bundle=False))
    )
    try:
        page = await client.get("/phone")
        assert page.status == 503
        assert page.content_type == "text/html"
        assert "make install" in await page.text()
        bundle = await client.get(f"/phone/{JSSIP_BUNDLE}")
        assert bundle.status == 503
        assert "make install" in await bundle.text()
        assert (await client.get("/phone/phone.js")).status == 200
    finally:
        await client.close()
