"""``make reliability``: torchslim tried as a careless or hostile user would (issue 19).

Several hundred bad inputs go through the CLI (a subprocess per case, two at a time) and the Python
API (in this process), each in its own temporary folder. Every case is checked for:

* a typed refusal: exit code 2 and one ``torchslim: error: ...`` line (CLI) or an exception from
  :mod:`torchslim.errors` (API); a case that should fail but exits 0 is "silently accepted";
* no ``Traceback`` in the output (a raw exception);
* no file created, changed or deleted in the temporary folder beyond what the command was asked to
  write (the whole folder is hashed before and after);
* the caller's model unchanged (``state_dict`` and every module's training mode) for API cases;
* its wall time and peak RSS (``wait4`` for subprocesses; ``VmHWM`` after ``clear_refs`` in-process).

Categories: checkpoints, recipes, CLI arguments (numeric edges and output-path collisions), data,
faults (SIGKILL / SIGTERM mid-run, then a rerun), determinism (the same seed and command twice,
artifact bytes compared) and a soak (1,000 quantize / prune / evaluate calls in one process).
Pickle payloads would write a marker file if anything unpickled them.

Writes ``results/reliability.json`` (summary fields + one row per category + the failing cases)
and ``results/reliability.md``. ``--only cat1,cat2`` runs some categories (for development; the
committed results come from a full run).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gzip
import hashlib
import io
import json
import os
import pickle
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _common import setup, write_results

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / ".venv" / "bin" / "torchslim"
if not CLI.exists():
    CLI = Path(sys.executable).parent / "torchslim"
CATEGORIES = ("checkpoints", "recipes", "cli-args", "collisions", "data", "faults", "determinism", "soak")
MARKER = Path(tempfile.gettempdir()) / f"torchslim-reliability-pickle-ran-{os.getpid()}"
MAX_RSS_MB, MAX_WALL_S = 1500, 20.0
FIX_WORDS = re.compile(
    r"choose|pass|use |give|set |add |remove|install|save|retrain|re-?run|rename|delete|check|point|upgrade|put |"
    r"must|expected|should|try|lower|raise|increase|reduce|split|convert|fix|train|omit|need|one of|did you mean|"
    r"between|at least|at most|>=|<=|>|<|only|instead|allowed|corrupt|edit|expects|valid|make |write|clean|drop|"
    r"fields:|known types|move|list of|a recipe is|limit|mapping",
    re.I,
)
HYP = settings(max_examples=40, database=None, derandomize=True, deadline=None,
               suppress_health_check=list(HealthCheck))  # fmt: skip


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- bookkeeping
@dataclass
class Result:
    category: str
    surface: str  # cli | api
    case: str
    input: str
    expect: str  # error | ok | either
    outcome: str = ""  # typed_error | ok | raw_traceback | silently_accepted | bad_error
    message: str = ""
    problems: list[str] = field(default_factory=list)
    soft: list[str] = field(default_factory=list)  # the message names no fix (reported, not a target)
    wall_s: float = 0.0
    peak_rss_mb: float = 0.0


RESULTS: list[Result] = []
_LOCK = threading.Lock()


def record(r: Result) -> Result:
    if r.wall_s > MAX_WALL_S:
        r.problems.append(f"wall {r.wall_s:.1f} s > {MAX_WALL_S}")
    if r.peak_rss_mb > MAX_RSS_MB:
        r.problems.append(f"peak RSS {r.peak_rss_mb:.0f} MB > {MAX_RSS_MB}")
    with _LOCK:
        RESULTS.append(r)
    return r


def tree(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (hidden ones included): content hash for files, 'dir', link target."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            p = Path(dirpath, d)
            out[str(p.relative_to(root))] = f"link:{os.readlink(p)}" if p.is_symlink() else "dir"
        for f in filenames:
            p = Path(dirpath, f)
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = f"link:{os.readlink(p)}"
            else:
                h = hashlib.sha256()
                with open(p, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
                out[rel] = h.hexdigest()
    return out


def compare_trees(before: dict[str, str], after: dict[str, str], allowed: tuple[str, ...], r: Result) -> None:
    """Files lost or changed that were there before; files left that nobody asked for."""

    def ok(rel: str) -> bool:
        return any(rel == a or rel.startswith(a.rstrip("/") + "/") for a in allowed)

    for rel, h in before.items():
        if rel not in after:
            if not ok(rel):
                r.problems.append(f"file lost: {rel}")
        elif after[rel] != h and not ok(rel) and h != "dir":
            r.problems.append(f"file changed: {rel}")
    for rel in after:
        if rel not in before and not ok(rel):
            r.problems.append(f"leftover: {rel}")


def judge_message(r: Result) -> None:
    if r.outcome == "typed_error" and not FIX_WORDS.search(r.message):
        r.soft.append("message names no fix")


# ----------------------------------------------------------------------------- CLI cases
def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["COLUMNS"] = "160"
    return env


def spawn(args: list[str], cwd: Path, *, threads: bool = True) -> subprocess.Popen:
    cmd = [str(CLI), *(["--threads", "1"] if threads else []), *args]
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(),
                            start_new_session=True)  # fmt: skip


def reap(p: subprocess.Popen, timeout: float) -> tuple[int, str, float]:
    """(exit code, output, peak RSS MB) of ``p``, killed after ``timeout`` seconds."""
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.append(p.stdout.read()), daemon=True)
    reader.start()
    timer = threading.Timer(timeout, lambda: _killpg(p.pid, signal.SIGKILL))
    timer.start()
    try:
        _, status, ru = os.wait4(p.pid, 0)
    finally:
        timer.cancel()
    p.returncode = os.waitstatus_to_exitcode(status)
    reader.join(10)
    return p.returncode, b"".join(chunks).decode("utf-8", "replace"), ru.ru_maxrss / 1024


def _killpg(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def cli_case(category: str, name: str, args: list[str], *, setup_fn: Callable[[Path], None] | None = None,
             expect: str = "error", allowed: tuple[str, ...] = (), timeout: float = 120, threads: bool = True,
             check: Callable[[Path, Result], None] | None = None) -> Callable[[], Result]:  # fmt: skip
    """A deferred CLI case: runs ``torchslim ARGS`` in a fresh temporary folder prepared by ``setup_fn``."""

    def go() -> Result:
        r = Result(category, "cli", name, "torchslim " + " ".join(args), expect)
        with tempfile.TemporaryDirectory(prefix="rel-") as d:
            base = Path(d)
            work = base / "w"
            work.mkdir()
            if setup_fn:
                setup_fn(work)
            before = tree(base)
            t0 = time.perf_counter()
            rc, out, rss = reap(spawn(args, work, threads=threads), timeout)
            r.wall_s, r.peak_rss_mb = time.perf_counter() - t0, rss
            lines = [ln for ln in out.splitlines() if ln.strip()]
            err = [ln for ln in lines if re.match(r"^(usage: )?torchslim[\w -]*: error: ", ln)]
            r.message = err[-1] if err else (lines[-1] if lines else "")[:300]
            if "Traceback" in out or rc not in (0, 2):
                r.outcome = "raw_traceback"
                tb = [ln for ln in lines if re.match(r"^\w+(\.\w+)*(Error|Exception|Interrupt)\b", ln)]
                r.message = f"rc={rc}: " + (tb[-1] if tb else r.message)[:300]
                r.problems.append("raw traceback")
            elif rc == 2:
                r.outcome = "typed_error"
                if not err:
                    r.outcome = "bad_error"
                    r.problems.append("exit 2 without a 'torchslim: error:' line")
                elif lines[-1] != err[-1]:
                    r.problems.append("the error message spans several lines")
                if expect == "ok":
                    r.problems.append("refused a valid command")
            else:
                r.outcome = "ok"
                if expect == "error":
                    r.outcome = "silently_accepted"
                    r.problems.append("silently accepted")
            judge_message(r)
            # The tree is of the case's base folder; the command ran in w/ inside it.
            compare_trees(before, tree(base), tuple(f"w/{a}" for a in allowed) if r.outcome == "ok" else (), r)
            if check is not None and r.outcome == "ok":
                check(work, r)
        return record(r)

    go.category = category  # type: ignore[attr-defined]
    return go


def run_cli_cases(cases: list[Callable[[], Result]]) -> None:
    done = 0
    with ThreadPoolExecutor(max_workers=2) as pool:
        for r in pool.map(lambda c: c(), cases):
            done += 1
            if r.problems:
                log(f"  FAIL {r.category}/{r.case}: {r.outcome} {r.problems[:3]} {r.message[:160]}")
            if done % 25 == 0:
                log(f"  {done}/{len(cases)} CLI cases")


# ----------------------------------------------------------------------------- API cases
def _reset_peak() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_mb() -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def model_state(m: nn.Module) -> tuple[dict[str, torch.Tensor], list[bool]]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}, [x.training for x in m.modules()]


def same_state(m: nn.Module, snap: tuple[dict[str, torch.Tensor], list[bool]]) -> bool:
    sd, modes = snap
    now = m.state_dict()
    if set(now) != set(sd) or [x.training for x in m.modules()] != modes:
        return False
    return all(now[k].shape == v.shape and torch.equal(now[k], v) for k, v in sd.items())


def api_case(category: str, name: str, fn: Callable[[Path], Any], *, inp: str = "", expect: str = "error",
             models: tuple[nn.Module, ...] = (), setup_fn: Callable[[Path], None] | None = None,
             allowed: tuple[str, ...] = ()) -> Result:  # fmt: skip
    """Run ``fn(folder)`` in a fresh temporary folder (the working directory meanwhile)."""
    from torchslim.errors import TorchSlimError

    r = Result(category, "api", name, inp or name, expect)
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="rel-") as d:
        work = Path(d)
        if setup_fn:
            setup_fn(work)
        snaps = [model_state(m) for m in models]
        before = tree(work)
        _reset_peak()
        t0 = time.perf_counter()
        os.chdir(work)
        try:
            fn(work)
            r.outcome = "ok" if expect != "error" else "silently_accepted"
        except TorchSlimError as exc:
            r.outcome, r.message = "typed_error", str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            if "\n" in str(exc).strip():
                r.soft.append("message spans several lines")
            if expect == "ok":
                r.problems.append("refused a valid call")
        except (Exception, RecursionError, MemoryError) as exc:  # noqa: BLE001 -- what the battery looks for
            r.outcome, r.message = "raw_traceback", f"{type(exc).__name__}: {exc}"[:300]
            r.problems.append("raw traceback")
        finally:
            os.chdir(cwd)
        r.wall_s, r.peak_rss_mb = time.perf_counter() - t0, _peak_mb()
        if r.outcome == "silently_accepted":
            r.problems.append("silently accepted")
        judge_message(r)
        compare_trees(before, tree(work), allowed if r.outcome == "ok" else (), r)
        for m, s in zip(models, snaps, strict=True):
            if not same_state(m, s):
                r.problems.append("input model mutated (state_dict or training mode)")
    if r.problems:
        log(f"  FAIL {category}/{name}: {r.outcome} {r.problems[:3]} {r.message[:160]}")
    return record(r)


# ----------------------------------------------------------------------------- fixtures
FIX = Path(tempfile.mkdtemp(prefix="rel-fixtures-"))


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10))


def make_fixtures() -> None:
    from torchslim.checkpoint import save_checkpoint
    from torchslim.models import create_model

    torch.manual_seed(0)
    save_checkpoint(create_model("lenet300"), FIX / "model.safetensors", architecture="lenet300")
    (FIX / "model.json").unlink()
    (FIX / "recipe.yaml").write_text("name: r\ndataset: digits\nsteps:\n  - type: int8_dynamic\n")
    (FIX / "ft_recipe.yaml").write_text(
        "name: r\ndataset: digits\nsteps:\n  - type: magnitude\n    amount: 0.5\n"
        "  - type: finetune\n    epochs: 1\n    max_steps: 8\n    batch_size: 64\n  - type: int8_dynamic\n"
    )
    (FIX / "long_recipe.yaml").write_text(
        "name: r\ndataset: digits\nsteps:\n  - type: magnitude\n    amount: 0.5\n"
        "  - type: finetune\n    epochs: 40\n    batch_size: 32\n  - type: int8_dynamic\n"
    )


def put(work: Path, *names: str, dest: dict[str, str] | None = None) -> None:
    for n in names:
        shutil.copy(FIX / n, work / (dest or {}).get(n, n))


def st_bytes(tensors: dict[str, torch.Tensor], meta: Any, *, raw_meta: str | None = None) -> bytes:
    from safetensors.torch import save

    return save(tensors, metadata={"torchslim": raw_meta if raw_meta is not None else json.dumps(meta)})


def base_header() -> dict[str, Any]:
    raw = (FIX / "model.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(json.loads(raw[8 : 8 + n])["__metadata__"]["torchslim"])


def base_tensors() -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load((FIX / "model.safetensors").read_bytes())


class _Payload:
    """Unpickling this writes the marker file (nothing should ever unpickle it)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(MARKER), "w"))


