"""Structured pruning for BERT-like encoders: whole attention heads and FFN neurons.

(Wanda, unstructured or 2:4, is :class:`torchslim.pruning.WandaConfig`, which works on any model
and leaves padding tokens out of its input norms when the batches carry an ``attention_mask``.)

* :func:`prune_heads_and_neurons` -- removes attention heads and FFN neurons physically: the
  query/key/value rows of a head and the matching output-projection columns are cut out, as are
  an FFN neuron's row in the first Linear and column in the second, so the model gets smaller
  and faster. transformers 5 dropped ``prune_heads``; BERT's attention reshapes with ``-1``
  heads, so shrinking the Linear layers is all it takes.

Head importance is the energy a head sends through the output projection on calibration
sentences, ``||X_h W_o[:, h]^T||^2``; a neuron's is ``||X_j||^2 * ||W_out[:, j]||^2``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn as nn

from torchslim.errors import CompatibilityError, ConfigError, DataError
from torchslim.layer_report import Report
from torchslim.pruning.config import HeadPruningConfig
from torchslim.quantization.calibrate import (
    CalibrationBatch,
    feed,
    finite_rows,
    transformer_blocks,
)


# ----------------------------------------------------------------------------- structured
def _bert_parts(block: nn.Module) -> dict[str, nn.Module]:
    try:
        att = block.attention
        return {
            "self": att.self, "q": att.self.query, "k": att.self.key, "v": att.self.value,
            "o": att.output.dense, "up": block.intermediate.dense, "down": block.output.dense,
        }  # fmt: skip
    except AttributeError as exc:
        raise CompatibilityError(
            f"structured pruning knows BERT-style blocks (attention.self.query/key/value, attention.output.dense, "
            f"intermediate.dense, output.dense); {type(block).__name__} differs ({exc})"
        ) from exc


def _shrink(lin: nn.Linear, *, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
    w = lin.weight.detach()
    b = lin.bias.detach() if lin.bias is not None else None
    if rows is not None:
        w = w[rows]
        b = b[rows] if b is not None else None
    if cols is not None:
        w = w[:, cols]
    new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
    return new


@torch.no_grad()
def prune_heads_and_neurons(
    model: nn.Module, calibration: Sequence[CalibrationBatch], config: HeadPruningConfig
) -> tuple[nn.Module, Report]:
    """A copy of ``model`` with the least important heads and FFN neurons removed.

    >>> from torchslim.transformers.testing import tiny_bert, tiny_tokenizer
    >>> from torchslim.transformers import calibration_batches
    >>> cal = calibration_batches(tiny_tokenizer(), ["a sample sentence", "another one"])
    >>> p, rep = prune_heads_and_neurons(tiny_bert(), cal, HeadPruningConfig(head_fraction=0.5, ffn_fraction=0.25))
    >>> p.encoder.layer[0].attention.self.query.out_features, p.encoder.layer[0].intermediate.dense.out_features
    (16, 48)
    """
    if config.head_fraction == 0 and config.ffn_fraction == 0:
        raise ConfigError("HeadPruningConfig: head_fraction and ffn_fraction are both 0; nothing to prune")
    if not calibration:
        raise DataError("structured pruning needs calibration sentences to rank heads and neurons")
    model = copy.deepcopy(model).eval()
    blocks_name, blocks = transformer_blocks(model)
    parts = [_bert_parts(b) for b in blocks]
    ctx: dict[str, torch.Tensor] = {}
    keep_mask: dict[str, torch.Tensor | None] = {"mask": None}
    head_size: list[int] = []
    hooks = []
    for i, p in enumerate(parts):
        hs = int(p["self"].attention_head_size)
        head_size.append(hs)
        o, down = p["o"], p["down"]

        def o_hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], i: int = i, hs: int = hs) -> None:
            x = finite_rows(inp[0], keep_mask["mask"])  # [tokens, heads * hs]
            w = mod.weight  # [hidden, heads * hs]
            heads = x.shape[1] // hs
            e = torch.stack([(x[:, h * hs : (h + 1) * hs] @ w[:, h * hs : (h + 1) * hs].T).pow(2).sum() for h in range(heads)])
            ctx[f"h{i}"] = ctx[f"h{i}"] + e if f"h{i}" in ctx else e

        def d_hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], i: int = i) -> None:
            x = finite_rows(inp[0], keep_mask["mask"])
            e = (x * x).sum(0) * mod.weight.pow(2).sum(0)
            ctx[f"f{i}"] = ctx[f"f{i}"] + e if f"f{i}" in ctx else e

        hooks += [o.register_forward_pre_hook(o_hook), down.register_forward_pre_hook(d_hook)]
    feed(model, calibration, hooks, keep_mask)
    report = Report("prune", "structured-heads-ffn")
    before_params = sum(p.numel() for p in model.parameters())
    for i, (blk, p) in enumerate(zip(blocks, parts, strict=True)):
        prefix = f"{blocks_name}.{i}"
        hs = head_size[i]
        if config.head_fraction > 0:
            imp = ctx[f"h{i}"].clone()
            heads = imp.numel()
            n_drop = min(int(round(heads * config.head_fraction)), heads - 1)  # a layer keeps >= 1 head
            keep = torch.sort(imp.argsort(descending=True)[: heads - n_drop]).values
            cols = torch.cat([torch.arange(h * hs, (h + 1) * hs) for h in keep.tolist()])
            att = blk.attention
            att.self.query = _shrink(p["q"], rows=cols)
            att.self.key = _shrink(p["k"], rows=cols)
            att.self.value = _shrink(p["v"], rows=cols)
            att.output.dense = _shrink(p["o"], cols=cols)
            att.self.num_attention_heads = len(keep)
            att.self.all_head_size = len(keep) * hs
            dropped = sorted(set(range(heads)) - set(keep.tolist()))
            report.add(f"{prefix}.attention", "attention", "pruned", f"removed heads {dropped}",
                       before={"heads": heads}, after={"heads": len(keep)})  # fmt: skip
        if config.ffn_fraction > 0:
            imp = ctx[f"f{i}"]
            n = imp.numel()
            n_keep = max(1, n - int(round(n * config.ffn_fraction)))
            keep = torch.sort(imp.argsort(descending=True)[:n_keep]).values
            blk.intermediate.dense = _shrink(p["up"], rows=keep)
            blk.output.dense = _shrink(p["down"], cols=keep)
            report.add(f"{prefix}.ffn", "ffn", "pruned", f"removed {n - n_keep} of {n} neurons",
                       before={"neurons": n}, after={"neurons": n_keep})  # fmt: skip
    after_params = sum(p.numel() for p in model.parameters())
    report.summary.update(params_before=before_params, params_after=after_params)
    return model, report


