"""The runtime: wires the core for many streams around one model worker (two threads: VAD + log-mel, then model).

config (settings, defaults = the CLI's) -> runtime (``Runtime``: open streams, sinks) -> stream
(per-stream state, the caller's ``StreamHandle``) -> worker (the thread) -> batch (the handler:
VAD, features, model, publication). silero loads the VAD model file.
"""
