"""The ``torchslim`` command line. Each subcommand mirrors one Python verb.

Subcommands live one per module in this package; every module that defines
``register(subparsers)`` is discovered, so a new verb is a new file. Errors that are
torchslim's own become a one-line message and exit code 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import warnings
from collections.abc import Sequence

from torchslim._version import __version__
from torchslim.errors import TorchSlimError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="torchslim", description="Compress trained PyTorch models, measured.")
    parser.add_argument("--version", action="version", version=f"torchslim {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(mod, "register"):
            mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
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
    except KeyboardInterrupt:
        print("torchslim: interrupted; nothing half-written was left behind", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
