"""emostream: real-time streaming speech emotion recognition.

The one import namespace of the project: ``emostream.models`` (features, architectures, model
files), ``emostream.streamer`` (the streaming runtime), ``emostream.train`` and
``emostream.benchmarks``. In a source checkout these are symlinks to the top-level folders.
"""
