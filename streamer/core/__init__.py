"""The pure core of the data path: no I/O, no threads, no clock (times are passed in).

resample (input rate -> model rate, mono) -> ring (audio by absolute sample index) -> windower
(which windows are due) -> vad (speech gate state) / frames (incremental log-mel) -> batcher (which
windows go to the model together) -> classify (one model call) -> smoother -> events (what leaves).
"""
