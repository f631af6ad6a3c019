"""The ``embq`` command.

Each subcommand lives in its own ``embq/_cmd_*.py`` module with ``register(subparsers)``; this
module only builds the parser and turns expected failures into one clear line on stderr and a
non-zero exit code (2 for bad input, 130 for Ctrl-C), never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from embq._version import __version__

_COMMAND_MODULES = (
    "embq._cmd_compress",
    "embq._cmd_export",
    "embq._cmd_info",
    "embq._cmd_query",
    "embq._cmd_evaluate",
)

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class CommandError(Exception):
    """A failure a subcommand has already described for the user; printed as is, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embq",
        description="Compress embedding files 4x into HDF5 stores and search them fast.",
    )
    parser.add_argument("--version", action="version", version=f"embq {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``embq`` command line; return the exit code."""
    from embq.errors import FormatError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("embq: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `embq query ... | head` closing the pipe early is not an error.
        try:
            sys.stdout = None  # type: ignore[assignment]
        finally:
            return 0
    except (CommandError, FormatError, KeyError, ValueError, OSError, IndexError, ImportError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
            msg = f"{exc.filename}: {exc.strerror}"
        print(f"embq {args.command}: error: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
