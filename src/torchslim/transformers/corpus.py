"""Real English sentences for calibration and embedding-fidelity checks, available offline.

The source is the one-line package descriptions that ``apt-cache dumpavail`` prints (about
60,000 unique ones on a Debian machine). Where apt is absent, the first sentences of the Python
standard library's docstrings stand in (a few thousand). Both are real, unlabeled text; the
order is a seeded shuffle so calibration and evaluation sets can be disjoint slices.
"""

from __future__ import annotations

import functools
import random
import re
import shutil
import subprocess

from torchslim.errors import DataError, DataNotFoundError

SOURCES = ("apt", "python-docs")


@functools.cache
def _apt_descriptions() -> tuple[str, ...]:
    if shutil.which("apt-cache") is None:
        return ()
    try:
        out = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, timeout=120, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    seen = {line[len("Description: ") :].strip() for line in out.splitlines() if line.startswith("Description: ")}
    return tuple(sorted(s for s in seen if len(s.split()) >= 2))


@functools.cache
def _python_doc_sentences() -> tuple[str, ...]:
    import pydoc
    import sys
    import warnings

    seen: set[str] = set()
    names = sorted(set(sys.stdlib_module_names))
    for name in names:
        if name.startswith("_") or name in ("antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo"):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mod = __import__(name)
        except Exception:  # any stdlib module may fail to import on some platform
            continue
        objs = [mod, *(getattr(mod, a, None) for a in dir(mod) if not a.startswith("_"))]
        for obj in objs:
            doc = pydoc.getdoc(obj) if obj is not None else ""
            first = re.split(r"(?<=\.)\s", " ".join(doc.split()), maxsplit=1)[0] if doc else ""
            if 3 <= len(first.split()) <= 40 and not first.startswith(("Return", "Built-in")):
                seen.add(first)
    return tuple(sorted(seen))


def load_sentences(n: int = 1024, *, offset: int = 0, seed: int = 0, source: str = "auto") -> list[str]:
    """``n`` unique real sentences, ``offset`` into a seeded shuffle of the source.

    ``source``: ``"apt"`` (Debian package descriptions), ``"python-docs"`` (stdlib docstrings)
    or ``"auto"`` (apt where available). Disjoint sets: ``load_sentences(512)`` for calibration,
    ``load_sentences(1024, offset=512)`` for evaluation.

    >>> s = load_sentences(4)
    >>> len(s), len(set(s))
    (4, 4)
    """
    if n < 1 or offset < 0:
        raise DataError(f"need n >= 1 and offset >= 0 sentences, got n={n}, offset={offset}")
    if source not in (*SOURCES, "auto"):
        raise DataError(f"unknown sentence source {source!r}; choose one of {', '.join(SOURCES)} or auto")
    pool: tuple[str, ...] = ()
    if source in ("apt", "auto"):
        pool = _apt_descriptions()
        if not pool and source == "apt":
            raise DataNotFoundError("`apt-cache dumpavail` printed no package descriptions; run `apt-get update` or use source='python-docs'")
    if not pool:
        pool = _python_doc_sentences()
    if offset + n > len(pool):
        raise DataError(f"asked for sentences {offset}..{offset + n} but the source has only {len(pool)}")
    order = list(pool)
    random.Random(seed).shuffle(order)
    return order[offset : offset + n]


def long_texts(n: int, tokenizer: object, tokens: int = 64, *, seed: int = 0) -> list[str]:
    """``n`` texts, each at least ``tokens`` tokens long, made by joining real sentences.

    Used for latency at a fixed shape (batch x ``tokens`` with no padding).
    """
    pool = load_sentences(min(4000, len(_apt_descriptions()) or len(_python_doc_sentences())), seed=seed + 1)
    out, cur, i = [], [], 0
    while len(out) < n:
        cur.append(pool[i % len(pool)])
        i += 1
        text = ". ".join(cur)
        if len(tokenizer(text)["input_ids"]) >= tokens:  # type: ignore[operator]
            out.append(text)
            cur = []
    return out
