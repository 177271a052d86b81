"""The registrar: SIP phones register their Contact with dialswitch.

pjsua2 drops incoming REGISTER requests, so the SIP edge answers them itself. The
modules here are the pure parts, with no sockets and no clock reads (every
decision takes ``now``):

- ``contact``: Contact header values (RFC 3261 section 20.10, RFC 5626 flow params);
- ``digest``: Digest challenges and verification (RFC 3261 section 22, RFC 7616,
  RFC 8760);
- ``bindings``: the location service's binding table (RFC 3261 section 10.3);
- ``throttle``: per-source authentication failure blocking and REGISTER rate limits.
"""
