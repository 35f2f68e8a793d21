"""``make bench-zoo``: every public verb on a zoo of real-world models (issue 18).

Models (``--models``, default all): torchvision resnet50, mobilenet_v3_small, efficientnet_b0, a
small ViT, swin_t (random weights: no internet; BatchNorm statistics re-estimated on real
Fashion-MNIST images), a user-style Conv1d + GRU + Linear sequence model, a model whose forward
takes a dict, all-MiniLM-L6-v2 (transformers, offline) and a small CNN trained here on an
ImageFolder tree of real Fashion-MNIST PNGs read through ``torchslim.sources.resolve_data``.

Steps, through torchslim's public API only: quantize (seed dynamic, dynamic INT8, static INT8,
FP16, BF16), prune (global magnitude 0.2, structured 0.3, 2:4), export_onnx, save/load_checkpoint,
evaluate with a user metric, finetune (3 steps, distilling from the input model) and compress with
every curated recipe in ``recipes/``. Each step's outcome is ``works``, ``refused`` (a
``TorchSlimError``: the message is recorded) or ``raw_exception`` (anything else: a bug; the type,
first line and innermost torchslim frame are recorded). The static INT8 rows carry torch.ao FX
static INT8 (x86 qconfig mapping, same calibration batches) as ``reference_rel_error``.

One subprocess per model (``--worker NAME``) so memory is returned and a crash or a hang costs one
model; rows are saved after every model.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
import torch.nn as nn
import torch.nn.functional as F

from _common import RESULTS, setup, write_results

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("resnet50", "mobilenet_v3_small", "efficientnet_b0", "vit_small", "swin_t", "seq_gru", "dict_input",
          "minilm", "folder_cnn")  # fmt: skip
CNNS = ("resnet50", "mobilenet_v3_small", "efficientnet_b0", "folder_cnn")
RES = 64  # torchvision CNN / Swin / ViT input resolution (see NOTES)
BATCH = 8
N_CALIB = 4  # calibration / BN / training batches of 8
N_HELD = 2  # held-back batches of 8 for rel_error
LAT_RUNS = 5
RECIPES = sorted(p.name for p in (ROOT / "recipes").glob("*.yaml"))
RECIPE_OVERRIDES = ["*.max_steps=3", "latency_runs=2", f"calibration_samples={N_CALIB * BATCH}"]
VIT = dict(image_size=RES, patch_size=16, num_layers=6, num_heads=6, hidden_dim=384, mlp_dim=1536, num_classes=1000)
COLUMNS = ["model", "step", "outcome", "rel_error", "reference_rel_error", "reload_identical", "macs_ratio",
           "speedup_b8", "seconds", "detail", "error"]  # fmt: skip


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- user-style models
class SeqNet(nn.Module):
    """A user's sequence classifier: Conv1d feature extractor, GRU, Linear head.

    Input ``[B, 28, T]`` (28 features per time step; here an image's pixel columns as a sequence).
    """

    def __init__(self, features: int = 28, classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv1d(features, 32, kernel_size=3, padding=1)
        self.gru = nn.GRU(32, 64, batch_first=True)
        self.head = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv(x)).transpose(1, 2)
        out, _ = self.gru(h)
        return self.head(out[:, -1])


class DictNet(nn.Module):
    """A model whose forward takes one dict: ``{"image": [B,1,28,28], "aux": [B,4]}``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.aux = nn.Linear(4, 16)
        self.fc = nn.Linear(32 + 16, 10)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(batch["image"])))
        x = F.adaptive_avg_pool2d(F.relu(self.conv2(x)), 1).flatten(1)
        return self.fc(torch.cat([x, F.relu(self.aux(batch["aux"]))], dim=1))


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# ----------------------------------------------------------------------------- data
def fmnist(n: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    from torchslim.data import load_dataset

    d = load_dataset("fashion-mnist", "train")
    return d.images[offset : offset + n], d.labels[offset : offset + n]


def rgb(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=(RES, RES), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)


def batches(x: torch.Tensor, y: torch.Tensor, make: Callable[[torch.Tensor, torch.Tensor], Any]) -> list[Any]:
    return [make(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(y), BATCH)]


def top1(out: Any, target: torch.Tensor) -> torch.Tensor:
    """The user metric for classifiers: top-1 agreement with the labels."""
    from torchslim.data.protocol import output_tensor

    return (output_tensor(out).argmax(-1) == target).float().mean()


def ce_loss(out: Any, target: torch.Tensor) -> torch.Tensor:
    from torchslim.data.protocol import output_tensor

    return F.cross_entropy(output_tensor(out), target)


def mean_pool(out: Any, mask: torch.Tensor | None = None) -> torch.Tensor:
    from torchslim.data.protocol import output_tensor

    h = output_tensor(out)
    return h.mean(1)


def emb_cosine(out: Any, target: torch.Tensor) -> torch.Tensor:
    """The user metric for the encoder: cosine of the mean-pooled output to the FP32 embedding."""
    return F.cosine_similarity(mean_pool(out), target, dim=-1).mean()


def emb_loss(out: Any, target: torch.Tensor) -> torch.Tensor:
    return 1.0 - emb_cosine(out, target)


@dataclass
class Spec:
    name: str
    model: nn.Module
    calib: list[Any]  # batches (calibration, BN statistics, fine-tuning, recipes)
    held: list[Any]  # held-back batches for rel_error
    metric: Callable[..., Any] = top1
    loss_fn: Callable[..., Any] = ce_loss
    distill_loss: str = "kl"
    recipe_data: Any = None  # what compress(data=) gets; default: the calibration batches
    train_loader: Any = None  # what finetune gets; default: a DataLoader of the calibration batches
    notes: dict[str, Any] = field(default_factory=dict)


class ListLoader(torch.utils.data.DataLoader):
    """A DataLoader over pre-built batches (dicts included): batch_size=None yields them as they are."""

    def __init__(self, items: list[Any]) -> None:
        super().__init__(items, batch_size=None, shuffle=False)


@torch.no_grad()
def reestimate_bn(model: nn.Module, data: list[Any]) -> None:
    """Random weights: recompute BatchNorm running statistics on real images (cumulative average)."""
    from torchslim.data.protocol import default_input

    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for b in data:
        default_input(b, model)(model)
    for m in bns:
        m.momentum = 0.1
    model.eval()


def image_spec(name: str, model: nn.Module) -> Spec:
    x, y = fmnist((N_CALIB + N_HELD) * BATCH)
    x = rgb(x)
    all_b = batches(x, y, lambda a, b: (a, b))
    calib, held = all_b[:N_CALIB], all_b[N_CALIB:]
    reestimate_bn(model, calib)
    return Spec(name, model.eval(), calib, held)


def build(name: str, tmp: Path) -> Spec:
    import torchvision

    torch.manual_seed(0)
    if name in ("resnet50", "mobilenet_v3_small", "efficientnet_b0", "swin_t"):
        return image_spec(name, getattr(torchvision.models, name)(weights=None))
    if name == "vit_small":
        vit = torchvision.models.VisionTransformer(**VIT)
        nn.init.normal_(vit.heads.head.weight, std=0.02)  # torchvision zero-initializes the head: all outputs 0
        return image_spec(name, vit)
    if name == "seq_gru":
        x, y = fmnist((N_CALIB + N_HELD) * BATCH)
        b = batches(x[:, 0].transpose(1, 2).contiguous(), y, lambda a, c: (a, c))
        return Spec(name, SeqNet().eval(), b[:N_CALIB], b[N_CALIB:])
    if name == "dict_input":
        x, y = fmnist((N_CALIB + N_HELD) * BATCH)
        aux = torch.randn(len(y), 4, generator=torch.Generator().manual_seed(0))
        b = [{"image": x[i : i + BATCH], "aux": aux[i : i + BATCH], "label": y[i : i + BATCH]} for i in range(0, len(y), BATCH)]
        model = DictNet()
        reestimate_bn(model, b[:N_CALIB])
        return Spec(name, model.eval(), b[:N_CALIB], b[N_CALIB:])
    if name == "minilm":
        return minilm_spec()
    if name == "folder_cnn":
        return folder_spec(tmp)
    raise SystemExit(f"unknown model {name}; choose from {MODELS}")


def minilm_spec() -> Spec:
    from torchslim.models.transformers import minilm_dir
    from torchslim.transformers.corpus import load_sentences
    from transformers import AutoModel, AutoTokenizer

    folder = minilm_dir()
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    sents = load_sentences((N_CALIB + N_HELD) * BATCH)
    out = []
    for i in range(0, len(sents), BATCH):
        enc = dict(tok(sents[i : i + BATCH], padding="max_length", truncation=True, max_length=32, return_tensors="pt"))
        with torch.no_grad():
            enc["labels"] = mean_pool(model(**enc)).detach()  # the FP32 embedding: the metric's / loss's target
        out.append(enc)
    return Spec("minilm", model, out[:N_CALIB], out[N_CALIB:], metric=emb_cosine, loss_fn=emb_loss, distill_loss="mse",
                notes={"sentences": len(sents), "max_length": 32})  # fmt: skip


def folder_spec(tmp: Path) -> Spec:
    """Write real Fashion-MNIST PNGs as an ImageFolder tree, train a small CNN on it (1 epoch)."""
    from PIL import Image

    from torchslim.data import load_dataset
    from torchslim.sources import resolve_data

    per_class = 200
    d = load_dataset("fashion-mnist", "train")
    root = tmp / "fmnist_folder"
    raw = ((d.images[:, 0] * d.images.new_tensor(0.3530) + 0.2860).clamp(0, 1) * 255).round().to(torch.uint8)
    counts = [0] * 10
    for i in range(len(d.labels)):
        c = int(d.labels[i])
        if counts[c] >= per_class:
            continue
        (root / f"class_{c}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(raw[i].numpy(), mode="L").save(root / f"class_{c}" / f"{i}.png")
        counts[c] += 1
        if min(counts) >= per_class:
            break
    train = resolve_data(str(root), "train")
    test = resolve_data(str(root), "test")
    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    t0 = time.perf_counter()
    model.train()
    for _ in range(2):
        for xb, yb in train:
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in test) / len(test.dataset)
    calib = [(xb[:BATCH], yb[:BATCH]) for xb, yb in list(train)[:N_CALIB]]
    held = []
    for xb, yb in test:
        held += [(xb[i : i + BATCH], yb[i : i + BATCH]) for i in range(0, len(yb), BATCH)]
    held = held[:N_HELD]
    return Spec("folder_cnn", model, calib, held, recipe_data=str(root), train_loader=train,
                notes={"images": sum(counts), "train_epochs": 2, "train_s": round(time.perf_counter() - t0, 1),
                       "test_accuracy": round(100 * acc, 2), "folder_pixels": "28x28 grayscale PNG"})  # fmt: skip


# ----------------------------------------------------------------------------- helpers
def fwd(model: nn.Module, batch: Any) -> torch.Tensor:
    from torchslim.data.protocol import default_input, output_tensor

    with torch.no_grad():
        return output_tensor(default_input(batch, model)(model)).float()


def rel_error(ref: list[torch.Tensor], model: nn.Module, held: list[Any]) -> float:
    out = [fwd(model, b) for b in held]
    num = sum(float((o - r).pow(2).sum()) for o, r in zip(out, ref, strict=True))
    den = sum(float(r.pow(2).sum()) for r in ref)
    return round(math.sqrt(num / den), 6) if den > 0 else None


def example_of(model: nn.Module, batch: Any) -> Any:
    from torchslim.data.protocol import default_input

    return default_input(batch, model).example()


def reload_identical(model: nn.Module, original: nn.Module, held: list[Any], tmp: Path, tag: str) -> bool:
    import torchslim

    path = tmp / f"{tag}.safetensors"
    torchslim.save_checkpoint(model, path)
    back, _ = torchslim.load_checkpoint(path, model=original)
    return all(torch.equal(fwd(model, b), fwd(back, b)) for b in held)


def innermost_torchslim_frame(tb: Any) -> str | None:
    """The innermost torchslim frame, and the torchslim call the benchmark made when they differ."""
    frames = [f for f in traceback.extract_tb(tb) if "/torchslim/" in f.filename.replace("\\", "/")]
    if not frames:
        return None
    inner, entry = (f"{f.filename.split('src/')[-1]}:{f.lineno} in {f.name}" for f in (frames[-1], frames[0]))
    return inner if inner == entry else f"{inner} (called from {entry})"


class _Skip(Exception):
    pass


class Runner:
    def __init__(self, spec: Spec, tmp: Path, out: Path) -> None:
        self.spec, self.tmp, self.out = spec, tmp, out
        self.rows: list[dict[str, Any]] = json.loads(out.read_text()) if out.is_file() and out.stat().st_size else []
        self.ref = [fwd(spec.model, b) for b in spec.held]
        self.example = example_of(spec.model, spec.held[0])

    @contextmanager
    def step(self, step: str) -> Iterator[dict[str, Any]]:
        """Run one step and record its row; a step already recorded (a restarted worker) is skipped."""
        row: dict[str, Any] = {"model": self.spec.name, "step": step, "outcome": "works"}
        if any(r["step"] == step for r in self.rows):
            row["_skip"] = True
        else:
            Path(f"{self.out}.current").write_text(step)  # the driver names this step if the process dies
        t0 = time.perf_counter()
        try:
            yield row
        except _Skip:
            return
        except Exception as exc:  # noqa: BLE001 - every failure is recorded and classified
            from torchslim.errors import TorchSlimError

            first = (str(exc).strip().splitlines() or [""])[0]
            if isinstance(exc, TorchSlimError):
                row["outcome"], row["error"] = "refused", f"{type(exc).__name__}: {exc}"
            else:
                row["outcome"] = "raw_exception"
                row["error"] = f"{type(exc).__name__}: {first[:400]}"
                row["torchslim_frame"] = innermost_torchslim_frame(exc.__traceback__)
                row["traceback_tail"] = "".join(traceback.format_exception(exc)[-6:])[-2000:]
        row["seconds"] = round(time.perf_counter() - t0, 2)
        self.rows.append(row)
        self.out.write_text(json.dumps(self.rows, default=str))  # a crash later keeps what was measured
        log(f"{self.spec.name} {step}: {row['outcome']} {row.get('error', '')[:200]}")

    @staticmethod
    def go(row: dict[str, Any]) -> None:
        if row.get("_skip"):
            raise _Skip

    def measure(self, row: dict[str, Any], model: nn.Module, tag: str, *, timed: bool = True) -> None:
        from torchslim.measure import compare_latency

        row["rel_error"] = rel_error(self.ref, model, self.spec.held)
        try:
            row["reload_identical"] = reload_identical(model, self.spec.model, self.spec.held, self.tmp, tag)
        except Exception as exc:  # the transform worked; the checkpoint did not: record both
            from torchslim.errors import TorchSlimError

            row["reload_identical"] = None
            row["checkpoint_error"] = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"
            if not isinstance(exc, TorchSlimError):
                row["outcome"] = "raw_exception"
                row["error"] = f"(checkpoint) {row['checkpoint_error']}"
                row["torchslim_frame"] = innermost_torchslim_frame(exc.__traceback__)
                row["traceback_tail"] = "".join(traceback.format_exception(exc)[-6:])[-2000:]
        if timed:
            ex = self.example if isinstance(self.example, (torch.Tensor, dict)) else tuple(self.example)
            a, b, ratio = compare_latency(self.spec.model, model, ex, runs=LAT_RUNS, warmup=1)
            row["speedup_b8"] = round(ratio, 3)
            row["latency_ms_b8"], row["fp32_latency_ms_b8"] = round(b.median_ms, 2), round(a.median_ms, 2)

    # ------------------------------------------------------------------ steps
    def run(self) -> list[dict[str, Any]]:
        import torchslim
        from torchslim.pruning import MagnitudeConfig, NMConfig, StructuredConfig
        from torchslim.quantization import (
            BF16Config,
            DynamicInt8Config,
            FP16Config,
            SeedDynamicConfig,
            StaticInt8Config,
        )

        s = self.spec
        with self.step("evaluate fp32 (user metric)") as row:
            self.go(row)
            r = torchslim.evaluate(s.model, s.held, metric=s.metric, batch_sizes=(BATCH,), latency_runs=2)
            row["detail"] = {k: r.get(k) for k in ("value", "params", "macs", "size_bytes") if k in r}
            row["model_notes"] = s.notes or None
            row["src_state"] = src_state()
        with self.step("checkpoint fp32") as row:
            self.go(row)
            row["reload_identical"] = reload_identical(s.model, s.model, s.held, self.tmp, "fp32")
        quants = [("quantize seed_dynamic", SeedDynamicConfig()), ("quantize int8_dynamic", DynamicInt8Config()),
                  ("quantize int8_static", StaticInt8Config()), ("quantize fp16", FP16Config()),
                  ("quantize bf16", BF16Config())]  # fmt: skip
        static_model = None
        for step, cfg in quants:
            with self.step(step) as row:
                self.go(row)
                q, rep = torchslim.quantize(s.model, cfg, calib_data=ListLoader(s.calib))
                row["detail"] = {"layers": _actions(rep)}
                if step.endswith("static"):
                    static_model = q
                    self.fx_reference(row)
                self.measure(row, q, step.split()[-1])
        prunes = [("prune magnitude global 0.2", MagnitudeConfig(amount=0.2, scope="global")),
                  ("prune structured 0.3", StructuredConfig(ratio=0.3)), ("prune nm 2:4", NMConfig(n=2, m=4))]  # fmt: skip
        for step, cfg in prunes:
            with self.step(step) as row:
                self.go(row)
                p, rep = torchslim.prune(s.model, cfg, calib_data=ListLoader(s.calib))
                row["detail"] = {"layers": _actions(rep), "skipped": len(getattr(rep, "skipped", []) or [])}
                if "structured" in step:
                    before, after = rep.summary.get("macs_before"), rep.summary.get("macs_after")
                    row["macs_ratio"] = round(before / after, 3) if before and after else None
                self.measure(row, p, step.split()[1])
        with self.step("export_onnx fp32 (ORT check)") as row:
            self.go(row)
            r = torchslim.export_onnx(s.model, self.tmp / "fp32.onnx", example=self.example, force=True)
            row["detail"] = {"max_abs_diff": r.max_abs_diff, "inputs": r.inputs}
            row["ort_ran"] = r.max_abs_diff is not None
        if static_model is not None:
            with self.step("export_onnx int8_static (ORT check)") as row:
                self.go(row)
                r = torchslim.export_onnx(static_model, self.tmp / "int8.onnx", example=self.example, force=True)
                row["detail"] = {"max_abs_diff": r.max_abs_diff, "quantized_layers": len(r.quantized_layers)}
                row["ort_ran"] = r.max_abs_diff is not None
        with self.step("evaluate user metric (held-back)") as row:
            self.go(row)
            r = torchslim.evaluate(s.model, ListLoader(s.held), metric=s.metric, batch_sizes=(BATCH,), latency_runs=2)
            row["detail"] = {"value": r.get("value"), "metric": r.get("metric")}
        with self.step("finetune 3 steps, teacher=model") as row:
            self.go(row)
            from torchslim.recovery import FinetuneConfig
            from torchslim.training import DistillConfig

            cfg = FinetuneConfig(max_steps=3, epochs=1, batch_size=BATCH, lr=1e-3, augment=False,
                                 distill=DistillConfig(loss=s.distill_loss))  # fmt: skip
            train = s.train_loader if s.train_loader is not None else ListLoader(s.calib)
            m, res = torchslim.finetune(s.model, cfg, teacher=s.model, train_data=train, val_data=ListLoader(s.held),
                                        loss_fn=s.loss_fn, metric=s.metric, quiet=True)  # fmt: skip
            row["detail"] = {"steps": getattr(res.train, "steps", None), "epochs_run": res.train.epochs_run}
            self.measure(row, m, "finetuned", timed=False)
        data = s.recipe_data if s.recipe_data is not None else ListLoader(s.calib)
        for recipe in RECIPES:
            with self.step(f"compress {recipe}") as row:
                self.go(row)
                path = ROOT / "recipes" / recipe
                # `*.max_steps` is an error on a recipe with no training run, so it is set only where one is
                trains = "epochs" in path.read_text()
                overrides = RECIPE_OVERRIDES if trains else [o for o in RECIPE_OVERRIDES if "max_steps" not in o]
                row["overrides"] = overrides
                r = torchslim.compress(s.model, path, data=data, metric=s.metric, overrides=overrides, quiet=True)
                row["detail"] = {"stages": [st.get("name") for st in r.stages]}
                self.measure(row, r.model, "recipe_" + recipe.split(".")[0])
        return self.rows

    def fx_reference(self, row: dict[str, Any]) -> None:
        """torch.ao FX static INT8 (x86) on the same calibration batches: the error to match."""
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        s = self.spec
        try:
            torch.backends.quantized.engine = "x86"
            ex = self.example
            args = (ex,) if isinstance(ex, (torch.Tensor, dict)) else tuple(ex)
            if isinstance(ex, dict) and not isinstance(s.model, DictNet):
                raise TypeError("keyword-argument model")
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                p = prepare_fx(copy.deepcopy(s.model).eval(), get_default_qconfig_mapping("x86"), example_inputs=args)
                with torch.no_grad():
                    for b in s.calib:
                        p(*args_of(s.model, b))
                ref = convert_fx(p)
                with torch.no_grad():
                    outs = [ref(*args_of(s.model, b)).float() for b in s.held]
                num = sum(float((o - r).pow(2).sum()) for o, r in zip(outs, self.ref, strict=True))
                den = sum(float(r.pow(2).sum()) for r in self.ref)
                row["reference_rel_error"] = round(math.sqrt(num / den), 6)
        except Exception as exc:  # noqa: BLE001 - the reference is optional; why it is missing is recorded
            row["reference_rel_error"] = None
            row["reference_error"] = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"


def args_of(model: nn.Module, batch: Any) -> tuple[Any, ...]:
    from torchslim.data.protocol import default_input

    inp = default_input(batch, model)
    return inp.args


def _actions(rep: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in getattr(rep, "layers", []) or []:
        out[e.action] = out.get(e.action, 0) + 1
    return out


# ----------------------------------------------------------------------------- driver
def src_state() -> dict[str, Any]:
    """The commit and the uncommitted src/ files this model ran against (others edit src/ concurrently)."""

    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = [ln[3:] for ln in git("status", "--porcelain", "src").splitlines()]
    return {"git_head": git("rev-parse", "--short", "HEAD"), "src_uncommitted": dirty}


WORKER_MEMORY_GB = 12


def worker(name: str, out: Path) -> int:
    import resource

    # A step that runs away with memory raises MemoryError (a recorded row with its traceback) instead
    # of calling the OOM killer on a shared machine.
    limit = WORKER_MEMORY_GB << 30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    setup()
    with tempfile.TemporaryDirectory(prefix=f"zoo_{name}_") as d:
        t0 = time.perf_counter()
        spec = build(name, Path(d))
        log(f"{name}: built in {time.perf_counter() - t0:.1f}s")
        Runner(spec, Path(d), out).run()
    return 0


NOTES = (
    f"Random torchvision weights (no internet); BatchNorm statistics re-estimated on {N_CALIB * BATCH} real "
    f"Fashion-MNIST training images bilinearly upsampled to {RES}x{RES} and repeated to 3 channels (so CNNs, Swin "
    f"and the ViT run at {RES}x{RES}, not 224). vit_small = torchvision.models.VisionTransformer(image_size={RES}, "
    "patch_size=16, num_layers=6, num_heads=6, hidden_dim=384, mlp_dim=1536), head re-initialized N(0, 0.02) because torchvision zero-initializes it (vit_b_16 at 224 is too slow for the "
    "budget on 2 shared cores). Batch 8; calibration / fine-tuning / recipe data: 4 batches; rel_error = "
    "||out - FP32 out|| / ||FP32 out|| on 2 held-back batches (for minilm the last hidden state at max_length 32; "
    "for fine-tuned and recipe rows it measures drift, not quantization error). reference_rel_error: torch.ao FX "
    "static INT8 (get_default_qconfig_mapping('x86'), same calibration batches). speedup_b8 = FP32 median / model "
    f"median, interleaved (compare_latency, {LAT_RUNS} runs). reload_identical: save_checkpoint + "
    "load_checkpoint(model=FP32 model) gives torch.equal outputs. Recipes run with --set "
    f"{' '.join(RECIPE_OVERRIDES)} (max_steps only where the recipe trains). folder_cnn: trained 2 epochs on 2,000 real Fashion-MNIST PNGs written as an "
    "ImageFolder tree (resolve_data splits 80/10/10); compress gets the folder path. outcome: works / refused "
    "(a TorchSlimError: message in error) / raw_exception (a bug: type, first line, innermost torchslim frame)."
)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    raw = [r for r in rows if r["outcome"] == "raw_exception"]
    static = {}
    for r in rows:
        if r["model"] in CNNS and r["step"] == "quantize int8_static":
            ok = r.get("rel_error") is not None and r.get("reference_rel_error") is not None and r["rel_error"] <= r["reference_rel_error"]
            static[r["model"]] = {"rel_error": r.get("rel_error"), "reference_rel_error": r.get("reference_rel_error"), "met": ok}
    onnx = {r["model"]: r.get("ort_ran", False) and r["outcome"] == "works" for r in rows
            if r["model"] in ("vit_small", "swin_t") and r["step"] == "export_onnx fp32 (ORT check)"}  # fmt: skip
    ckpt = [r for r in rows if "reload_identical" in r]
    not_identical = [f"{r['model']}: {r['step']}" for r in ckpt if r["reload_identical"] is not True]
    return {
        "raw_exceptions": len(raw),
        "refused": sum(r["outcome"] == "refused" for r in rows),
        "works": sum(r["outcome"] == "works" for r in rows),
        "static_int8_le_reference_on_cnns": static,
        "static_int8_le_reference_all": bool(static) and all(v["met"] for v in static.values()),
        "vit_swin_onnx_ran_in_ort": onnx,
        "checkpoints_reloaded": sum(r["reload_identical"] is True for r in ckpt),
        "checkpoints_tried": len(ckpt),
        "checkpoints_not_identical": not_identical,
        "every_checkpoint_reloaded_identically": not not_identical,
    }


def cpu_info() -> dict[str, Any]:
    model, flags = None, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model is None:
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    keep = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "fma", "f16c")
    return {"cpu_model": model, "cpu_flags": [f for f in keep if f in flags], "cores": os.cpu_count()}


def save(rows: list[dict[str, Any]], models_run: list[str], wall: dict[str, float]) -> dict[str, Any]:
    path = RESULTS / "zoo.json"
    old = json.loads(path.read_text()).get("rows", []) if path.is_file() else []
    kept = [r for r in old if r["model"] not in models_run]
    order = {m: i for i, m in enumerate(MODELS)}
    merged = sorted(kept + rows, key=lambda r: order.get(r["model"], 99))
    summary = summarize(merged)
    write_results("zoo", merged, notes=NOTES, columns=COLUMNS,
                  extra={**cpu_info(), "summary": summary, "model_wall_s": wall, "resolution": RES, "batch": BATCH,
                         "vit_small": VIT})  # fmt: skip
    _append_md_summary(summary)
    return summary


def _append_md_summary(summary: dict[str, Any]) -> None:
    md = RESULTS / "zoo.md"
    text = md.read_text()
    lines = ["", "## Summary", ""] + [f"- {k}: {json.dumps(v, default=str)}" for k, v in summary.items()]
    md.write_text(text + "\n".join(lines) + "\n")


def run_model(name: str, out: Path, timeout: float, restarts: int = 3) -> list[dict[str, Any]]:
    """Run a model's worker; if the process dies in a step, record that step as a raw exception and
    restart it after that step (rows already measured are kept)."""
    deadline = time.monotonic() + timeout
    current = Path(f"{out}.current")
    for attempt in range(restarts + 1):
        left = deadline - time.monotonic()
        if left <= 5:
            rc: int | str = f"model time budget of {timeout}s spent"
        else:
            try:
                proc = subprocess.run([sys.executable, __file__, "--worker", name, "--out", str(out)], timeout=left,
                                      cwd=ROOT)  # fmt: skip
                rc = proc.returncode
            except subprocess.TimeoutExpired:
                rc = f"timeout (model budget {timeout}s)"
        got = json.loads(out.read_text()) if out.is_file() and out.stat().st_size else []
        if rc == 0:
            break
        step = current.read_text() if current.is_file() else "build"
        if any(r["step"] == step for r in got):  # died between steps
            step = f"after {step}"
        why = f"signal {-rc}" if isinstance(rc, int) and rc < 0 else f"exit code {rc}" if isinstance(rc, int) else rc
        got.append({"model": name, "step": step, "outcome": "raw_exception",
                    "error": f"worker process died during this step ({why}); see the run's stderr"})  # fmt: skip
        out.write_text(json.dumps(got, default=str))
        if not isinstance(rc, int) or step == "build":
            log(f"{name}: worker stopped in {step!r} ({why}); the model's remaining steps are not run")
            break
        log(f"{name}: worker died in {step!r} ({why}); restarting after it (attempt {attempt + 1})")
    current.unlink(missing_ok=True)
    out.unlink(missing_ok=True)
    return got


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {MODELS}")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per model process")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker, Path(args.out))
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; choose from {MODELS}")
    rows: list[dict[str, Any]] = []
    wall: dict[str, float] = {}
    summary: dict[str, Any] = {}
    for name in models:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            out = Path(f.name)
        t0 = time.perf_counter()
        log(f"== {name}")
        got = run_model(name, out, args.timeout)
        wall[name] = round(time.perf_counter() - t0, 1)
        rows += got
        summary = save(rows, models[: models.index(name) + 1], wall)
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
