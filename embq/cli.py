"""The ``embq`` command.

Each subcommand lives in its own ``embq/_cmd_*.py`` module with ``register(subparsers)``; this
module only builds the parser and turns expected failures into one clear line on stderr and a
non-zero exit code (2 for bad input, 130 for Ctrl-C, 128 + N for a termination signal N such
as SIGTERM or SIGHUP), never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from embq._version import __version__

_COMMAND_MODULES = (
    "embq._cmd_compress",
    "embq._cmd_export",
    "embq._cmd_info",
    "embq._cmd_query",
    "embq._cmd_evaluate",
    "embq._cmd_shard",
    "embq._cmd_merge",
)

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class CommandError(Exception):
    """A failure a subcommand has already described for the user; printed as is, exit code 2."""


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process gets SIGTERM or SIGHUP.

    A ``KeyboardInterrupt`` so that everything that cleans up after Ctrl-C (the store and
    export writers remove their temporary files and leave the output untouched) does the
    same for ``kill`` or a closed terminal, instead of the default action of those signals,
    which ends the process on the spot and leaves the temporary files behind.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_TERMINATING = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP")
                     if hasattr(signal, name))


def _terminate(signum: int, frame: Any) -> None:
    # The first signal starts the clean abort; further ones (and Ctrl-C) must not interrupt
    # the cleanup it runs, so they are ignored from here on.
    for sig in (*_TERMINATING, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    raise Terminated(signum)


def _install_signal_handlers() -> dict[int, Any]:
    """Route SIGTERM/SIGHUP to :func:`_terminate`; return the handlers replaced."""
    if threading.current_thread() is not threading.main_thread():
        return {}  # signal handlers can only be set from the main thread
    previous = {}
    for sig in _TERMINATING:
        if signal.getsignal(sig) == signal.SIG_IGN:
            continue  # started under nohup or similar: keep ignoring it
        previous[sig] = signal.signal(sig, _terminate)
    previous[signal.SIGINT] = signal.getsignal(signal.SIGINT)
    return previous


def _restore_signal_handlers(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


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
    from embq._errors import FormatError, OutputExistsError

    parser = build_parser()
    args = parser.parse_args(argv)
    previous: dict[int, Any] = {}
    try:
        previous = _install_signal_handlers()
        return int(args.func(args) or 0)
    except Terminated as exc:
        print(f"embq: terminated by {signal.Signals(exc.signum).name}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("embq: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `embq query ... | head` closing the pipe early is not an error. Point stdout at
        # /dev/null so the interpreter's final flush does not fail on the closed pipe again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0
    except (CommandError, FormatError, KeyError, ValueError, OSError, IndexError,
            ImportError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        if isinstance(exc, OutputExistsError):
            # The library says overwrite=True; here the same advice is a flag.
            msg = f"{exc.path}: {exc.reason}; pass --overwrite to replace it"
        elif isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
            msg = f"{exc.filename}: {exc.strerror}"
        print(f"embq {args.command}: error: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        _restore_signal_handlers(previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
