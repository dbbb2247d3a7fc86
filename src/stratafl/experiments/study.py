"""What every study shares: its size, its inputs, and the statistics it reports over seeds."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from stratafl.errors import ConfigError
from stratafl.experiments.output import write_json

DEFAULT_APP = "stratafl.apps.fashion_mnist:make_app"
"""The app of the full size: the Fashion-MNIST numpy MLP on all 60,000 training images."""
QUICK_APP = "stratafl.apps.fashion_mnist:make_small_app"
"""The app of the quick size: the same app on a 6,000-image subset."""
MAX_SEEDS = 100
CHECKPOINTS = ".checkpoints"
"""Where a study keeps each finished federation's records until the whole study is done."""
QUICK_NOTE = (
    "**Quick size**: a smoke test of the code path on a few clients, rounds and examples; "
    "its numbers are not results. Run without `--quick` for those.\n"
)


class Size(StrEnum):
    """``quick`` runs the same code path as ``full`` on a few clients, rounds and examples:
    what CI runs; ``full`` is what docs/results reports."""

    QUICK = "quick"
    FULL = "full"


def no_log(line: str) -> None:
    """A log that shows nothing."""


@dataclass(frozen=True)
class StudyRun:
    """One invocation of a study: what to run it on, how big, with which seeds, and where.

    ``app`` None means the size's default (`DEFAULT_APP` or `QUICK_APP`); a study writes
    into ``out / <study name>``.
    """

    size: Size
    seeds: tuple[int, ...]
    out: Path
    app: str | None = None
    log: Callable[[str], None] = field(default=no_log, compare=False)

    def __post_init__(self) -> None:
        if not self.seeds or len(self.seeds) > MAX_SEEDS or min(self.seeds) < 0:
            raise ConfigError(f"give 1 to {MAX_SEEDS} seeds >= 0, got {list(self.seeds)}")

    @property
    def app_spec(self) -> str:
        if self.app is not None:
            return self.app
        return QUICK_APP if self.size is Size.QUICK else DEFAULT_APP

    def folder(self, name: str) -> Path:
        path = self.out / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def resumable(
        self,
        name: str,
        key: Mapping[str, Any],
        federation: Callable[[], list[dict[str, Any]]],
    ) -> list[dict[str, Any]]:
        """The records of one federation of study ``name``, identified by ``key`` (its
        split, attack, seed...): read back if an interrupted run of the same study (same
        size and app) already made them, else run ``federation`` and keep its records in
        ``<folder>/.checkpoints`` until `finished`. A full study runs for hours: a cut
        costs at most the federation in flight. Delete the folder to start over."""
        identity = json.dumps({"size": str(self.size), "app": self.app_spec, **key}, sort_keys=True)
        folder = self.folder(name) / CHECKPOINTS
        folder.mkdir(exist_ok=True)
        path = folder / f"{hashlib.sha256(identity.encode()).hexdigest()[:20]}.json"
        if path.exists():
            try:
                saved = json.loads(path.read_text())
            except (OSError, ValueError):
                saved = {}
            if isinstance(saved, dict) and saved.get("key") == identity:
                self.log(f"{name}: {dict(key)} was done before this run: its records are reused")
                records: list[dict[str, Any]] = saved["records"]
                return records
        records = federation()
        partial = path.with_suffix(".tmp")
        partial.write_text(json.dumps({"key": identity, "records": records}))
        partial.replace(path)  # whole or not at all
        return records

    def described(self, name: str) -> dict[str, Any]:
        """What the results of study ``name`` open with: the study, its size, app and seeds."""
        return {
            "study": name,
            "size": str(self.size),
            "app": self.app_spec,
            "seeds": list(self.seeds),
        }

    def finished(self, name: str) -> None:
        """Drop the checkpoints of study ``name``: its results are written."""
        shutil.rmtree(self.out / name / CHECKPOINTS, ignore_errors=True)

    def publish(
        self,
        name: str,
        results: dict[str, Any],
        plots: Callable[[dict[str, Any], Path], None],
        readme: Callable[[dict[str, Any], StudyRun], str],
    ) -> dict[str, Any]:
        """How every study ends: ``results`` to ``<folder>/results.json``, then its
        ``plots`` into the folder, then its ``readme`` as README.md, and only then its
        checkpoints dropped (`finished`), so a failed plot or README costs no federation.
        Returns ``results``."""
        folder = self.folder(name)
        write_json(folder / "results.json", results)
        plots(results, folder)
        (folder / "README.md").write_text(readme(results, self))
        self.finished(name)
        return results


@dataclass(frozen=True)
class Study:
    """A study of the registry: its command name, a one-line title, and how to run it."""

    name: str
    title: str
    run: Callable[[StudyRun], dict[str, Any]]
    """Runs the study, writes results.json, plots and README.md, returns the results."""


def timed(started: float) -> dict[str, Any]:
    """What a study's results close with: its seconds since ``started`` (a
    `time.monotonic` reading) and when it finished."""
    return {
        "seconds": time.monotonic() - started,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def command(name: str, study: StudyRun) -> str:
    """The command line that reproduces ``study`` (its seeds are 0..N-1, as the CLI gives)."""
    parts = ["strata experiment", name]
    if study.size is Size.QUICK:
        parts.append("--quick")
    parts.append(f"--seeds {len(study.seeds)}")
    if study.app is not None:
        parts.append(f"--app {study.app}")
    return " ".join(parts)


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation over seeds (std 0 for a single seed)."""
    clean = [v for v in values if not math.isnan(v)]
    if not clean:
        return {"mean": math.nan, "std": math.nan}
    std = statistics.stdev(clean) if len(clean) > 1 else 0.0
    return {"mean": statistics.fmean(clean), "std": std}


def spread(values: Sequence[float]) -> dict[str, float]:
    """How a model serves the clients: mean, worst, 10th percentile and std of their scores."""
    ordered = sorted(values)
    if not ordered:
        return {"mean": math.nan, "worst": math.nan, "p10": math.nan, "std": math.nan}
    rank = 0.1 * (len(ordered) - 1)  # linear interpolation, as numpy's default percentile
    low, frac = int(rank), rank - int(rank)
    p10 = ordered[low] + frac * (ordered[min(low + 1, len(ordered) - 1)] - ordered[low])
    return {
        "mean": statistics.fmean(ordered),
        "worst": ordered[0],
        "p10": p10,
        "std": statistics.pstdev(ordered),
    }


def pm(stats: dict[str, float], digits: int = 3) -> str:
    """``0.812 ± 0.004`` for a table (the ± part left out with one seed's zero std)."""
    if math.isnan(stats["mean"]):
        return "n/a"
    if stats.get("std", 0.0) == 0.0:
        return f"{stats['mean']:.{digits}f}"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"
