"""Real-time streaming side: I/O-free core primitives, sources, sinks and the pipeline that wires them."""
