"""``torchslim export MODEL OUT.onnx``: ONNX export checked in ONNX Runtime against PyTorch.

MODEL is a torchslim checkpoint (``.safetensors``; quantized layers become QDQ / integer ops),
a registered model name (random init), or a Hugging Face model folder (``config.json`` +
weights). The largest output difference between ONNX Runtime and PyTorch is printed; with
``--max-abs-diff`` a larger one is an error and nothing is written.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model to ONNX and check it in ONNX Runtime")
    p.add_argument("model", help="a .safetensors checkpoint, a model name, or a Hugging Face model folder")
    p.add_argument("out", help="output .onnx file")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17; 21 when INT4 group-wise layers are present)")
    p.add_argument("--max-abs-diff", type=float, default=None, help="fail if ONNX Runtime differs from PyTorch by more")
    p.add_argument("--tokens", type=_tokens, default=16, help="sequence length of the example input for text models (1 to 8192)")
    p.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime comparison")
    p.add_argument("--force", action="store_true", help="replace OUT (and the --json file) if it exists")
    p.add_argument("--json", dest="json_out", default=None, help="also write the export report to this JSON file")
    p.set_defaults(func=run)


def _tokens(text: str) -> int:
    """``--tokens``: 1 to 8192 (0 made an empty example; a huge one allocates it all)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= n <= 8192:
        raise argparse.ArgumentTypeError(f"{n} tokens: give 1 to 8192")
    return n


def _load(spec: str) -> tuple[Any, str | None]:
    path = Path(spec)
    if path.is_dir() and (path / "config.json").is_file():
        from torchslim.transformers.loading import load_encoder

        model, _ = load_encoder(path, tokenizer=False)
        return model, None
    from torchslim.cli._common import load_model_arg

    model, meta = load_model_arg(spec)
    return model, meta.get("architecture", {}).get("name")


def run(args: argparse.Namespace) -> int:
    import torch

    from torchslim.cli._common import print_table, side_out
    from torchslim.errors import OutputExistsError
    from torchslim.export import ExportConfig, export_onnx
    from torchslim.export.onnx import quant_specs
    from torchslim.io import write_json

    out = Path(args.out)
    if out.exists() and not args.force:  # before loading anything
        raise OutputExistsError(f"{out} already exists; choose another output or pass --force to replace it")
    if Path(args.model).exists() and out.resolve() == Path(args.model).resolve():
        raise OutputExistsError(f"{out} is the input model; choose another output")
    json_out = side_out(args.json_out, args.force, inputs=[args.model, args.out])
    model, arch = _load(args.model)
    example = None
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "vocab_size"):
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, int(cfg.vocab_size), (2, args.tokens), generator=g)
        example = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    opset = args.opset
    if opset is None:
        opset = 21 if any(s.scale.dim() == 2 for s in quant_specs(model).values()) else 17
    config = ExportConfig(opset=opset, check=not args.no_check, max_abs_diff=args.max_abs_diff)
    res = export_onnx(model, out, example=example, config=config, architecture=arch, force=args.force)
    n_q = sum(v != "not in graph" for v in res.quantized_layers.values())
    print_table(f"exported {args.model} -> {out}", ["metric", "value"], [
        ["file size (bytes)", res.size_bytes], ["opset", opset], ["quantized layers", n_q],
        ["max |ORT - PyTorch|", "not checked" if res.max_abs_diff is None else res.max_abs_diff],
    ])  # fmt: skip
    for w in res.warnings:
        print(f"warning: {w}")
    if json_out is not None:
        write_json(json_out, res.as_dict())
    return 0
