"""The WebSocket edge: protocol (wire format), limits, access (token, Origin), ingest (one /ingest
connection), hub (estimates fanned out to connections), app (``EmoServer``: handshake, routing)."""
