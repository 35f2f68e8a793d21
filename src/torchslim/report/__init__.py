"""Reports of a compression run: HTML with embedded PNG plots, Markdown, and the JSON they come from.

``render_report(folder)`` (re-)draws ``report.html``, ``report.md`` and ``figures/`` from the
``report.json`` that ``torchslim compress`` writes; ``torchslim report DIR`` calls it.
"""

from torchslim.report.render import render_report

__all__ = ["render_report"]
