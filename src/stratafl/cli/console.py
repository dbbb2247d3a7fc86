"""What `strata` prints: the live view of a run, its traffic, the promise check's table."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from stratafl.status import RoundStatus

if TYPE_CHECKING:
    from stratafl.launch.report import PromiseCheck, RoundSummary

console = Console()


class RunView:
    """A `RunProgress` on the console: a bar over the rounds, then a spinner over the baselines."""

    def __init__(self, rounds: int) -> None:
        self._bar = Progress(
            TextColumn("[bold]round"),
            MofNCompleteColumn(),
            BarColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self._task = self._bar.add_task("rounds", total=rounds, status="starting")
        self._status = console.status("promise check: training the baselines")

    def federation_up(self, seconds: float) -> None:
        console.print(f"federation up in {seconds:.1f} s")
        self._bar.start()

    def rounds_done(self, rounds: list[RoundSummary], total: int) -> None:
        last = rounds[-1]
        status = (
            f"accuracy {last.accuracy:.4f}  loss {last.loss:.4f}"
            if last.accuracy is not None and last.loss is not None
            else str(last.status)
        )
        finished = sum(r.status == RoundStatus.FINISHED for r in rounds)  # failed ones rerun
        self._bar.update(self._task, completed=finished, total=total, status=status)

    def session_done(self, rounds: list[RoundSummary]) -> None:
        self._bar.stop()
        print_traffic(rounds)

    def baselines_started(self) -> None:
        self._status.start()

    def baselines_step(self, step: str) -> None:
        self._status.update(f"promise check: {step}")

    def close(self) -> None:
        self._bar.stop()
        self._status.stop()


def print_traffic(rounds: list[RoundSummary]) -> None:
    """Every byte counts: what the session moved, and how long its rounds took."""
    up = sum(r.bytes_up for r in rounds)
    down = sum(r.bytes_down for r in rounds)
    updates = sum(r.traffic.get("clients_up", 0) for r in rounds)
    raw = sum(r.traffic.get("updates_raw", 0) for r in rounds)
    ratio = f" for {raw / 1e6:.1f} MB raw ({updates / raw:.1%})" if raw else ""
    console.print(
        f"{len(rounds)} rounds, median {statistics.median(r.duration for r in rounds):.2f} s"
        " each; "
        f"moved {up / 1e6:.1f} MB up and {down / 1e6:.1f} MB down (both tiers); "
        f"updates {updates / 1e6:.1f} MB on the wire{ratio}"
    )


def print_promise(promise: PromiseCheck) -> None:
    table = Table(title=f"The promise check (same budget: {promise.epochs_budget} epochs)")
    table.add_column("model")
    table.add_column("test accuracy", justify="right")
    table.add_row("centralized (pooled data)", f"{promise.centralized_accuracy:.4f}")
    table.add_row("[bold]federated[/]", f"[bold]{promise.federated_accuracy:.4f}[/]")
    table.add_row("best client alone", f"{promise.client_alone_best:.4f}")
    table.add_row("mean client alone", f"{promise.client_alone_mean:.4f}")
    console.print(table)
    console.print(
        f"gap to centralized: {promise.gap_to_centralized:+.4f}   "
        f"gain over the best client alone: {promise.gain_over_best_client:+.4f}"
    )


def print_paths(paths: Mapping[str, Path | None]) -> None:
    """One ``label: path`` line each, never wrapped and never read as markup, so a path can
    be copied from the terminal whole (brackets and all)."""
    for label, path in paths.items():
        if path is not None:
            console.print(f"{label}: {path}", markup=False, highlight=False, soft_wrap=True)
