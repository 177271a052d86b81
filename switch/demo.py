"""The built-in demo application behind ``voice_url = "demo:"``.

It makes the shipped configuration a small working platform: a call to one of
our numbers hears a greeting and then rings the first configured client (with
ringback) until it answers; a client's own call reaches another client
(``client:bob``) or one of our numbers (the same greeting and ring). Without
clients a number's call hears two sentences and is hung up.

Pure: the webhook's parameters in, an RCML document out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

RING_SECONDS = 30


@dataclass(frozen=True)
class DemoApp:
    numbers: frozenset[str]
    clients: Sequence[str]  # identities, in config order; the first is rung

    def document(self, params: Mapping[str, str]) -> str:
        caller = params.get("From", "")
        to = params.get("To", "")
        if caller.startswith("client:") and to.startswith("client:"):
            return self._dial_client(to.removeprefix("client:"), "")
        if caller.startswith("client:") and to not in self.numbers:
            return _response(
                "<Say>This demo connects its own number and its clients only. "
                "Dial the demo number, or client colon and a name.</Say>"
            )
        if not self.clients:
            return _response(
                "<Say>Welcome to dialswitch. This is the built-in demo application.</Say>"
                '<Pause length="1"/>'
                "<Say>Point this number's voice URL at your own app to take over. Goodbye.</Say>"
                "<Hangup/>"
            )
        target = self.clients[0]
        return self._dial_client(
            target, f"<Say>Welcome to dialswitch. Connecting you to {escape(target)}.</Say>"
        )

    def _dial_client(self, identity: str, greeting: str) -> str:
        if identity not in self.clients:
            return _response(f"<Say>There is no client called {escape(identity)}.</Say>")
        name = escape(identity)
        return _response(
            f'{greeting}<Dial timeout="{RING_SECONDS}"><Client>{name}</Client></Dial>'
            f"<Say>{name} did not answer. Goodbye.</Say>"
        )


def _response(body: str) -> str:
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<Response>{body}</Response>\n'
