"""Issue 19: CLI numbers out of range, a metric that cannot be called, SIGTERM, and the lazy parser.

Every refusal is exit code 2 with one ``torchslim ... error:`` line and no traceback, before any work.
"""

import os
import signal
import time
from pathlib import Path

import pytest

from torchslim.checkpoint import save_checkpoint
from torchslim.cli import build_parser, main
from torchslim.models import create_model


def run(capsys, *argv):
    try:
        rc = main(list(argv))
    except SystemExit as exc:  # argparse refusals
        rc = exc.code
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    return save_checkpoint(create_model("lenet300"), tmp_path / "m.safetensors", architecture="lenet300")


@pytest.mark.parametrize("n", ["0", "-1", "100000", "100000000000000000000", "x"])
def test_threads_out_of_range_is_a_usage_error(capsys, ckpt: Path, n: str):
    rc, _, err = run(capsys, "--threads", n, "eval", str(ckpt))
    assert rc == 2
    assert "argument --threads" in err and "1 to 1024" in err and "Traceback" not in err


@pytest.mark.parametrize(("argv", "expected"), [
    (["eval", "{ck}", "--runs", "0"], "--runs must be 1 to 100,000, got 0"),
    (["eval", "{ck}", "--runs", "1000000000000"], "--runs must be 1 to 100,000, got 1000000000000"),
    (["bench", "{ck}", "--batch", "100000000000000000000"], "--batch sizes must be 1 to 65,536"),
    (["bench", "{ck}", "--batch", "0"], "--batch sizes must be 1 to 65,536, got 0"),
    (["bench", "{ck}", "--runs", "1000000000000"], "--runs must be 1 to 100,000"),
    (["bench", "{ck}", "--warmup", "-1"], "warm-up runs must be 0 to 100,000, got -1"),
    (["eval", "{ck}", "--dataset", "digits", "--metric", "os:system"], "--metric os:system cannot be called as system(output, target)"),
])  # fmt: skip
def test_numbers_and_metrics_are_checked_before_work(capsys, ckpt: Path, argv: list[str], expected: str):
    rc, _, err = run(capsys, "--threads", "1", *[a.format(ck=ckpt) for a in argv])
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("torchslim: error: ")
    assert expected in lines[0]


def test_parser_imports_only_the_named_subcommand():
    parser = build_parser(["--threads", "1", "report", "somewhere"])
    sub = next(a for a in parser._actions if a.dest == "command")
    assert sorted(sub.choices) == ["report"]
    full = next(a for a in build_parser()._actions if a.dest == "command")
    assert {"compress", "eval", "quantize", "report", "train"} <= set(full.choices)
    # A typo still gets argparse's list of every command.
    typo = next(a for a in build_parser(["evl"])._actions if a.dest == "command")
    assert "eval" in typo.choices


def test_sigterm_returns_143_and_runs_the_cleanup(capsys, tmp_path: Path, monkeypatch):
    import torchslim.report as report_mod

    cleaned = []

    def killed(folder):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises here
            raise AssertionError("SIGTERM did not interrupt the command")
        finally:
            cleaned.append(folder)

    monkeypatch.setattr(report_mod, "render_report", killed)
    rc, _, err = run(capsys, "report", str(tmp_path))
    assert rc == 143 and "terminated" in err and cleaned == [str(tmp_path)]
    assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None)