def pickle_files(work: Path) -> None:
    blob = pickle.dumps({"state_dict": _Payload()})
    (work / "evil.pt").write_bytes(blob)
    (work / "evil.safetensors").write_bytes(blob)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", blob)
        z.writestr("archive/version", "3\n")
    (work / "evil_zip.safetensors").write_bytes(buf.getvalue())
    (work / "evil.pth").write_bytes(buf.getvalue())
    # A safetensors file whose metadata carries a pickle (as text) in the torchslim field.
    (work / "evil_meta.safetensors").write_bytes(st_bytes({"w": torch.zeros(1)}, None, raw_meta=blob.decode("latin-1")))


# ----------------------------------------------------------------------------- checkpoints
def lying_headers() -> dict[str, bytes]:
    """Handcrafted checkpoints whose headers lie, break the schema or hold non-finite weights."""
    h, t = base_header(), base_tensors()
    out: dict[str, bytes] = {}

    def variant(name: str, mutate: Callable[[dict[str, Any], dict[str, torch.Tensor]], None]) -> None:
        hh, tt = copy.deepcopy(h), dict(t)
        mutate(hh, tt)
        out[name] = st_bytes(tt, hh)

    out["meta-not-json"] = st_bytes(t, None, raw_meta="{not json")
    out["meta-empty"] = st_bytes(t, None, raw_meta="")
    out["meta-list"] = st_bytes(t, None, raw_meta="[1, 2]")
    out["meta-huge-int"] = st_bytes(t, None, raw_meta='{"format": "torchslim-checkpoint", "format_version": ' + "9" * 5000 + "}")
    out["meta-deep"] = st_bytes(t, None, raw_meta='{"format": "torchslim-checkpoint", "x": ' + "[" * 100000 + "]" * 100000 + "}")
    variant("format-version-abc", lambda hh, tt: hh.update(format_version="abc"))
    variant("format-version-0", lambda hh, tt: hh.update(format_version=0))
    variant("format-version-99", lambda hh, tt: hh.update(format_version=99))
    variant("format-version-float", lambda hh, tt: hh.update(format_version=1.5))
    variant("arch-list", lambda hh, tt: hh.update(architecture=["lenet300"]))
    variant("arch-unknown", lambda hh, tt: hh.update(architecture={"name": "lenet9000", "config": {}}))
    variant("arch-name-int", lambda hh, tt: hh.update(architecture={"name": 5, "config": {}}))
    variant("arch-config-bad", lambda hh, tt: hh.update(architecture={"name": "lenet300", "config": {"num_classes": -5}}))
    variant("arch-config-huge", lambda hh, tt: hh.update(architecture={"name": "lenet300", "config": {"num_classes": 10**12}}))
    variant("arch-config-unknown-kw", lambda hh, tt: hh.update(architecture={"name": "lenet300", "config": {"bogus": 1}}))
    variant("arch-none", lambda hh, tt: hh.update(architecture={"name": None, "config": {}}))
    variant("structure-no-kind", lambda hh, tt: hh.update(structure=[{"name": "fc1", "config": {}}]))
    variant("structure-not-list", lambda hh, tt: hh.update(structure={"fc1": 1}))
    variant("structure-unknown-kind", lambda hh, tt: hh.update(structure=[{"name": "fc1", "kind": "Nope", "config": {}}]))
    variant("structure-unknown-module", lambda hh, tt: hh.update(structure=[{"name": "zz.yy", "kind": "Linear",
                                                                             "config": {"in_features": 2, "out_features": 2}}]))  # fmt: skip
    variant("structure-linear-20000", lambda hh, tt: hh.update(structure=[{"name": "fc1", "kind": "Linear",
                                                                           "config": {"in_features": 20000, "out_features": 20000}}]))  # fmt: skip
    variant("structure-linear-1e6", lambda hh, tt: hh.update(structure=[{"name": "fc1", "kind": "Linear",
                                                                         "config": {"in_features": 10**6, "out_features": 10**6}}]))  # fmt: skip
    variant("structure-linear-negative", lambda hh, tt: hh.update(structure=[{"name": "fc1", "kind": "Linear",
                                                                              "config": {"in_features": -3, "out_features": 4}}]))  # fmt: skip
    variant("structure-shapes-negative", lambda hh, tt: hh.update(structure=[{"name": "fc1", "kind": "Linear", "config": {},
                                                                              "shapes": {"weight": [-1, 5]}}]))  # fmt: skip
    variant("encoding-missing-mask", lambda hh, tt: hh.update(encodings={"fc1.weight": {"kind": "bitmask", "shape": [300, 784]}}))
    variant("encoding-unknown-kind", lambda hh, tt: hh.update(encodings={"fc1.weight": {"kind": "zip", "shape": [300, 784]}}))
    variant("encodings-list", lambda hh, tt: hh.update(encodings=[1]))
    variant("model-codecs-unknown", lambda hh, tt: hh.update(model_codecs={"martian": {}}))
    variant("format-other", lambda hh, tt: hh.update(format="other"))
    variant("missing-tensor", lambda hh, tt: tt.pop("fc1.weight"))
    variant("extra-tensor", lambda hh, tt: tt.update(extra=torch.zeros(3)))
    variant("wrong-shape", lambda hh, tt: tt.update({"fc1.weight": torch.zeros(300, 783)}))
    variant("wrong-dtype-int", lambda hh, tt: tt.update({"fc1.weight": torch.zeros(300, 784, dtype=torch.int64)}))
    variant("bool-weight", lambda hh, tt: tt.update({"fc1.weight": torch.zeros(300, 784, dtype=torch.bool)}))
    variant("nan-weights", lambda hh, tt: tt.update({"fc1.weight": torch.full((300, 784), float("nan"))}))
    variant("inf-weight", lambda hh, tt: tt.update({"fc2.weight": tt["fc2.weight"].clone().index_fill_(0, torch.tensor([0]), float("inf"))}))
    variant("nan-bias", lambda hh, tt: tt.update({"fc3.bias": torch.full((10,), float("nan"))}))
    # Raw safetensors headers that lie.
    raw = (FIX / "model.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    out["header-len-huge"] = (2**62).to_bytes(8, "little") + raw[8:]
    out["header-len-past-end"] = (len(raw) + 10).to_bytes(8, "little") + raw[8:]
    out["header-len-zero"] = (0).to_bytes(8, "little") + raw[8:]
    hdr = json.loads(raw[8 : 8 + n])
    first = next(k for k in hdr if k != "__metadata__")
    for label, patch in (("offsets-past-end", {"data_offsets": [0, 10**12]}), ("dtype-bogus", {"dtype": "F99"}),
                         ("shape-lies", {"shape": [10**6, 10**6]})):  # fmt: skip
        hh = copy.deepcopy(hdr)
        hh[first].update(patch)
        body = json.dumps(hh).encode()
        body += b" " * (-len(body) % 8)
        out[label] = len(body).to_bytes(8, "little") + body + raw[8 + n :]
    out["empty-file"] = b""
    out["seven-bytes"] = b"\x01" * 7
    out["zeros-1k"] = b"\x00" * 1024
    out["random-bytes"] = bytes(range(256)) * 64
    out["text-file"] = b"hello, I am not a model\n"
    plain = st_bytes({"w": torch.zeros(2)}, None, raw_meta="x")
    out["plain-safetensors"] = plain[:8] + plain[8:].replace(b'"torchslim"', b'"torchslin"')
    return out


def checkpoint_cases(cli: list[Callable[[], Result]]) -> None:
    from torchslim.checkpoint import load_checkpoint, load_weights
    from torchslim.measure import evaluate
    from torchslim.models import create_model
    from torchslim.pruning import MagnitudeConfig, prune
    from torchslim.quantization import DynamicInt8Config, quantize

    good = (FIX / "model.safetensors").read_bytes()

    def load_bytes(name: str, data: bytes, expect: str = "error") -> None:
        def setup_fn(w: Path) -> None:
            (w / "m.safetensors").write_bytes(data)

        api_case("checkpoints", name, lambda w: load_checkpoint(w / "m.safetensors"), inp=f"load_checkpoint({name})",
                 setup_fn=setup_fn, expect=expect)  # fmt: skip

    for name, data in lying_headers().items():
        if name.startswith(("nan", "inf")):
            def setup_fn(w: Path, data: bytes = data) -> None:
                (w / "m.safetensors").write_bytes(data)

            def ev(w: Path) -> None:
                m, _ = load_checkpoint(w / "m.safetensors")
                evaluate(m, dataset="digits", latency_runs=1, batch_sizes=(1,))

            api_case("checkpoints", f"evaluate {name}", ev, setup_fn=setup_fn, inp=f"evaluate(load_checkpoint({name}))")

            def pr(w: Path) -> None:
                prune(load_checkpoint(w / "m.safetensors")[0], MagnitudeConfig(amount=0.5))

            def qu(w: Path) -> None:
                quantize(load_checkpoint(w / "m.safetensors")[0], DynamicInt8Config())

            api_case("checkpoints", f"prune {name}", pr, setup_fn=setup_fn, inp=f"prune(load_checkpoint({name}))")
            api_case("checkpoints", f"quantize {name}", qu, setup_fn=setup_fn, inp=f"quantize(load_checkpoint({name}))")
            if name == "nan-weights":
                cli.append(cli_case("checkpoints", f"eval {name}", ["eval", "m.safetensors", "--data", "digits", "--runs", "1"],
                                    setup_fn=setup_fn))  # fmt: skip
            continue
        load_bytes(name, data)
        lw_model = create_model("lenet300")
        # load_weights also takes plain safetensors files: a broken torchslim header over sound tensors may load.
        meta_only = name.startswith(("meta-", "format-", "arch-", "structure-", "encoding", "model-codecs"))
        api_case("checkpoints", f"load_weights {name}", lambda w, m=lw_model: load_weights(copy.deepcopy(m), w / "m.safetensors"),
                 setup_fn=lambda w, data=data: (w / "m.safetensors").write_bytes(data), models=(lw_model,),
                 inp=f"load_weights(model, {name})", expect="either" if meta_only else "error")  # fmt: skip

    lies = lying_headers()
    for i, name in enumerate(("meta-not-json", "arch-list", "structure-linear-1e6", "header-len-huge", "text-file",
                              "encoding-missing-mask", "offsets-past-end", "format-version-abc")):  # fmt: skip
        data = lies[name]
        for verb in ([["eval", "m.safetensors", "--data", "digits", "--runs", "1"]],
                     [["quantize", "m.safetensors", "--method", "int8_dynamic", "--out", "q.safetensors"]])[i % 2]:  # fmt: skip
            cli.append(cli_case("checkpoints", f"{verb[0]} {name}", verb,
                                setup_fn=lambda w, data=data: (w / "m.safetensors").write_bytes(data)))  # fmt: skip

    # Pickle payloads: nothing may unpickle them.
    for f in ("evil.pt", "evil.safetensors", "evil_zip.safetensors", "evil.pth", "evil_meta.safetensors"):
        api_case("checkpoints", f"load_checkpoint {f}", lambda w, f=f: load_checkpoint(w / f), setup_fn=pickle_files,
                 inp=f"load_checkpoint({f}) (pickle payload)")  # fmt: skip
        api_case("checkpoints", f"resolve_model {f}", lambda w, f=f: __import__("torchslim.sources").sources.resolve_model(str(w / f)),
                 setup_fn=pickle_files, inp=f"resolve_model({f}) (pickle payload)")  # fmt: skip
    for f in ("evil.safetensors", "evil_zip.safetensors"):
        cli.append(cli_case("checkpoints", f"eval {f}", ["eval", f, "--data", "digits", "--runs", "1"], setup_fn=pickle_files))
    cli.append(cli_case("checkpoints", "prune evil.pt", ["prune", "evil.pt", "--method", "magnitude", "--amount", "0.5",
                                                         "--out", "p.safetensors"], setup_fn=pickle_files))  # fmt: skip
    cli.append(cli_case("checkpoints", "finetune evil.pth", ["finetune", "evil.pth", "--out", "f.safetensors", "--data", "digits"],
                        setup_fn=pickle_files))  # fmt: skip
    cli.append(cli_case("checkpoints", "compress evil.safetensors", ["compress", "--model", "evil.safetensors", "--recipe",
                                                                     "recipe.yaml", "--out", "o"],
                        setup_fn=lambda w: (pickle_files(w), put(w, "recipe.yaml"))))  # fmt: skip

    # Property battery: truncation anywhere, any byte flipped. A flip inside the tensor data is a
    # valid file holding other numbers: only a typed error or a clean load is acceptable.
    @HYP
    @given(st.integers(min_value=0, max_value=len(good) - 1))
    def truncated(cut: int) -> None:
        load_bytes(f"truncated at {cut}", good[:cut])

    @settings(HYP, max_examples=60)
    @given(st.integers(min_value=0, max_value=len(good) - 1), st.integers(min_value=0, max_value=7))
    def flipped(pos: int, bit: int) -> None:
        b = bytearray(good)
        b[pos] ^= 1 << bit
        load_bytes(f"bit {bit} of byte {pos} flipped", bytes(b), expect="either")

    n = int.from_bytes(good[:8], "little")

    @settings(HYP, max_examples=40)
    @given(st.integers(min_value=8, max_value=8 + n - 1), st.binary(min_size=1, max_size=4))
    def header_bytes(pos: int, junk: bytes) -> None:
        b = bytearray(good)
        b[pos : pos + len(junk)] = junk
        load_bytes(f"header bytes {pos}..{pos + len(junk)} = {junk!r}", bytes(b), expect="either")

    truncated()
    flipped()
    header_bytes()


# ----------------------------------------------------------------------------- recipes
def bomb(levels: int) -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    prev = "a"
    for i in range(levels):
        name = chr(ord("b") + i)
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
        prev = name
    lines.append(f"steps: [{{type: evaluate, split: *{prev}}}]")
    return "\n".join(lines) + "\n"


def bad_recipes() -> dict[str, bytes]:
    ok = "name: r\ndataset: digits\nsteps:\n  - type: int8_dynamic\n"
    r: dict[str, str | bytes] = {
        "empty": "", "only-comment": "# nothing\n", "scalar": "42\n", "list-of-ints": "[1, 2, 3]\n",
        "null": "~\n", "tab-indent": "steps:\n\t- type: evaluate\n", "unclosed-bracket": "steps: [{type: evaluate\n",
        "unclosed-quote": 'name: "r\nsteps: []\n', "bad-indent": "steps:\n  - type: evaluate\n - type: magnitude\n",
        "colon-soup": ": : :\n", "int-top-key": "1: x\nsteps: [{type: evaluate}]\n",
        "list-top-key": "? [a, b]\n: 1\nsteps: [{type: evaluate}]\n",
        "dup-key": "name: a\nname: b\nsteps: [{type: evaluate}]\n",
        "dup-step-key": "steps:\n  - type: magnitude\n    amount: 0.5\n    amount: 0.9\n",
        "steps-int": "steps: 5\n", "steps-str": "steps: magnitude\n", "steps-empty": "steps: []\n",
        "step-int": "steps: [5]\n", "step-no-type": "steps: [{amount: 0.5}]\n", "step-type-int": "steps: [{type: 3}]\n",
        "step-type-unknown": "steps: [{type: magnitud}]\n", "step-type-list": "steps: [{type: [magnitude]}]\n",
        "unknown-top-key": ok + "stpes: []\n", "unknown-step-key": "steps: [{type: magnitude, amout: 0.5}]\n",
        "amount-str": "steps: [{type: magnitude, amount: lots}]\n",
        "amount-1.5": "steps: [{type: magnitude, amount: 1.5}]\n", "amount-neg": "steps: [{type: magnitude, amount: -0.1}]\n",
        "amount-nan": "steps: [{type: magnitude, amount: .nan}]\n", "amount-inf": "steps: [{type: magnitude, amount: .inf}]\n",
        "amount-huge": "steps: [{type: magnitude, amount: 100000000000000000000000}]\n",
        "amount-bool": "steps: [{type: magnitude, amount: true}]\n",
        "epochs-neg": "steps: [{type: finetune, epochs: -1}]\n", "epochs-huge": "steps: [{type: finetune, epochs: 1000000000000}]\n",
        "epochs-float": "steps: [{type: finetune, epochs: 1.5}]\n", "epochs-str": "steps: [{type: finetune, epochs: many}]\n",
        "lr-neg": "steps: [{type: finetune, lr: -0.1}]\n", "lr-nan": "steps: [{type: finetune, lr: .nan}]\n",
        "lr-inf": "steps: [{type: finetune, lr: .inf}]\n", "batch-zero": "steps: [{type: finetune, batch_size: 0}]\n",
        "batch-huge": "steps: [{type: finetune, batch_size: 100000000000}]\n",
        "max-steps-neg": "steps: [{type: finetune, max_steps: -3}]\n",
        "seed-huge": "steps: [{type: finetune, seed: 100000000000000000000}]\n",
        "latency-runs-huge": "latency_runs: 1000000000000\nsteps: [{type: evaluate}]\n",
        "latency-runs-zero": "latency_runs: 0\nsteps: [{type: evaluate}]\n",
        "calib-zero": "calibration_samples: 0\nsteps: [{type: int8_static}]\n",
        "calib-huge": "calibration_samples: 100000000000000\nsteps: [{type: int8_static}]\n",
        "calib-neg": "calibration_samples: -5\nsteps: [{type: int8_static}]\n",
        "n-gt-m": "steps: [{type: nm, n: 5, m: 4}]\n", "m-zero": "steps: [{type: nm, n: 0, m: 0}]\n",
        "ratio-one": "steps: [{type: structured, ratio: 1.0}]\n", "bits-3": "steps: [{type: weight_only, bits: 3}]\n",
        "group-7": "steps: [{type: weight_only, group_size: 7}]\n",
        "dataset-int": "dataset: 5\nsteps: [{type: evaluate}]\n", "dataset-unknown": "dataset: imagenet-9\nsteps: [{type: evaluate}]\n",
        "metric-unknown": "metric: accurasy\nsteps: [{type: evaluate}]\n", "name-list": "name: [a]\nsteps: [{type: evaluate}]\n",
        "order-quant-then-prune": "steps: [{type: int8_dynamic}, {type: magnitude, amount: 0.5}]\n",
        "order-quant-twice": "steps: [{type: int8_dynamic}, {type: int8_dynamic}]\n",
        "order-huffman-first": "steps: [{type: huffman_coding}]\n",
        "order-quant-then-finetune": "steps: [{type: int8_dynamic}, {type: finetune, epochs: 1}]\n",
        "order-export-then-prune": "steps: [{type: export}, {type: magnitude, amount: 0.5}]\n",
        "python-object": "steps: !!python/object/apply:os.system ['touch PWNED']\n",
        "python-name": "steps: [{type: !!python/name:os.system }]\n",
        "python-module": "x: !!python/module:os\nsteps: [{type: evaluate}]\n",
        "python-object-new": "x: !!python/object/new:subprocess.Popen [['touch', 'PWNED']]\nsteps: [{type: evaluate}]\n",
        "unknown-tag": "steps: !custom [1]\n", "binary-tag": "name: !!binary aGVsbG8=\nsteps: [{type: evaluate}]\n",
        "set-tag": "steps: !!set {a, b}\n", "timestamp-epochs": "steps: [{type: finetune, epochs: 2001-12-14}]\n",
        "recursive-alias": "a: &a [*a]\nsteps: [{type: evaluate}]\n",
        "self-alias-step": "steps: &s [{type: evaluate, x: *s}]\n",
        "nested-brackets": "steps: " + "[" * 10000 + "]" * 10000 + "\n",
        "nested-maps": "steps: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n",
        "nested-block": "".join("  " * i + f"k{i}:\n" for i in range(3000)) + "  " * 3000 + "x: 1\n",
        "long-key": "k" * 200000 + ": 1\nsteps: [{type: evaluate}]\n",
        "many-steps": "steps:\n" + "  - type: evaluate\n" * 20000,
        "huge-number-str": "latency_runs: " + "9" * 100000 + "\nsteps: [{type: evaluate}]\n",
        "merge-key-bomb": bomb(2).replace("steps", "<<: {x: 1}\nsteps"),
        "anchor-in-steps": "base: &b {type: magnitude, amount: 0.5}\nsteps: [*b, *b]\n",
        "null-byte": "name: r\x00\nsteps: [{type: evaluate}]\n",
        "bidi": "name: \u202eevil\nsteps: [{type: evaluate, split: te\u200bst}]\n",
        "directive": "%YAML 9.9\n---\nsteps: []\n", "multi-doc": "steps: [{type: evaluate}]\n---\nsteps: []\n",
    }
    for lv in range(3, 10):
        r[f"alias-bomb-{lv}"] = bomb(lv)
    r["latin1"] = ("name: caf\xe9\n" + ok[8:]).encode("latin-1")
    r["utf16"] = ok.encode("utf-16")
    r["utf16-noBOM"] = ok.encode("utf-16-le")
    r["utf8-bom"] = b"\xef\xbb\xbf" + ok.encode()  # valid: a BOM is allowed
    r["binary"] = bytes(range(256)) * 8
    r["gzip"] = gzip.compress(ok.encode())
    r["invalid-utf8-in-comment"] = b"# \xff\xfe\n" + ok.encode()
    return {k: v if isinstance(v, bytes) else v.encode() for k, v in r.items()}


def recipe_cases(cli: list[Callable[[], Result]]) -> None:
    from torchslim.recipes import load_recipe

    recipes = bad_recipes()
    for name, data in recipes.items():
        # Checked when the recipe runs (they depend on the model or the files there), not when it loads.
        late = ("amount-huge", "dataset-unknown", "metric-unknown", "order-export-then-prune", "binary-tag")
        expect = "ok" if name == "utf8-bom" else "either" if name in late else "error"

        def setup_fn(w: Path, data: bytes = data) -> None:
            (w / "r.yaml").write_bytes(data)

        api_case("recipes", f"load_recipe {name}", lambda w: load_recipe(w / "r.yaml"), setup_fn=setup_fn, expect=expect,
                 inp=f"load_recipe(r.yaml: {data[:60]!r})")  # fmt: skip
        if name in ("alias-bomb-9", "python-object", "python-object-new", "latin1", "utf16", "binary", "recursive-alias",
                    "nested-brackets", "int-top-key", "dup-key", "latency-runs-huge", "order-quant-then-prune",
                    "unknown-top-key", "dataset-unknown", "metric-unknown"):  # fmt: skip
            cli.append(cli_case("recipes", f"compress {name}", ["compress", "--model", "lenet300", "--recipe", "r.yaml",
                                                                "--out", "o"], setup_fn=setup_fn, timeout=60))  # fmt: skip
    # The recipe given as text and as Python data.
    for name in ("dup-key", "alias-bomb-8", "python-object", "nested-brackets", "int-top-key"):
        text = recipes[name].decode()
        api_case("recipes", f"load_recipe(text) {name}", lambda w, text=text: load_recipe(text), inp=f"load_recipe({text[:60]!r})")
    for name, data in {"steps-dict": {"steps": {"a": 1}}, "step-none": [None], "type-none": [{"type": None}],
                       "nan-amount": [{"type": "magnitude", "amount": float("nan")}], "obj": [{"type": object()}],
                       "int-key": {1: 2, "steps": []}, "tuple-steps": ({"type": "evaluate"}, 5)}.items():  # fmt: skip
        api_case("recipes", f"load_recipe(data) {name}", lambda w, data=data: load_recipe(data), inp=f"load_recipe({data!r})"[:120])
    # --set overrides.
    sets = ["1.x.y=1", "5.amount=0.5", "0.amount=0.5", "-1.amount=0.5", "amount", "=1", "1.amount=", "1.amount=nan",
            "1.amount=1e400", "*.epochs=-1", "magnitude.amount=[1,2]", "dataset=", "steps=5", "1.type=martian",
            "name.x=1", "1.amount={a: *b}", "1.amount=!!python/name:os.system", "latency_runs=99999999999999",
            "1.amount=0.5=0.6", "x" * 5000 + "=1"]  # fmt: skip
    base = "name: r\ndataset: digits\nsteps:\n  - type: magnitude\n    amount: 0.5\n"
    for s in sets:
        api_case("recipes", f"--set {s[:40]}", lambda w, s=s: load_recipe(base, [s]), inp=f"load_recipe(magnitude recipe, ['{s[:60]}'])")
    for s in ("1.x.y=1", "1.amount=nan"):
        cli.append(cli_case("recipes", f"compress --set {s}", ["compress", "--model", "lenet300", "--recipe", "r.yaml", "--out",
                                                               "o", "--set", s],
                            setup_fn=lambda w: (w / "r.yaml").write_text(base)))  # fmt: skip

    # Property battery: random text and random structures are never a raw exception.
    @settings(HYP, max_examples=60)
    @given(st.text(max_size=200))
    def any_text(text: str) -> None:
        api_case("recipes", f"random text {text[:30]!r}", lambda w: load_recipe(text + "\nsteps: 1\n"),
                 inp=f"load_recipe({text[:80]!r} + steps: 1)")  # fmt: skip

    scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8))
    step = st.fixed_dictionaries({"type": st.sampled_from(["magnitude", "finetune", "int8_dynamic", "nm", "weight_only",
                                                          "structured", "evaluate"])},  # fmt: skip
                                 optional={"amount": scalar, "epochs": scalar, "n": scalar, "m": scalar, "bits": scalar,
                                           "ratio": scalar, "lr": scalar, "bogus": scalar})  # fmt: skip

    @settings(HYP, max_examples=80)
    @given(st.lists(step, min_size=1, max_size=4), scalar)
    def any_steps(steps: list[dict[str, Any]], runs: Any) -> None:
        data = {"dataset": "digits", "latency_runs": runs, "steps": steps}
        api_case("recipes", f"random steps {json.dumps(steps, default=str)[:50]}", lambda w: load_recipe(data),
                 inp=f"load_recipe({json.dumps(data, default=str)[:160]})", expect="either")  # fmt: skip

    any_text()
    any_steps()


