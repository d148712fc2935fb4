"""SkyGate entry points: the ``skygate`` command (and, later, the HTTP API)."""
