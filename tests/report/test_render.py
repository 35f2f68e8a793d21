import base64
import json

import pytest

from torchslim.errors import DataError
from torchslim.report import render_report


def _stage(name, acc, size, sparsity, bits, runtime="eager"):
    layers = [{"name": n, "type": "Linear", "numel": 1000, "sparsity": sparsity, "bits": bits} for n in ("fc1", "fc2")]
    return {"name": name, "type": None if name == "baseline" else name, "accuracy": acc, "size_bytes": size,
            "compression_ratio": 100000 / size, "latency_ms_b1": 0.1, "latency_ms_b64": 1.5,
            "latency_runtime": runtime, "macs": 2000,
            "sparsity": sparsity, "wall_s": 1.0, "layers": layers}


@pytest.fixture()
def folder(tmp_path):
    data = {
        "title": "test run", "created": "now", "recipe": {"steps": []},
        "stages": [_stage("baseline", 90.0, 100000, 0.0, 32.0), _stage("1. prune", 89.5, 20000, 0.9, 32.0),
                   _stage("2. share", 89.4, 4000, 0.9, 5.0, runtime="compile_int8")],
        "histograms": {n: {"edges": [-1.0, 0.0, 1.0], "before": [500, 500], "after": [40, 60], "after_zeros": 900,
                           "after_unique": 31} for n in ("fc1", "fc2")},
        "bits_table": [{"layer": "fc1", "weights": 1000, "kept_pct": 10.0, "weight_bits": 5, "weight_bits_huffman": 3.1,
                        "index_bits": 4, "index_bits_huffman": 2.9, "filler_pct": 1.0, "bytes": 200,
                        "compress_rate_pct": 5.0}],
        "artifact": {"file": "model.safetensors", "size_bytes": 4100, "reload_identical_outputs": True,
                     "compression_ratio": 24.39},
    }
    (tmp_path / "report.json").write_text(json.dumps(data))
    return tmp_path


def test_html_embeds_every_figure_as_png(folder):
    files = render_report(folder)
    assert set(files) == {"report.html", "report.md", "figures/accuracy_vs_size.png", "figures/layer_sparsity.png",
                          "figures/layer_bits.png", "figures/weight_histograms.png"}
    page = (folder / "report.html").read_text()
    imgs = page.split('src="data:image/png;base64,')[1:]
    assert len(imgs) == 4
    for chunk in imgs:
        png = base64.b64decode(chunk.split('"', 1)[0])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    for caption in ("Accuracy against file size", "Per-layer sparsity", "Per-layer bit width", "Weight histograms"):
        assert caption in page
    assert "24.4x smaller" in page and "89.4" in page


def test_markdown_has_stage_layer_and_bits_tables(folder):
    render_report(folder)
    md = (folder / "report.md").read_text()
    assert ("| stage | accuracy (%) | file size (B) | compression | latency b1 (ms) | latency b64 (ms) | speed-up b1 | "
            "speed-up b64 | timed as | MACs | sparsity (%) |") in md
    # a report written before the speed guard: no speed-ups, no speed line
    assert "| 1. prune | 89.5 | 20,000 | 5.0x | 0.1 | 1.5 | n/a | n/a | eager |" in md
    assert "| 2. share | 89.4 | 4,000 | 25.0x | 0.1 | 1.5 | n/a | n/a | compile_int8 |" in md
    assert "Speed:" not in md
    assert "| fc1 | Linear | Linear | 1,000 | 1,000 | 0 | 0.9 | 32 | 5 |" in md
    assert "| fc1 | 1,000 | 10 | 5 | 3.1 | 4 | 2.9 |" in md
    assert "![Weight histograms before and after](figures/weight_histograms.png)" in md


@pytest.mark.parametrize("slower", [True, False])
def test_the_speed_guard_line_is_near_the_top_and_flags_a_slower_result(folder, slower):
    from torchslim.measure import SpeedCheck

    data = json.loads((folder / "report.json").read_text())
    check = SpeedCheck(latency_ms=8.89 if slower else 2.0, reference_latency_ms=5.67, batch_size=64, runs=30,
                       reasons=["unstructured sparsity runs on dense kernels (90% zeros in 2 layers)"],
                       latency_ms_b1=0.1, reference_latency_ms_b1=0.1)  # fmt: skip
    data["speed"] = check.as_dict()
    for st, (b1, b64) in zip(data["stages"], [(1.0, 1.0), (0.98, 0.7), (1.0, check.speedup)], strict=True):
        st.update(speedup_b1=b1, speedup_b64=b64)
    (folder / "report.json").write_text(json.dumps(data))
    render_report(folder)
    md = (folder / "report.md").read_text()
    page = (folder / "report.html").read_text()
    how = "(final model timed interleaved with the input model on this machine, 30 runs per batch size, timed as eager vs eager)"
    if slower:
        line = ("SLOWER than FP32 (0.64x at batch 64; 1.00x at batch 1): unstructured sparsity runs on dense kernels "
                "(90% zeros in 2 layers)")  # fmt: skip
        assert f"**Speed: {line} {how}**" in md
        assert f'<p class="speed slower"><strong>Speed:</strong> {line} {how}</p>' in page
    else:
        assert f"Speed: 2.83x faster than FP32 at batch 64 (1.00x at batch 1) {how}" in md
        assert '<p class="speed"><strong>Speed:</strong> 2.83x faster than FP32' in page
    assert md.index("Speed:") < md.index("## Stages")
    assert "| 1. prune | 89.5 | 20,000 | 5.0x | 0.1 | 1.5 | 0.98x | 0.70x | eager |" in md


def test_missing_or_broken_report_json(tmp_path):
    with pytest.raises(DataError, match="no report.json"):
        render_report(tmp_path)
    (tmp_path / "report.json").write_text("{}")
    with pytest.raises(DataError, match="not a torchslim report"):
        render_report(tmp_path)