# ----------------------------------------------------------------------------- CLI arguments
def arg_cases(cli: list[Callable[[], Result]]) -> None:
    m = ("model.safetensors",)
    q = ["quantize", "model.safetensors", "--out", "q.safetensors", "--data", "digits"]
    p = ["prune", "model.safetensors", "--out", "p.safetensors", "--data", "digits"]
    t = ["train", "--model", "lenet300", "--data", "digits", "--out", "t.safetensors"]
    f = ["finetune", "model.safetensors", "--data", "digits", "--out", "f.safetensors"]
    e = ["eval", "model.safetensors", "--data", "digits"]
    b = ["bench", "model.safetensors"]
    x = ["export", "model.safetensors", "m.onnx"]
    big = "100000000000000000000"
    edges: list[tuple[list[str], list[str]]] = [
        ([], ["--threads", "0", "eval", "model.safetensors"]), ([], ["--threads", "-1", "eval", "model.safetensors"]),
        ([], ["--threads", big, "eval", "model.safetensors"]), ([], ["--threads", "100000", "eval", "model.safetensors"]),
        ([], ["--threads", "x", "eval", "model.safetensors"]),
        (e, ["--runs", "0"]), (e, ["--runs", "-5"]), (e, ["--runs", big]), (e, ["--runs", "1000000000000"]),
        (e, ["--split", "dev"]), (e, ["--metric", "nope"]), (e, ["--metric", "os:system"]), (e, ["--reference", "nosuch.safetensors"]),
        (b, ["--batch", "-1"]), (b, ["--batch", "0"]), (b, ["--batch", big]), (b, ["--runs", "0"]),
        (b, ["--runs", "1000000000000"]), (b, ["--warmup", "-1"]),
        (t, ["--seed", big]), (t, ["--seed", "-1"]), (t, ["--epochs", "0"]), (t, ["--epochs", "-1"]),
        (t, ["--epochs", "1000000000000"]), (t, ["--batch-size", "0"]),
        (t, ["--batch-size", "100000000000"]), (t, ["--lr", "-1"]), (t, ["--lr", "nan"]), (t, ["--lr", "inf"]),
        (t, ["--weight-decay", "-1"]), (t, ["--max-steps", "0"]),
        (t, ["--early-stopping-patience", "-1"]), (t, ["--checkpoint-every", "0"]),
        (t, ["--model", "lenet9000"]), (t, ["--resume"]),
        (f, ["--temperature", "0"]), (f, ["--temperature", "-1"]), (f, ["--temperature", "nan"]), (f, ["--alpha", "-0.1"]),
        (f, ["--alpha", "1.5"]), (f, ["--max-steps", "0"]),
        (f, ["--seed", big]), (f, ["--teacher", "nosuch.safetensors"]),
        (q + ["--method", "int8_static"], ["--calib-samples", "0"]),
        (q + ["--method", "int8_static"], ["--calib-samples", big]),
        (q + ["--method", "weight_only"], ["--bits", "0"]), (q + ["--method", "weight_only"], ["--bits", "3"]),
        (q + ["--method", "weight_only"], ["--group-size", "0"]),
        (q + ["--method", "weight_only"], ["--group-size", "7"]),
        (q + ["--method", "int8_static"], ["--activation-bits", "0"]), (q + ["--method", "int8_static"], ["--activation-bits", "99"]),
        (q + ["--method", "qat"], ["--epochs", "-1"]), (q + ["--method", "qat"], ["--epochs", "1000000000000"]),
        (q + ["--method", "int8_static"], ["--observer", "nope"]), (q + ["--method", "nope"], []),
        (q + ["--method", "int8_dynamic"], ["--targets", "{bad json"]), (q + ["--method", "int8_dynamic"], ["--targets", "[1]"]),
        (q + ["--method", "int8_dynamic"], ["--targets", '{"nosuch": null}']),
        (p + ["--method", "magnitude"], ["--amount", "-0.1"]), (p + ["--method", "magnitude"], ["--amount", "1.0"]),
        (p + ["--method", "magnitude"], ["--amount", "1.5"]), (p + ["--method", "magnitude"], ["--amount", "nan"]),

        (p + ["--method", "magnitude"], ["--amount", big]), (p + ["--method", "nm"], ["--n", "0", "--m", "4"]),
        (p + ["--method", "nm"], ["--n", "5", "--m", "4"]), (p + ["--method", "nm"], ["--n", "2", "--m", "0"]),
        (p + ["--method", "structured"], ["--ratio", "-0.1"]),
        (p + ["--method", "structured"], ["--ratio", "1"]),
        (p + ["--method", "structured"], ["--round-to", "0"]),
        (p + ["--method", "wanda"], ["--calib-samples", "0"]), (p + ["--method", "magnitude"], ["--targets", '["nosuch"]']),
        (x, ["--opset", "0"]), (x, ["--opset", "999"]), (x, ["--tokens", "0"]),
        (x, ["--max-abs-diff", "-1"]), (x, ["--max-abs-diff", "nan"]),
        (["report"], ["nosuch"]), (["models"], ["--family", "nope"]),
    ]  # fmt: skip
    for pre, extra in edges:
        args = [*pre, *extra]
        name = " ".join(a for a in [pre[0] if pre else "", *extra] if a)
        cli.append(cli_case("cli-args", name, args, setup_fn=lambda w: put(w, *m), timeout=60,
                            threads="--threads" not in extra))  # fmt: skip
    # Malformed report.json files given to `torchslim report`.
    for label, text in (("not-json", "{"), ("list", "[1]"), ("stages-str", '{"stages": "x"}'),
                        ("stages-bad", '{"stages": [1, 2], "recipe": 5}')):  # fmt: skip
        def setup_fn(w: Path, text: str = text) -> None:
            (w / "o").mkdir()
            (w / "o" / "report.json").write_text(text)

        cli.append(cli_case("cli-args", f"report {label}", ["report", "o"], setup_fn=setup_fn))


