"""The streamer's subcommands of ``emostream``, one module each: live, demo, replay, serve.

Each module's ``register_*`` adds one subparser (entry points ``emostream.commands`` in
pyproject.toml); each command returns its exit code: 0 ok, 1 a bad file / model / runtime error
(one clear line, no traceback), 2 no usable input device. ``options`` holds what they share.
"""
