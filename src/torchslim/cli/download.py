"""``torchslim download fashion-mnist --data-dir DIR``: the online path (needs internet).

Tests and benchmarks never call it; offline machines use Debian's dataset-fashion-mnist.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("download", help="download Fashion-MNIST from its published URLs (needs internet)")
    p.add_argument("dataset", choices=["fashion-mnist"])
    p.add_argument("--data-dir", required=True, help="folder to write the four .gz files into")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from torchslim.data.fashion_mnist import download, load_arrays

    d = download(args.data_dir)
    arrays = load_arrays(d)
    print(f"Fashion-MNIST in {d}: {len(arrays['train_labels'])} train, {len(arrays['test_labels'])} test images (MD5 ok)")
    return 0