# ----------------------------------------------------------------------------- output-path collisions
def collision_cases(cli: list[Callable[[], Result]]) -> None:
    def files(w: Path) -> None:
        put(w, "model.safetensors", "recipe.yaml")
        (w / "notes.json").write_text('{"mine": 1}\n')
        (w / "unrelated.txt").write_text("keep me\n")
        (w / "sub").mkdir()
        put(w / "sub", "model.safetensors")
        (w / "existing.safetensors").write_bytes(b"user data")
        (w / "existing.json").write_text("{}\n")
        (w / "existing.onnx").write_bytes(b"user onnx")
        (w / "report.json").write_text('{"user": true}\n')

    comp = ["compress", "--model", "model.safetensors", "--recipe", "recipe.yaml", "--data", "digits"]
    qz = ["quantize", "model.safetensors", "--method", "int8_dynamic"]
    pr = ["prune", "model.safetensors", "--method", "magnitude", "--amount", "0.5"]
    ft = ["finetune", "model.safetensors", "--data", "digits", "--max-steps", "2"]
    tr = ["train", "--model", "lenet300", "--data", "digits", "--max-steps", "2"]
    ev = ["eval", "model.safetensors", "--data", "digits", "--runs", "1"]
    be = ["bench", "model.safetensors", "--runs", "1", "--batch", "1"]
    ex = ["export", "model.safetensors"]
    cases: list[list[str]] = []
    for out in (".", "..", "model.safetensors", "recipe.yaml", "sub", "sub/model.safetensors", "model.safetensors/x",
                "unrelated.txt", "existing.safetensors", "notes.json", "sub/..", "./"):  # fmt: skip
        cases += [[*comp, "--out", out, "--force"]]
    cases += [[*comp, "--out", "sub"], [*comp, "--out", "existing.safetensors"]]
    cases += [[*comp[:2], "sub/model.safetensors", *comp[3:], "--out", "sub", "--force"],
              [*comp[:2], "sub/model.safetensors", *comp[3:], "--out", ".", "--force"]]  # fmt: skip
    outs = [("model.safetensors",), ("model",), ("existing",), ("notes.safetensors",), ("notes",), ("recipe.yaml",),
            ("sub/model.safetensors",), ("unrelated.txt",), ("model.safetensors", "--force"), ("model.json", "--force"),
            ("recipe.yaml", "--force"), ("unrelated.txt", "--force"), ("sub", "--force"), (".", "--force")]  # fmt: skip
    for k, pre in enumerate((qz, pr, ft, tr)):
        for j, out in enumerate(outs):
            if j < 3 or (j + k) % 2 == 0:
                cases.append([*pre, "--out", *out])
    for pre in (qz, pr):
        for rj in ("model.safetensors", "q.safetensors", "q.json", "report.json", "/proc/r.json", "sub")[: 6 if pre is qz else 3]:
            cases.append([*pre, "--out", "q.safetensors", "--report-json", rj])
        cases.append([*pre, "--out", "q.safetensors", "--report-json", "model.safetensors", "--force"])
    cases.append([*qz, "--out", "q.safetensors", "--report-json", "q.safetensors", "--force"])
    for pre in (ev, be):
        for js in ("model.safetensors", "report.json", "/proc/r.json", "sub")[: 4 if pre is ev else 2]:
            cases.append([*pre, "--json", js])
        cases.append([*pre, "--json", "model.safetensors", "--force"])
    for out in ("model.safetensors", "existing.onnx", "sub", ".", "recipe.yaml"):
        cases += [[*ex, out, "--force"]] if out != "existing.onnx" else [[*ex, out]]
    cases += [[*ex, "m.onnx", "--json", "model.safetensors"], [*ex, "m.onnx", "--json", "m.onnx"],
              [*ex, "m.onnx", "--json", "report.json"]]  # fmt: skip
    for args in cases:
        cli.append(cli_case("collisions", " ".join(args[:1] + args[-4:]), args, setup_fn=files, timeout=60))
    # A run folder may be an existing folder: training adds its files and changes none of the user's.
    run = ["train", "--model", "lenet300", "--data", "digits", "--max-steps", "2", "--out", "t.safetensors", "--run-dir", "sub"]
    cli.append(cli_case("collisions", "train --run-dir <folder with user files>", run, setup_fn=files, timeout=60,
                        expect="ok", allowed=("t.safetensors", "t.json", "sub/last.safetensors", "sub/best.safetensors")))  # fmt: skip


