"""SIP over WebSocket (RFC 7118) for browsers: framing (pure) and the edge (I/O)."""
