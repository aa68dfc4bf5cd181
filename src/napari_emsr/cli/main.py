"""``emsr``'s entry point: parse, run the command, turn every refusal into a message and exit code 2."""

from __future__ import annotations

import importlib
import logging
import sys

from ..errors import EMSRError
from ..outputs import OutputClaims
from .parser import build_parser


def main(argv: list[str] | None = None) -> int:
    """Run ``emsr`` with ``argv`` (default: the process's arguments); returns the exit code (0, 2 on bad input,
    130 when interrupted)."""
    import signal

    if hasattr(signal, "SIGXFSZ"):  # a file-size limit ends in our clear error (EFBIG), not a killed process
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    command = importlib.import_module(f"{__package__}.commands.{args.command}")
    try:
        with OutputClaims() as claims:  # every output's lock, taken at the command's start, to its end
            args._claims = claims
            return int(command.run(args) or 0)
    except EMSRError as exc:
        print(f"emsr {args.command}: error: {exc}", file=sys.stderr)
        if getattr(args, "json", False):  # a script reading stdout gets the refusal too, not an empty string
            import json

            print(json.dumps({"command": args.command, "error": str(exc), "exit_code": 2}), flush=True)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def entry(argv: list[str] | None = None) -> int:
    """The ``emsr`` executable: :func:`main`, and once the command has returned, Ctrl-C ignored for the rest of
    the process (the interpreter's shutdown joins worker threads: an interrupt there would end a finished command
    with a traceback and a killed-by-signal status instead of its own exit code)."""
    import signal

    code = main(argv)
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to do
        pass
    return code
