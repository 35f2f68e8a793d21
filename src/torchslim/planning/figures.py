"""The plan's figures as files (drawn by :mod:`torchslim.report.figures` from the plan's data, so a
compress report that carries the plan draws the same ones)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_figures(plan: dict[str, Any], folder: Path) -> list[str]:
    """``pareto.png`` and ``sensitivity.png`` of ``plan`` (a :meth:`PlanResult.to_dict`) into ``folder``."""
    from torchslim.report.figures import plan_pareto, plan_sensitivity, to_png

    (folder / "pareto.png").write_bytes(to_png(plan_pareto(plan)))
    (folder / "sensitivity.png").write_bytes(to_png(plan_sensitivity(plan["sensitivity"])))
    return ["pareto.png", "sensitivity.png"]
