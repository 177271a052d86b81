"""Every example document of the Twilio <Dial>/<Number>/<Client> and RestComm
<Client> pages parses into the expected verbs.

The documents were copied by hand from the pages. Two were fixed on the way, as
the pages show rendered text rather than the XML: the raw ``&`` in SIP URI and
client header queries is written ``&amp;``, and RestComm's typographic quotes
around ``true`` are plain quotes. The raw forms are checked to fail with 12100.
"""

from __future__ import annotations

import pytest

from switch.rcml import (
    CallEvent,
    Client,
    Dial,
    Method,
    Number,
    Parameter,
    RcmlError,
    RecordMode,
    Say,
    Sip,
    parse,
)

ALL_EVENTS = frozenset(CallEvent)

SEEDS: dict[str, tuple[str, tuple[object, ...], list[int]]] = {
    "twilio-client-parameters": (
        """<?xml version="1.0" encoding="UTF-8"?>
<Response>
<Dial>
<Client>
<Identity>user_jane</Identity>
<Parameter name="FirstName" value ="Jane"/>
<Parameter name="LastName" value ="Doe" />
</Client>
</Dial>
</Response>""",
        (
            Dial(
                targets=(
                    Client(
                        identity="user_jane",
                        parameters=(Parameter("FirstName", "Jane"), Parameter("LastName", "Doe")),
                    ),
                )
            ),
        ),
        [],
    ),
    "twilio-client-joey": (
        """<?xml version="1.0" encoding="UTF-8"?>
<Response>
<Dial>
<Client>joey</Client>
</Dial>
</Response>""",
        (Dial(targets=(Client(identity="joey"),)),),
        [],
    ),
    "twilio-client-simultaneous": (
        """<?xml version="1.0" encoding="UTF-8"?>
<Response>
<Dial callerId="+1888XXXXXXX">
<Number>858-987-6543</Number>
<Client>joey</Client>
<Client>charlie</Client>
</Dial>
</Response>""",
        (
            Dial(
                caller_id="+1888XXXXXXX",
                targets=(
                    Number(number="858-987-6543"),
                    Client(identity="joey"),
                    Client(identity="charlie"),
                ),
            ),
        ),
        [],
    ),
    "twilio-client-progress-events": (
        """<?xml version="1.0" encoding="UTF-8"?>
<Response>
<Dial>
<Client
statusCallbackEvent='initiated ringing answered completed'
statusCallback='https://myapp.com/calls/events'
statusCallbackMethod='POST'>
joey
</Client>
</Dial>
</Response>""",
        (
            Dial(
                targets=(
                    Client(
                        identity="joey",
                        status_callback="https://myapp.com/calls/events",
                        status_callback_event=ALL_EVENTS,
                    ),
                )
            ),
        ),
        [],
    ),
    "twilio-dial-basic": (
        """<?xml version="1.0" encoding="UTF-8"?>
<Response>
<Dial>415-123-4567</Dial>
</Response>""",
        (Dial(targets=(Number(number="415-123-4567"),)),),
        [],
    ),
    "twilio-dial-then-say": (
        """<?xml version="1.0" encoding="UTF-8"?>
<Response>
<Dial>415-123-4567</Dial>
<Say>Goodbye</Say>
</Response>""",
        (Dial(targets=(Number(number="415-123-4567"),)), Say(text="Goodbye")),
        [],
    ),
    "twilio-dial-timeout-record": (
        """<?xml version="1.0" encoding="UTF-8"?>
<Response>
<Dial timeout="10" record="true">415-123-4567</Dial>
</Response>""",
        (
            Dial(
                timeout=10,
                record=RecordMode.RECORD_FROM_ANSWER,
                targets=(Number(number="415-123-4567"),),
            ),
        ),
        [],
    ),
    "twilio-dial-caller-id": (
        """<?xml version="1.0" encoding="UTF-8"?>
<Response>
<Dial callerId="+15551112222">
<Number>+15558675310</Number>
</Dial>
</Response>""",
        (Dial(caller_id="+15551112222", targets=(Number(number="+15558675310"),)),),
        [],
    ),
    "twilio-dial-action-get": (
        """<?xml version="1.0" encoding="UTF-8"?>
<!-- page located at http://example.com/dial_callstatus.xml -->
<Response>
<Dial action="/handleDialCallStatus" method="GET">
415-123-4567
</Dial>
<Say>I am unreachable</Say>
</Response>""",
        (
            Dial(
                action="/handleDialCallStatus",
                method=Method.GET,
                targets=(Number(number="415-123-4567"),),
            ),
            Say(text="I am unreachable"),
        ),
        [],
    ),
    "twilio-dial-record-dual": (
        """<?xml version="1.0" encoding="UTF-8"?>
<Response>
<Dial record="record-from-ringing-dual"
recordingStatusCallback="www.myexample.com">
<Number>+15558675310</Number>
</Dial>
</Response>""",
        (
            Dial(
                record=RecordMode.RECORD_FROM_RINGING_DUAL,
                recording_status_callback="www.myexample.com",
                targets=(Number(number="+15558675310"),),
            ),
        ),
        [],
    ),
    "twilio-dial-refer-sip": (
        """<Response>
<Dial referUrl="https://example.com/handler">
<Sip>sip:AgentA@xyz.sip.us1.twilio.com?User-to-User=123456789%3Bencoding%3Dhex&amp;X-Name=Agent%2C+A</Sip>
</Dial>
</Response>""",
        (
            Dial(
                refer_url="https://example.com/handler",
                targets=(
                    Sip(
                        uri="sip:AgentA@xyz.sip.us1.twilio.com"
                        "?User-to-User=123456789%3Bencoding%3Dhex&X-Name=Agent%2C+A"
                    ),
                ),
            ),
        ),
        [],
    ),
    "twilio-dial-number-noun": (
        """<?xml version="1.0" encoding="UTF-8"?>
<Response>
<Dial>
<Number>415-123-4567</Number>
</Dial>
</Response>""",
        (Dial(targets=(Number(number="415-123-4567"),)),),
        [],
    ),
    "twilio-dial-conference": (
        """<?xml version="1.0" encoding="UTF-8"?>
<Response>
<Dial record="record-from-ringing-dual"
recordingStatusCallback="www.myexample.com">
<Conference>myteamroom</Conference>
</Dial>
</Response>""",
        (
            Dial(
                record=RecordMode.RECORD_FROM_RINGING_DUAL,
                recording_status_callback="www.myexample.com",
            ),
        ),
        # <Conference> is not supported, which leaves the Dial with nothing to dial.
        [12200, 12200],
    ),
    "twilio-number-send-digits": (
        """<?xml version="1.0" encoding="UTF-8"?>
<Response>
<Dial>
<Number sendDigits="wwww1928">
415-123-4567
</Number>
</Dial>
</Response>""",
        (Dial(targets=(Number(number="415-123-4567", send_digits="wwww1928"),)),),
        [],
    ),
    "twilio-number-simultaneous": (
        """<?xml version="1.0" encoding="UTF-8"?>
<Response>
<Dial>
<Number>
858-987-6543
</Number>
<Number>
415-123-4567
</Number>
<Number>
619-765-4321
</Number>
</Dial>
</Response>""",
        (
            Dial(
                targets=(
                    Number(number="858-987-6543"),
                    Number(number="415-123-4567"),
                    Number(number="619-765-4321"),
                )
            ),
        ),
        [],
    ),
    "twilio-number-progress-events": (
        """<?xml version="1.0" encoding="UTF-8"?>
<Response>
<Dial>
<Number
statusCallbackEvent="initiated ringing answered completed"
statusCallback="https://myapp.com/calls/events"
statusCallbackMethod="POST">
+12349013030
</Number>
</Dial>
</Response>""",
        (
            Dial(
                targets=(
                    Number(
                        number="+12349013030",
                        status_callback="https://myapp.com/calls/events",
                        status_callback_event=ALL_EVENTS,
                    ),
                )
            ),
        ),
        [],
    ),
    "twilio-number-progress-events-two": (
        """<?xml version="1.0" encoding="UTF-8"?>
<Response>
<Dial>
<Number
statusCallbackEvent='initiated ringing answered completed'
statusCallback='https://myapp.com/calls/events'
statusCallbackMethod='POST'>
+14155555555
</Number>
<Number
statusCallbackEvent='initiated ringing answered completed'
statusCallback='https://example.com/events'
statusCallbackMethod='POST'>
+14153333333
</Number>
</Dial>
</Response>""",
        (
            Dial(
                targets=(
                    Number(
                        number="+14155555555",
                        status_callback="https://myapp.com/calls/events",
                        status_callback_event=ALL_EVENTS,
                    ),
                    Number(
                        number="+14153333333",
                        status_callback="https://example.com/events",
                        status_callback_event=ALL_EVENTS,
                    ),
                )
            ),
        ),
        [],
    ),
    "twilio-number-whisper-url": (
        """<?xml version="1.0" encoding="UTF-8"?>
<Response>
<Dial>
<Number url="http://example.com/agent_screen_call">415-123-4567</Number>
</Dial>
</Response>""",
        (
            Dial(
                targets=(Number(number="415-123-4567", url="http://example.com/agent_screen_call"),)
            ),
        ),
        [],
    ),
    "restcomm-client-alice": (
        """<?xml version="1.0" encoding="UTF-8"?>
<Response>
   <Dial>
     <Client>Alice</Client>
   </Dial>
</Response>""",
        (Dial(targets=(Client(identity="Alice"),)),),
        [],
    ),
    "restcomm-client-simultaneous": (
        """<?xml version="1.0" encoding="UTF-8"?>
<Response>
  <Dial callerId="+19898XXXXXXX">
        <Number>123-321-4321</Number>
       <Client>jenny</Client>
       <Client>tommy</Client>
  </Dial>
</Response>""",
        (
            Dial(
                caller_id="+19898XXXXXXX",
                targets=(
                    Number(number="123-321-4321"),
                    Client(identity="jenny"),
                    Client(identity="tommy"),
                ),
            ),
        ),
        [],
    ),
    "restcomm-client-progress-events": (
        """<?xml version="1.0" encoding="UTF-8"?>
<Response>
<Dial>
        <Client
             statusCallbackEvent='initiated ringing answered completed'
             statusCallback='https://myapp.com/calls/events'
             statusCallbackMethod='POST'>
                                        thomas
         </Client>
</Dial>
</Response>""",
        (
            Dial(
                targets=(
                    Client(
                        identity="thomas",
                        status_callback="https://myapp.com/calls/events",
                        status_callback_event=ALL_EVENTS,
                    ),
                )
            ),
        ),
        [],
    ),
    "restcomm-client-video": (
        """<?xml version="1.0" encoding="UTF-8"?>
<Response>
    <Dial>
\t    <Client name="alice">
\t        <Video enable="true">
    \t    </Video>
\t    </Client>
    </Dial>
</Response>""",
        (Dial(targets=(Client(identity="alice"),)),),
        [12200],  # <Video> is not supported; the name attribute still dials alice.
    ),
    "restcomm-client-body-only": (
        "<Response><Dial><Client>alice</Client></Dial></Response>",
        (Dial(targets=(Client(identity="alice"),)),),
        [],
    ),
    "restcomm-client-headers": (
        "<Response><Dial>"
        "<Client>alice?X-Custom-Header1=1234&amp;X-Custom-Header2=4321</Client>"
        "</Dial></Response>",
        (
            Dial(
                targets=(
                    Client(
                        identity="alice",
                        sip_headers=(("X-Custom-Header1", "1234"), ("X-Custom-Header2", "4321")),
                    ),
                )
            ),
        ),
        [],
    ),
}


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_example_parses(name: str) -> None:
    xml, verbs, codes = SEEDS[name]
    document = parse(xml.encode("utf-8"))
    assert document.verbs == verbs
    assert document.codes() == codes


@pytest.mark.parametrize(
    "raw",
    [
        # As rendered on the Twilio <Dial> page: a bare "&" is not XML.
        "<Response><Dial><Sip>sip:a@b.example?X-A=1&X-B=2</Sip></Dial></Response>",
        # As rendered on the RestComm <Client> page: typographic quotes.
        "<Response><Dial><Client name='alice'><Video enable=\u201dtrue\u201d/></Client>"
        "</Dial></Response>",
    ],
)
def test_seed_examples_as_rendered_are_not_well_formed(raw: str) -> None:
    with pytest.raises(RcmlError) as caught:
        parse(raw)
    assert caught.value.code == 12100
