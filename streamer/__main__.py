"""``python -m streamer``: the ``emostream`` command (the same subcommands as the console script)."""

import sys

from emostream.models.cli import main

if __name__ == "__main__":
    sys.exit(main())