# ----------------------------------------------------------------------------- data
def idx_bytes(n: int, rows: int = 28, cols: int = 28, *, labels: bool = False) -> bytes:
    if labels:
        return struct.pack(">I", 0x801) + struct.pack(">I", n) + bytes(n)
    return struct.pack(">I", 0x803) + struct.pack(">III", n, rows, cols) + bytes(n * rows * cols)


def data_cases(cli: list[Callable[[], Result]]) -> None:
    from torchslim.data import ImageData
    from torchslim.data.idx import read_idx, read_idx_bytes
    from torchslim.measure import evaluate
    from torchslim.models import create_model
    from torchslim.quantization import StaticInt8Config, quantize
    from torchslim.recovery import FinetuneConfig, finetune
    from torchslim.sources import resolve_data

    names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz"]  # fmt: skip
    gz_variants: dict[str, bytes] = {
        "not-gzip": b"hello", "empty": b"", "truncated-gzip": gzip.compress(idx_bytes(100))[:50],
        "wrong-magic": gzip.compress(b"\x00\x00\x09\x99" + bytes(100)), "short-idx": gzip.compress(idx_bytes(10)[:-5]),
        "huge-dims": gzip.compress(struct.pack(">I", 0x803) + struct.pack(">III", 2**31 - 1, 2**16, 2**16)),
        "gzip-bomb": _zero_gzip(300), "concat-gzip": gzip.compress(b"a") + b"garbage",
        "ok-but-tiny": gzip.compress(idx_bytes(10)),
    }  # fmt: skip
    for label, blob in gz_variants.items():
        def setup_fn(w: Path, blob: bytes = blob) -> None:
            (w / "fm").mkdir()
            for n in names:
                (w / "fm" / n).write_bytes(blob)

        cli.append(cli_case("data", f"fashion-mnist dir {label}", ["eval", "lenet300", "--data", "fashion-mnist", "--data-dir",
                                                                   "fm", "--runs", "1"], setup_fn=setup_fn))  # fmt: skip
        api_case("data", f"read_idx {label}", lambda w: read_idx(w / "fm" / names[0]), setup_fn=setup_fn,
                 inp=f"read_idx({label})", expect="either" if label == "ok-but-tiny" else "error")  # fmt: skip
        api_case("data", f"load_dataset {label}", lambda w: resolve_data("fashion-mnist", "test", data_dir=str(w / "fm")),
                 setup_fn=setup_fn, inp=f"resolve_data('fashion-mnist', data_dir=<{label}>)")  # fmt: skip
    for label, raw in (("empty", b""), ("magic-only", b"\x00\x00\x08\x03"), ("dims-lie", idx_bytes(5)[:16] + bytes(10)),
                       ("ndim-99", b"\x00\x00\x08\x63" + bytes(400)), ("dtype-bad", b"\x00\x00\x42\x01" + bytes(8))):  # fmt: skip
        api_case("data", f"read_idx_bytes {label}", lambda w, raw=raw: read_idx_bytes(raw), inp=f"read_idx_bytes({raw[:16]!r})")

    def folder(kind: str) -> Callable[[Path], None]:
        def setup_fn(w: Path) -> None:
            d = w / "imgs"
            d.mkdir()
            if kind in ("classes-no-images", "non-images", "corrupt-png", "one-image"):
                (d / "a").mkdir()
                (d / "b").mkdir()
            if kind == "non-images":
                (d / "a" / "x.txt").write_text("no")
            if kind == "corrupt-png":
                (d / "a" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
                (d / "b" / "y.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
            if kind == "one-image":
                from PIL import Image

                Image.new("L", (28, 28)).save(d / "a" / "x.png")
            if kind == "splits-empty":
                for s in ("train", "val", "test"):
                    (d / s / "a").mkdir(parents=True)
        return setup_fn

    for kind in ("empty", "classes-no-images", "non-images", "corrupt-png", "one-image", "splits-empty"):
        cli.append(cli_case("data", f"image folder {kind}", ["eval", "lenet300", "--data", "imgs", "--runs", "1"],
                            setup_fn=folder(kind)))  # fmt: skip
        api_case("data", f"resolve_data image folder {kind}", lambda w: list(resolve_data(str(w / "imgs"), "test")),
                 setup_fn=folder(kind), inp=f"resolve_data(<image folder: {kind}>)")  # fmt: skip
    minilm = create_model  # the HF folder is needed for sentences: only the read is exercised through the API
    del minilm
    from torchslim.sources import read_sentences

    for label, raw in (("empty", b""), ("blank-lines", b"\n\n  \n"), ("latin1", "caf\xe9\n".encode("latin-1")),
                       ("utf16", "hello\n".encode("utf-16")), ("binary", bytes(range(256)))):  # fmt: skip
        api_case("data", f"read_sentences {label}", lambda w: read_sentences(w / "s.txt"),
                 setup_fn=lambda w, raw=raw: _write(w / "s.txt", raw), inp=f"read_sentences({raw[:20]!r})")  # fmt: skip
        cli.append(cli_case("data", f"eval sentences {label}", ["eval", "lenet300", "--data", "s.txt", "--runs", "1"],
                            setup_fn=lambda w, raw=raw: _write(w / "s.txt", raw)))  # fmt: skip
    model = create_model("lenet300")
    empty = ImageData("digits", "train", torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long), 10)
    api_case("data", "finetune empty train ImageData", lambda w: finetune(model, FinetuneConfig(epochs=1), train_data=empty,
             val_data=empty, quiet=True), models=(model,), inp="finetune(train_data=<empty ImageData>)")  # fmt: skip
    api_case("data", "evaluate empty list", lambda w: evaluate(model, [], latency_runs=1, batch_sizes=(1,)), models=(model,),
             inp="evaluate(model, [])")  # fmt: skip
    api_case("data", "evaluate empty loader", lambda w: evaluate(model, torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long))), latency_runs=1,
        batch_sizes=(1,)), models=(model,), inp="evaluate(model, DataLoader(<0 samples>))")  # fmt: skip
    api_case("data", "evaluate empty ImageData", lambda w: evaluate(model, empty, latency_runs=1, batch_sizes=(1,)),
             models=(model,), inp="evaluate(model, <empty ImageData>)")  # fmt: skip
    api_case("data", "quantize static empty calib", lambda w: quantize(model, StaticInt8Config(), calib_data=empty),
             models=(model,), inp="quantize(int8_static, calib_data=<empty ImageData>)")  # fmt: skip
    api_case("data", "quantize static calib NaN", lambda w: quantize(model, StaticInt8Config(), calib_data=[
        (torch.full((4, 1, 28, 28), float("nan")), torch.zeros(4, dtype=torch.long))]), models=(model,),
        inp="quantize(int8_static, calib_data=<NaN images>)")  # fmt: skip
    api_case("data", "evaluate wrong shape", lambda w: evaluate(model, [(torch.zeros(4, 3, 5, 5), torch.zeros(4).long())],
             latency_runs=1, batch_sizes=(1,)), models=(model,), inp="evaluate(model, <batch of 3x5x5 images>)")  # fmt: skip
    api_case("data", "evaluate labels out of range", lambda w: evaluate(model, [(torch.zeros(4, 1, 28, 28),
             torch.full((4,), 99).long())], latency_runs=1, batch_sizes=(1,)), models=(model,), expect="either",
             inp="evaluate(model, <labels 99 for 10 classes>)")  # fmt: skip


