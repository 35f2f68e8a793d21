"""The ``torchslim`` command line. Each subcommand mirrors one Python verb.

Subcommands live one per module in this package; every module that defines
``register(subparsers)`` is discovered, so a new verb is a new file. Errors that are
torchslim's own become a one-line message and exit code 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import signal
import sys
import threading
import warnings
from collections.abc import Sequence

from torchslim._version import __version__
from torchslim.errors import TorchSlimError

MAX_THREADS = 1024


def _threads(text: str) -> int:
    """``--threads``: a whole number from 1 to 1024 (torch refuses 0 and crashes on huge counts)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give 1 to {MAX_THREADS}") from None
    if not 1 <= n <= MAX_THREADS:
        raise argparse.ArgumentTypeError(f"{n} threads: give 1 to {MAX_THREADS} (this machine has {os.cpu_count()} CPUs)")
    return n


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is not a global option), if any."""
    it = iter(argv)
    for a in it:
        if a == "--threads":
            next(it, None)
        elif not a.startswith("-"):
            return a
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; given ``argv`` naming a subcommand, only that subcommand's module is imported
    (each one imports torch and its methods: registering all of them costs seconds per call)."""
    parser = argparse.ArgumentParser(prog="torchslim", description="Compress trained PyTorch models, measured.")
    parser.add_argument("--version", action="version", version=f"torchslim {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.add_argument("--threads", type=_threads, default=2, help=f"torch CPU threads, 1 to {MAX_THREADS} (default 2)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    names = _modules()
    wanted = _command(argv) if argv is not None else None
    if wanted in names and "-h" not in argv and "--help" not in argv:  # type: ignore[operator]
        names = [wanted]
    for name in names:
        mod = importlib.import_module(f"{__name__}.{name}")
        if hasattr(mod, "register"):
            mod.register(sub)
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that temporaries are removed on the way out."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    import torch

    from torchslim.cli._common import reset_claims

    reset_claims()
    torch.set_num_threads(args.threads)
    previous = signal.getsignal(signal.SIGTERM)
    with_handler = previous in (signal.SIG_DFL, None) and threading.current_thread() is threading.main_thread()
    if with_handler:
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with warnings.catch_warnings():
            if not args.debug:
                warnings.simplefilter("ignore", category=FutureWarning)
            rc = args.func(args)
        return int(rc or 0)
    except TorchSlimError as exc:
        if args.debug:
            raise
        print(f"torchslim: error: {exc}", file=sys.stderr)
        return 2
    except _Terminated:
        print("torchslim: terminated; nothing half-written was left behind", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("torchslim: interrupted; nothing half-written was left behind", file=sys.stderr)
        return 130
    finally:
        if with_handler:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
