"""Where estimates leave: the ``Sink`` interface (``base``), the terminal dashboard, JSON lines.

The WebSocket fan-out sink (``Hub``) lives with the server that owns its connections
(``streamer.server.hub``).
"""
