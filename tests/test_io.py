"""Atomic writes: umask modes, and temporaries a killed run left are cleaned by the next write."""

import os
import stat

from torchslim.io import atomic_dir, atomic_path, write_json


def _mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_outputs_get_the_umask_modes(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        with atomic_dir(tmp_path / "out") as d:
            (d / "f.txt").write_text("x")
        os.umask(0o077)
        write_json(tmp_path / "b.json", {"x": 1})
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.json") == 0o644
    assert _mode(tmp_path / "out") == 0o755
    assert _mode(tmp_path / "b.json") == 0o600


def test_stale_temporaries_of_the_same_output_are_removed(tmp_path):
    stale_file = tmp_path / ".m.safetensors.torchslim-ab12cd.tmp"
    stale_file.write_bytes(b"half")
    stale_dir = tmp_path / ".out.torchslim-zz99.tmp"
    stale_dir.mkdir()
    (stale_dir / "part.bin").write_bytes(b"half")
    mine = [tmp_path / ".m.safetensors.notes.tmp", tmp_path / ".other.safetensors.torchslim-ab12cd.tmp"]
    for p in mine:
        p.write_text("user's")
    with atomic_path(tmp_path / "m.safetensors") as tmp:
        assert tmp.name.startswith(".m.safetensors.torchslim-") and tmp.name.endswith(".tmp")
        tmp.write_bytes(b"new")
    with atomic_dir(tmp_path / "out") as d:
        (d / "f.txt").write_text("x")
    assert not stale_file.exists() and not stale_dir.exists()
    assert all(p.read_text() == "user's" for p in mine)  # other outputs' and users' files stay
    assert (tmp_path / "m.safetensors").read_bytes() == b"new" and (tmp_path / "out" / "f.txt").exists()


def test_inputs_that_are_not_paths_are_skipped(tmp_path):
    from torchslim.io import check_out_dir

    recipe_text = "steps:\n" + "  - type: evaluate\n" * 400  # YAML text, longer than any file name
    assert check_out_dir(tmp_path / "out", inputs=[recipe_text, "fashion-mnist", None]) == tmp_path / "out"