def _zero_gzip(mib: int) -> bytes:
    """A gzip stream of ``mib`` MiB of zeros (about 300 KB), built without holding the zeros."""
    import zlib

    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(2**20)
    return b"".join(c.compress(chunk) for _ in range(mib)) + c.flush()


def _write(path: Path, raw: bytes) -> Path:
    path.write_bytes(raw)
    return path


# ----------------------------------------------------------------------------- faults
STALE = re.compile(r"\.torchslim-[^/]*\.tmp$|\.tmp$")


def stale(work: Path) -> list[str]:
    return sorted(str(p.relative_to(work)) for p in work.rglob("*") if STALE.search(p.name))


def fault_cases() -> None:
    runs = {
        "compress": (["compress", "--model", "model.safetensors", "--recipe", "long_recipe.yaml", "--out", "o", "--quiet"],
                     None, ("o",), "o", ["--force"]),  # fmt: skip
        "train": (["train", "--model", "lenet300", "--data", "digits", "--out", "t.safetensors", "--epochs", "30",
                   "--run-dir", "run", "--checkpoint-every", "5", "--batch-size", "32", "--quiet"],
                  None, ("t.safetensors", "t.json", "run"), "run", ["--resume", "--max-steps", "60"]),  # fmt: skip
        "finetune": (["finetune", "model.safetensors", "--data", "digits", "--out", "f.safetensors", "--epochs", "30",
                      "--run-dir", "run", "--checkpoint-every", "5", "--batch-size", "32", "--quiet"],
                     None, ("f.safetensors", "f.json", "run"), "run", ["--resume", "--max-steps", "60"]),  # fmt: skip
    }
    for sig in (signal.SIGKILL, signal.SIGTERM):
        for name, (args, _, allowed, watch, rerun_extra) in runs.items():
            _fault(name, args, sig, allowed, watch, rerun_extra)
        _fault_save(sig)


