"""The MiniLM CLI route of issue 18: ``torchslim compress --model <HF folder> --data <sentences file>
--recipe recipes/minilm_int8.yaml``, run as a user would, its fidelity compared with the committed
bench-transformers figures (mean / min cosine and nearest-neighbour agreement to FP32).

``make bench-minilm-cli`` -> benchmarks/results/minilm_cli.json + .md
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import RESULTS, setup, write_results

ROOT = Path(__file__).resolve().parents[1]
CALIB, EVAL = 1024, 1024  # the file's first half calibrates (recipe: first 512), the second half is evaluated


def main() -> None:
    setup()
    from torchslim.models.transformers import minilm_dir
    from torchslim.transformers.corpus import load_sentences

    committed = json.loads((RESULTS / "transformers.json").read_text())
    ref = next(r for r in committed["rows"] if r["method"] == "torchslim-int8-compiled")
    with tempfile.TemporaryDirectory() as d:
        sentences = Path(d) / "sentences.txt"
        sentences.write_text("\n".join(load_sentences(CALIB + EVAL)))
        cmd = [sys.executable, "-m", "torchslim.cli", "compress", "--model", str(minilm_dir()), "--data", str(sentences),
               "--recipe", str(ROOT / "recipes" / "minilm_int8.yaml"), "--out", str(Path(d) / "out"),
               "--set", "latency_runs=3", "--quiet"]  # fmt: skip
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"compress failed ({r.returncode}): {r.stderr[-2000:]}")
        metrics = json.loads((Path(d) / "out" / "metrics.json").read_text())
    base, final = metrics["stages"][0], metrics["stages"][-1]
    rows = [{
        "model": "all-MiniLM-L6-v2", "method": "CLI compress recipes/minilm_int8.yaml (eager PyTorch)",
        "mean_cos": final["mean_cos"], "min_cos": final["min_cos"], "nn_agreement": final["nn_agreement"],
        "sentences": final["samples"], "size_bytes": final["size_bytes"], "baseline_size_bytes": base["size_bytes"],
        "wall_s": round(wall, 1),
    }, {
        "model": "all-MiniLM-L6-v2", "method": "committed bench-transformers torchslim-int8-compiled",
        "mean_cos": ref["mean_cos"], "min_cos": ref["min_cos"], "nn_agreement": ref["nn_agreement"],
    }]  # fmt: skip
    write_results("minilm_cli", rows, notes=(
        "The issue-18 CLI route, run as a subprocess on 2048 real sentences (load_sentences): the first 1024 "
        "calibrate (the recipe takes 512), the other 1024 are evaluated; fidelity is mean-pooled over real tokens. "
        "The committed row is bench-transformers' (its own 1024 evaluation sentences). Latency of this route is "
        "eager PyTorch and is not compared here (see bench-transformers for the compiled runtime)."))


if __name__ == "__main__":
    main()
