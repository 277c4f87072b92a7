"""Real-time streaming side, one folder per layer: sources -> runtime (over the I/O-free core) -> sinks; server; cli."""
