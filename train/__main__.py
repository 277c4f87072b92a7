"""`python -m train train ...` / `python -m train evaluate ...`: the same subcommands as `emostream`."""

from __future__ import annotations

import argparse
import sys

from emostream.train.cli import register_evaluate, register_train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train", description="Train or evaluate an emostream model."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    register_train(sub)
    register_evaluate(sub)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