def _wait_for(work: Path, watch: str, p: subprocess.Popen, limit: float = 60) -> bool:
    """Wait until ``watch`` (or a temporary of it) appears under ``work``; then a little longer."""
    t0 = time.time()
    while time.time() - t0 < limit and p.poll() is None:
        if (work / watch).exists() or any(work.glob(f".{watch}.torchslim-*")):
            time.sleep(1.0)
            return True
        time.sleep(0.1)
    return False


def _fault(name: str, args: list[str], sig: int, allowed: tuple[str, ...], watch: str, rerun_extra: list[str]) -> None:
    signame = signal.Signals(sig).name
    r = Result("faults", "cli", f"{signame} during {name}, rerun", "torchslim " + " ".join(args), "ok")
    with tempfile.TemporaryDirectory(prefix="rel-") as d:
        work = Path(d)
        put(work, "model.safetensors", "long_recipe.yaml")
        before = tree(work)
        t0 = time.perf_counter()
        p = spawn(args, work)
        reached = _wait_for(work, watch, p)
        _killpg(p.pid, sig)
        rc, out, rss = reap(p, 60)
        after_kill = stale(work)
        if "Traceback" in out:
            r.problems.append(f"traceback after {signame}: {out.strip().splitlines()[-1][:200]}")
        if not reached:
            r.problems.append(f"the run ended before it could be killed (rc={rc}): {out.strip()[-200:]}")
        rerun = [*args[:-1], *rerun_extra, "--quiet"] if args[-1] == "--quiet" else [*args, *rerun_extra]
        if name == "compress":  # the same command with a shorter fine-tuning step
            rerun = [*args, "--set", "2.epochs=1", "--set", "2.max_steps=5"] + (["--force"] if (work / "o").exists() else [])
        rc2, out2, rss2 = reap(spawn(rerun, work), 120)
        r.wall_s, r.peak_rss_mb = time.perf_counter() - t0, max(rss, rss2)
        r.input += f"; killed with {signame} after its output appeared; rerun: torchslim " + " ".join(rerun)
        if rc2 != 0 or "Traceback" in out2:
            r.problems.append(f"rerun failed rc={rc2}: {out2.strip().splitlines()[-1][:200] if out2.strip() else ''}")
            r.outcome = "raw_traceback" if "Traceback" in out2 else "typed_error"
        else:
            r.outcome = "ok"
        left = stale(work)
        if left:
            r.problems += [f"leftover: {x}" for x in left]
        r.message = f"after {signame}: rc={rc}, temporaries {after_kill or 'none'}; rerun rc={rc2}"
        compare_trees(before, tree(work), allowed + ((f"{allowed[0]}",) if allowed else ()), r)
    record(r)
    log(f"  {r.case}: {r.message} {r.problems}")


SAVE_SCRIPT = """
import sys, torch, torch.nn as nn
from torchslim.checkpoint import save_checkpoint
torch.manual_seed(0)
m = nn.Sequential(*[nn.Linear(1024, 1024) for _ in range(24)])
n = int(sys.argv[1])
for i in range(n):
    save_checkpoint(m, "big.safetensors")
"""


def _fault_save(sig: int) -> None:
    signame = signal.Signals(sig).name
    r = Result("faults", "api", f"{signame} during save_checkpoint, rerun", "save_checkpoint(100 MB model) in a loop", "ok")
    with tempfile.TemporaryDirectory(prefix="rel-") as d:
        work = Path(d)
        (work / "save.py").write_text(SAVE_SCRIPT)
        before = tree(work)
        t0 = time.perf_counter()
        p = subprocess.Popen([sys.executable, "save.py", "1000"], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             env=_env(), start_new_session=True)  # fmt: skip
        caught = False
        t1 = time.time()
        while time.time() - t1 < 60 and p.poll() is None:
            if any(work.glob(".big.safetensors.torchslim-*.tmp")):
                time.sleep(0.05)
                caught = True
                break
            time.sleep(0.01)
        _killpg(p.pid, sig)
        rc, out, rss = reap(p, 60)
        after_kill = stale(work)
        rc2, out2, rss2 = reap(subprocess.Popen([sys.executable, "save.py", "1"], cwd=work, stdout=subprocess.PIPE,
                                                stderr=subprocess.STDOUT, env=_env(), start_new_session=True), 120)  # fmt: skip
        r.wall_s, r.peak_rss_mb = time.perf_counter() - t0, max(rss, rss2)
        if not caught:
            r.problems.append("never saw the save's temporary file")
        if rc2 != 0:
            r.problems.append(f"rerun failed rc={rc2}: {out2.strip()[-200:]}")
        left = stale(work)
        r.problems += [f"leftover: {x}" for x in left]
        r.outcome = "ok" if rc2 == 0 else "raw_traceback"
        r.message = f"after {signame}: temporaries {after_kill or 'none'}; rerun rc={rc2}"
        compare_trees(before, tree(work), ("big.safetensors", "big.json"), r)
    record(r)
    log(f"  {r.case}: {r.message} {r.problems}")


# ----------------------------------------------------------------------------- determinism
def determinism_cases() -> bool:
    runs = {
        "train": (["train", "--model", "lenet300", "--data", "digits", "--out", "a.safetensors", "--max-steps", "20", "--seed", "3",
                   "--quiet"], ["a.safetensors"]),  # fmt: skip
        "finetune": (["finetune", "model.safetensors", "--data", "digits", "--out", "a.safetensors", "--max-steps", "20",
                      "--seed", "3", "--quiet"], ["a.safetensors"]),  # fmt: skip
        "compress": (["compress", "--model", "model.safetensors", "--recipe", "ft_recipe.yaml", "--out", "o", "--quiet"],
                     ["o/model.safetensors", "o/recipe.yaml"]),  # fmt: skip
        "quantize int8_static": (["quantize", "model.safetensors", "--method", "int8_static", "--data", "digits",
                                  "--calib-samples", "64", "--out", "a.safetensors"], ["a.safetensors"]),  # fmt: skip
        "prune wanda": (["prune", "model.safetensors", "--method", "wanda", "--amount", "0.5", "--data", "digits",
                         "--calib-samples", "64", "--out", "a.safetensors"], ["a.safetensors"]),  # fmt: skip
    }
    all_same = True
    for name, (args, arts) in runs.items():
        r = Result("determinism", "cli", f"{name} twice", "torchslim " + " ".join(args), "ok")
        digests = []
        t0 = time.perf_counter()
        rss_max = 0.0
        for _ in range(2):
            with tempfile.TemporaryDirectory(prefix="rel-") as d:
                work = Path(d)
                put(work, "model.safetensors", "ft_recipe.yaml")
                rc, out, rss = reap(spawn(args, work), 180)
                rss_max = max(rss_max, rss)
                if rc != 0:
                    r.problems.append(f"rc={rc}: {out.strip().splitlines()[-1][:200] if out.strip() else ''}")
                digests.append({a: hashlib.sha256((work / a).read_bytes()).hexdigest() if (work / a).exists() else None
                                for a in arts})  # fmt: skip
        r.wall_s, r.peak_rss_mb = (time.perf_counter() - t0) / 2, rss_max
        diff = [a for a in arts if digests[0][a] != digests[1][a] or digests[0][a] is None]
        if diff:
            r.problems.append(f"artifacts differ between the two runs: {diff}")
            all_same = False
        r.outcome = "ok" if not r.problems else "raw_traceback" if any("Traceback" in p for p in r.problems) else "typed_error"
        r.message = f"{len(arts) - len(diff)}/{len(arts)} artifacts byte-identical"
        record(r)
        log(f"  determinism {name}: {r.message} {r.problems}")
    # API: the same call twice gives the same saved bytes.
    from torchslim.checkpoint import save_checkpoint
    from torchslim.pruning import MagnitudeConfig, prune
    from torchslim.quantization import DynamicInt8Config, WeightOnlyConfig, quantize

    for name, fn in (("quantize int8_dynamic", lambda m: quantize(m, DynamicInt8Config())[0]),
                     ("quantize weight_only int4", lambda m: quantize(m, WeightOnlyConfig(bits=4, group_size=32))[0]),
                     ("prune magnitude", lambda m: prune(m, MagnitudeConfig(amount=0.7))[0])):  # fmt: skip
        digests = []

        def go(w: Path, fn: Callable[[nn.Module], nn.Module] = fn, digests: list[str] = digests) -> None:
            for i in range(2):
                save_checkpoint(fn(tiny()), w / f"{i}.safetensors")
                digests.append(hashlib.sha256((w / f"{i}.safetensors").read_bytes()).hexdigest())

        r = api_case("determinism", f"{name} twice (API)", go, expect="ok", allowed=("0.safetensors", "0.json", "1.safetensors",
                                                                                   "1.json"))  # fmt: skip
        if len(set(digests)) != 1:
            r.problems.append("artifacts differ between the two calls")
            all_same = False
    return all_same


