"""`strata experiment NAME|all|list`: run the studies of docs/results from a shell.

Each study is a command of its own (``strata experiment heterogeneity --quick``); the
work is `stratafl.experiments`, this module only parses flags and prints.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from stratafl.cli.console import console, print_paths
from stratafl.cli.folders import new_work_folder
from stratafl.experiments import STUDIES, Size, Study, StudyRun

experiment_cli = typer.Typer(
    help="Run the studies of docs/results on real federations: JSON, PNG plots, a table.",
    no_args_is_help=True,
)

Quick = Annotated[
    bool, typer.Option("--quick", help="a few clients, rounds and examples: a smoke test")
]
Seeds = Annotated[
    int | None, typer.Option("--seeds", help="seeds 0..N-1; default 1 with --quick, else 3")
]
AppSpec = Annotated[
    str | None,
    typer.Option("--app", help="module:attr or file.py:attr; default: the Fashion-MNIST app"),
]
Out = Annotated[
    Path | None,
    typer.Option(
        "--out",
        help="results go to OUT/<study>/ (default: a new ./strata-experiment-TIMESTAMP; "
        "pass docs/results to refresh the published ones)",
    ),
]


def _study_run(quick: bool, seeds: int | None, app: str | None, out: Path | None) -> StudyRun:
    size = Size.QUICK if quick else Size.FULL
    count = seeds if seeds is not None else (1 if quick else 3)
    folder = out if out is not None else new_work_folder("experiment")
    print_paths({"results": folder})
    return StudyRun(size, tuple(range(count)), folder, app, log=lambda line: console.print(line))


def _run(study: Study, run: StudyRun) -> None:
    started = time.monotonic()
    console.print(f"[bold]{study.name}[/]: {study.title} ({run.size}, seeds {list(run.seeds)})")
    study.run(run)
    console.print(
        f"{study.name}: written to {run.out / study.name} in {time.monotonic() - started:.0f} s"
    )


def _command(study: Study) -> Callable[..., None]:
    def command(
        quick: Quick = False, seeds: Seeds = None, app: AppSpec = None, out: Out = None
    ) -> None:
        _run(study, _study_run(quick, seeds, app, out))

    command.__doc__ = study.title
    return command


for _study in STUDIES.values():
    experiment_cli.command(_study.name)(_command(_study))


@experiment_cli.command("all")
def run_all(
    quick: Quick = False, seeds: Seeds = None, app: AppSpec = None, out: Out = None
) -> None:
    """Every study, one after another."""
    run = _study_run(quick, seeds, app, out)
    for study in STUDIES.values():
        _run(study, run)


@experiment_cli.command("list")
def list_studies() -> None:
    """The studies and what each shows."""
    for study in STUDIES.values():
        console.print(f"{study.name:<16} {study.title}")
