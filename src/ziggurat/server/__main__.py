"""``python -m ziggurat.server [MODEL_OR_DIR ...] [flags]``: the same as ``ziggurat serve``."""

from __future__ import annotations

import argparse
import sys

from ziggurat.server.cli import add_parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ziggurat.server")
    sub = parser.add_subparsers(dest="command")
    add_parser(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "serve":
        argv.insert(0, "serve")
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