# ----------------------------------------------------------------------------- soak
def soak() -> float:
    """1,000 calls (quantize / prune / evaluate in turn) on a tiny model; RSS growth from call 100 to 1,000."""
    import gc

    from torchslim.measure import evaluate
    from torchslim.pruning import MagnitudeConfig, prune
    from torchslim.quantization import DynamicInt8Config, quantize

    model = tiny()
    snap = model_state(model)
    data = [(torch.randn(8, 16), torch.randint(0, 10, (8,)))]
    calls = [lambda: quantize(model, DynamicInt8Config()), lambda: prune(model, MagnitudeConfig(amount=0.5)),
             lambda: evaluate(model, data, latency_runs=1, batch_sizes=(1,))]  # fmt: skip

    def rss() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    t0 = time.perf_counter()
    at100 = 0.0
    for i in range(1, 1001):
        calls[i % 3]()
        if i == 100:
            gc.collect()
            at100 = rss()
    gc.collect()
    at1000 = rss()
    growth = 100 * (at1000 - at100) / at100
    r = Result("soak", "api", "1,000 quantize/prune/evaluate calls", "quantize/prune/evaluate(tiny MLP) x 1,000", "ok", "ok",
               message=f"RSS {at100:.0f} MB at call 100, {at1000:.0f} MB at call 1,000 ({growth:+.2f}%)",
               wall_s=time.perf_counter() - t0, peak_rss_mb=_peak_mb())  # fmt: skip
    if growth >= 5:
        r.problems.append(f"RSS grew {growth:.1f}% between call 100 and 1,000")
    if not same_state(model, snap):
        r.problems.append("input model mutated (state_dict or training mode)")
    RESULTS.append(r)  # its wall time is the whole soak's, not one case's
    log(f"  soak: {r.message}")
    return growth


# ----------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(CATEGORIES), help=f"comma-separated categories ({', '.join(CATEGORIES)})")
    args = ap.parse_args()
    only = [c.strip() for c in args.only.split(",") if c.strip()]
    setup()
    torch.set_num_threads(1)
    MARKER.unlink(missing_ok=True)
    t_start = time.perf_counter()
    make_fixtures()
    cli: list[Callable[[], Result]] = []
    deterministic, growth = None, None
    builders = {"checkpoints": checkpoint_cases, "recipes": recipe_cases, "cli-args": arg_cases,
                "collisions": collision_cases, "data": data_cases}  # fmt: skip
    for cat in only:
        if cat in builders:
            log(f"{cat}: API cases (CLI cases queued)")
            builders[cat](cli)
    if cli:
        log(f"{len(cli)} CLI cases, 2 at a time")
        run_cli_cases(cli)
    if "faults" in only:
        log("faults")
        fault_cases()
    if "determinism" in only:
        log("determinism")
        deterministic = determinism_cases()
    if "soak" in only:
        log("soak")
        growth = soak()
    wall = time.perf_counter() - t_start
    pickle_ran = MARKER.exists()
    MARKER.unlink(missing_ok=True)
    shutil.rmtree(FIX, ignore_errors=True)
    write(only, wall, pickle_ran, deterministic, growth)


def _count(rs: list[Result], pred: Callable[[Result], bool]) -> int:
    return sum(1 for r in rs if pred(r))


def _has(r: Result, prefix: str) -> bool:
    return any(p.startswith(prefix) for p in r.problems)


def write(only: list[str], wall: float, pickle_ran: bool, deterministic: bool | None, growth: float | None) -> None:
    cases = [r for r in RESULTS if r.category != "soak"]
    summary = {
        "inputs_tried": len(cases),
        "typed_errors": _count(cases, lambda r: r.outcome == "typed_error"),
        "raw_tracebacks": _count(cases, lambda r: r.outcome == "raw_traceback" or _has(r, "traceback")),
        "silently_accepted": _count(cases, lambda r: r.outcome == "silently_accepted"),
        "files_lost_or_changed": _count(cases, lambda r: _has(r, "file lost") or _has(r, "file changed")),
        "leftover_files": _count(cases, lambda r: _has(r, "leftover")),
        "mutated_inputs": _count(RESULTS, lambda r: _has(r, "input model mutated")),
        "pickle_executed": pickle_ran,
        "max_case_peak_rss_mb": round(max((r.peak_rss_mb for r in cases), default=0.0), 1),
        "max_case_wall_s": round(max((r.wall_s for r in cases), default=0.0), 2),
        "deterministic_artifacts": deterministic,
        "soak_rss_growth_pct": None if growth is None else round(growth, 2),
    }
    rows = []
    for cat in CATEGORIES:
        for surface in ("cli", "api"):
            rs = [r for r in RESULTS if r.category == cat and r.surface == surface]
            if not rs:
                continue
            rows.append({
                "model": surface, "method": cat, "inputs": len(rs),
                "typed_errors": _count(rs, lambda r: r.outcome == "typed_error"),
                "accepted_ok": _count(rs, lambda r: r.outcome == "ok"),
                "raw_tracebacks": _count(rs, lambda r: r.outcome == "raw_traceback" or _has(r, "traceback")),
                "silently_accepted": _count(rs, lambda r: r.outcome == "silently_accepted"),
                "files_lost_or_changed": _count(rs, lambda r: _has(r, "file lost") or _has(r, "file changed")),
                "leftover_files": _count(rs, lambda r: _has(r, "leftover")),
                "mutated_inputs": _count(rs, lambda r: _has(r, "input model mutated")),
                "other_failures": _count(rs, lambda r: bool(r.problems)),
                "messages_without_fix": _count(rs, lambda r: bool(r.soft)),
                "max_wall_s": round(max(r.wall_s for r in rs), 2), "max_peak_rss_mb": round(max(r.peak_rss_mb for r in rs), 1),
            })  # fmt: skip
    failures = [{"category": r.category, "surface": r.surface, "case": r.case, "input": r.input, "outcome": r.outcome,
                 "problems": r.problems, "message": r.message} for r in RESULTS if r.problems]  # fmt: skip
    no_fix = [{"category": r.category, "case": r.case, "message": r.message} for r in RESULTS if r.soft]
    notes = (f"{summary['inputs_tried']} inputs in {wall:.0f} s (categories: {', '.join(only)}). CLI cases ran as "
             "subprocesses two at a time with --threads 1; API cases in one process. A case fails on a raw traceback, "
             "a silent acceptance, any file lost / changed / left over in its temporary folder, a mutated input model, "
             f"> {MAX_WALL_S:.0f} s or > {MAX_RSS_MB} MB peak RSS.")  # fmt: skip
    write_results("reliability", rows, notes=notes, extra={**summary, "wall_s": round(wall, 1), "categories": only,
                                                          "failures": failures, "messages_without_fix": no_fix})  # fmt: skip
    from _common import RESULTS as RESULTS_DIR

    md = RESULTS_DIR / "reliability.md"
    lines = ["", "## Summary", "", "| field | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary.items()]
    lines += ["", f"## Failing cases ({len(failures)})", ""]
    if failures:
        lines += ["| category | surface | case | input | problems | message |", "|---|---|---|---|---|---|"]
        for f in failures:
            cells = [f["category"], f["surface"], f["case"], f["input"][:200], "; ".join(f["problems"])[:200], f["message"][:200]]
            lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    else:
        lines.append("none")
    md.write_text(md.read_text() + "\n".join(lines) + "\n")
    log(json.dumps(summary))
    log(f"wall {wall:.0f} s; {len(failures)} failing cases")


if __name__ == "__main__":
    main()
