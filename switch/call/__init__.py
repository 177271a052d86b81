"""The call domain, free of pjsua2, aiohttp, lxml and aiortc.

- ``events``: what a leg tells its owner (frozen, past tense);
- ``leg``: the leg state machine, one transition table;
- ``status``: the one vocabulary of CallStatus values and release codes;
- ``protocol``: the ``Leg`` and ``MediaEngine`` the call path is typed against;
- ``fork``: the decisions of one ``<Dial>`` over its branches, with its deadlines;
- ``commands``: what the REST API asks of a live call;
- ``actor``: one actor per call, and the registry CallSid -> actor.

A test (tests/unit/test_call_purity.py) keeps the imports honest.
"""
