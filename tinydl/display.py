"""All of the CLI's terminal output, in one place, so the training loop itself stays plain.

With a terminal: a rich header panel, a live progress bar per epoch, one persistent row per epoch
and a summary table. Without one (a pipe, a log file, CI) or with ``--no-progress``: plain lines.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

EPOCH_COLUMNS = ("epoch", "train loss", "test loss", "test acc", "lr", "time", "samples/s")


class TrainDisplay:
    def __init__(self, progress: bool = True, console: Console | None = None):
        self.console = console or Console(highlight=False)
        # off a terminal (logs, pipes, CI) a line is a line: no wrapping at an assumed 80 columns
        self.console.soft_wrap = not self.console.is_terminal
        self.live = progress and self.console.is_terminal
        self._progress: Progress | None = None
        self._task = None
        self._rows: list[tuple] = []

    # --- one-off blocks ------------------------------------------------------------------------
    def header(self, title: str, fields: dict) -> None:
        if self.live:
            grid = Table.grid(padding=(0, 2))
            grid.add_column(style="bold cyan")
            grid.add_column()
            for k, v in fields.items():
                grid.add_row(k, str(v))
            self.console.print(Panel(grid, title=f"[bold]{title}", expand=False))
        else:
            self.console.print(title)
            for k, v in fields.items():
                self.console.print(f"  {k}: {v}")

    def message(self, text: str, style: str = "") -> None:
        self.console.print(text, style=style or None)

    def error(self, text: str) -> None:
        self.console.print(f"error: {text}", style="bold red" if self.live else None)

    # --- per epoch -----------------------------------------------------------------------------
    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        self._t0 = time.perf_counter()
        if not self.live:
            return
        self._progress = Progress(
            TextColumn(f"epoch {epoch + 1}/{epochs}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("<"), TimeRemainingColumn(),
            TextColumn("{task.fields[rate]:>8.1f} samples/s  loss {task.fields[loss]:.4f}"),
            console=self.console, transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=batches, rate=0.0, loss=float("nan"))

    def step(self, running_loss: float, samples_per_s: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=1, loss=running_loss, rate=samples_per_s)

    def epoch_end(self, row: dict) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        values = (f"{row['epoch']}", f"{row['train_loss']:.4f}", f"{row['test_loss']:.4f}",
                  f"{100 * row['test_acc']:.2f}%", f"{row['lr']:.3g}", f"{row['time_s']:.1f}s",
                  f"{row['samples_per_s']:.0f}")
        self._rows.append(values)
        self.console.print("  ".join(f"{k}={v}" for k, v in zip(EPOCH_COLUMNS, values)),
                           style="green" if self.live else None)

    def stop_progress(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    # --- the end -------------------------------------------------------------------------------
    def summary(self, fields: dict) -> None:
        if self.live and self._rows:
            t = Table(title="epochs")
            for c in EPOCH_COLUMNS:
                t.add_column(c, justify="right")
            for r in self._rows:
                t.add_row(*r)
            self.console.print(t)
        self.header("summary", fields)

    def table(self, title: str, columns: list[str], rows: list[list]) -> None:
        """A generic table (eval's confusion matrix, predict's probabilities)."""
        if self.live:
            t = Table(title=title)
            for c in columns:
                t.add_column(str(c), justify="right")
            for r in rows:
                t.add_row(*[str(v) for v in r])
            self.console.print(t)
        else:
            self.console.print(title)
            self.console.print("  " + "\t".join(str(c) for c in columns))
            for r in rows:
                self.console.print("  " + "\t".join(str(v) for v in r))
