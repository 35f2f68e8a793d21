"""Atomic file writes: write to a temporary name in the same folder, then rename.

A crash or Ctrl-C leaves the old file (or nothing), never a half-written one. The temporary is
named ``.NAME.torchslim-XXXX.tmp``; one that a killed run left behind is removed by the next write
of the same output. Finished outputs get the modes the user's umask gives (``mkstemp`` alone
would make every file 0600 and every folder 0700).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from torchslim.errors import OutputExistsError

_TMP_TAG = "torchslim-"


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (``os.umask`` alone must set
    it to read it, a window in which another thread's new files would get mode 0666)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _clean_stale(path: Path) -> None:
    """Remove temporaries of ``path`` that an earlier, killed torchslim run left behind."""
    for old in path.parent.glob(f".{glob_escape(path.name)}.{_TMP_TAG}*.tmp"):
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def clean_stale_in(folder: str | Path) -> list[Path]:
    """Remove every temporary that a killed torchslim run left in ``folder`` (``.NAME.torchslim-XXXX.tmp``:
    only names torchslim itself creates), e.g. a run folder's ``best.safetensors`` that was being written.
    Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for old in folder.glob(f".*.{_TMP_TAG}*.tmp"):
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
        removed.append(old)
    return removed


def glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_TMP_TAG}", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        if os.path.exists(tmp):
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


OUTPUT_MARK = ".torchslim-output"  # written into every output folder; only such folders are replaced


def check_out_dir(path: str | Path, *, force: bool = False, inputs: Iterable[str | Path | None] = ()) -> Path:
    """Refuse, before any work, an output folder that would lose a user's files.

    Refused always: the current folder or one above it, a folder holding one of ``inputs`` (or an
    input itself, or a folder inside one). Refused without ``force``: an existing path. Refused
    even with ``force``: an existing path torchslim did not write (no ``.torchslim-output`` mark).
    """
    path = Path(path)
    full = path.resolve()
    cwd = Path.cwd().resolve()
    if full == cwd or full in cwd.parents:
        raise OutputExistsError(f"output folder {path} is the current folder or holds it; choose a new folder")
    for inp in inputs:
        if not inp:
            continue
        try:  # an input may be YAML text or a name, not a path (too long for one: OSError)
            src = Path(inp)
            if not src.exists():
                continue
        except (OSError, ValueError):
            continue
        src = src.resolve()
        if src == full or full in src.parents or src in full.parents:
            raise OutputExistsError(f"output folder {path} would hold or replace the input {inp}; choose another folder")
    if path.exists() or path.is_symlink():
        if not force:
            raise OutputExistsError(f"{path} already exists; choose another output or pass --force to replace it")
        if not path.is_dir() or path.is_symlink() or not (path / OUTPUT_MARK).is_file():
            raise OutputExistsError(
                f"{path} exists and is not an output folder torchslim wrote (no {OUTPUT_MARK}); --force replaces only "
                "those. Choose a new folder or remove it yourself"
            )
    return path


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path``.

    Raises :class:`OutputExistsError` before any work if ``path`` exists and ``force`` is false,
    or if it is not replaceable at all (see :func:`check_out_dir`).
    """
    path = check_out_dir(path, force=force)
    _clean_stale(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.{_TMP_TAG}", suffix=".tmp"))
    try:
        yield tmp
        (tmp / OUTPUT_MARK).write_text("written by torchslim; `--force` may replace this folder\n")
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
