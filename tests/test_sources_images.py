"""Issue 19: an image folder with unreadable images is a DataError naming the file (PIL's
UnidentifiedImageError escaped as a raw traceback)."""

from pathlib import Path

import pytest
from PIL import Image

from torchslim.errors import DataError
from torchslim.sources import resolve_data


def test_an_unreadable_first_image_is_named(tmp_path: Path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        (tmp_path / c / "x.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(DataError, match=r"a/x.png is not a readable image .*; remove or replace it"):
        resolve_data(str(tmp_path), "test")


def test_an_unreadable_later_image_is_named_when_read(tmp_path: Path):
    for c in ("a", "b"):
        (tmp_path / "test" / c).mkdir(parents=True)
        Image.new("L", (8, 8)).save(tmp_path / "test" / c / "ok.png")
    (tmp_path / "test" / "b" / "zz.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"b/zz.png is not a readable image"):
        list(resolve_data(str(tmp_path), "test"))
    (tmp_path / "test" / "b" / "zz.png").unlink()
    (x, y), = list(resolve_data(str(tmp_path), "test"))
    assert tuple(x.shape) == (2, 1, 8, 8) and y.tolist() == [0, 1]


def test_a_folder_without_images_says_how_to_lay_them_out(tmp_path: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "notes.txt").write_text("no images")
    with pytest.raises(DataError, match=r"holds no images .*; put each class's images in a sub-folder named after it \(.*/CLASS/image.png\)"):
        resolve_data(str(tmp_path), "test")
