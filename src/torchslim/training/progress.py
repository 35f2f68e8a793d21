"""Rich progress bars for the training loop: one bar per epoch with loss, accuracy, sparsity.

On a terminal the bar updates live; in a log (CI, pipes) rich prints one line per epoch.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)


class EpochProgress:
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(), console=self.console, disable=not enabled or not self.console.is_terminal,
            transient=False,
        )  # fmt: skip

    def __enter__(self) -> EpochProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.progress.__exit__(et, e, tb)

    def start_epoch(self, epoch: int, epochs: int, steps: int, completed: int = 0) -> TaskID:
        return self.progress.add_task(f"epoch {epoch + 1}/{epochs}", total=steps, completed=completed, stats="")

    def advance(self, task: TaskID, **stats: float) -> None:
        if self.enabled:
            self.progress.update(task, advance=1, stats=" ".join(f"{k} {v:.4g}" for k, v in stats.items()))

    def end_epoch(self, task: TaskID, rec: dict[str, Any]) -> None:
        if not self.enabled:
            return
        line = (
            f"epoch {rec['epoch'] + 1}: loss {rec['train_loss']:.4f} train {rec['train_accuracy']:.2f}% "
            f"val {rec['val_accuracy']:.2f}% sparsity {100 * rec['sparsity']:.1f}% lr {rec['lr']:.3g}"
        )
        self.progress.update(task, stats=line.split(": ", 1)[1])
        if not self.console.is_terminal:
            self.console.print(line, highlight=False)
