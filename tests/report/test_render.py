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
    assert ("| stage | accuracy (%) | file size (B) | compression | latency b1 (ms) | latency b64 (ms) | timed as | MACs "
            "| sparsity (%) |") in md
    assert "| 1. prune | 89.5 | 20,000 | 5.0x | 0.1 | 1.5 | eager |" in md
    assert "| 2. share | 89.4 | 4,000 | 25.0x | 0.1 | 1.5 | compile_int8 |" in md
    assert "| fc1 | Linear | Linear | 1,000 | 1,000 | 0 | 0.9 | 32 | 5 |" in md
    assert "| fc1 | 1,000 | 10 | 5 | 3.1 | 4 | 2.9 |" in md
    assert "![Weight histograms before and after](figures/weight_histograms.png)" in md


def test_missing_or_broken_report_json(tmp_path):
    with pytest.raises(DataError, match="no report.json"):
        render_report(tmp_path)
    (tmp_path / "report.json").write_text("{}")
    with pytest.raises(DataError, match="not a torchslim report"):
        render_report(tmp_path)
