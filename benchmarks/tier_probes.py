"""What the benchmarks read from a running federation's processes: CPU time, memory, the
combiners' metrics, and py-spy profiles (raw stacks for tables, SVG flame graphs to look at).

Imported by the benchmark scripts of this folder (run as ``python benchmarks/NAME.py``,
which puts this folder on the import path).
"""

from __future__ import annotations

import collections
import html
import json
import os
import shutil
import signal
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from stratafl.launch.federation import LocalFederation

MIB = 2**20


def pid_of(federation: LocalFederation, name: str) -> int:
    """The process id of the tier called ``name`` (``controller``, ``combiner-0``, ...)."""
    return next(t.process.pid for t in federation.group.tiers if t.name == name)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process used so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kib(pid: int) -> dict[str, int]:
    """The process's VmRSS, VmHWM (peak RSS), RssAnon and RssFile in KiB (Linux /proc)."""
    wanted = {"VmRSS", "VmHWM", "RssAnon", "RssFile"}
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in wanted:
            found[key] = int(value.split()[0])
    return found


class MemorySampler:
    """Samples a process's anonymous and file-backed RSS every ``interval`` seconds in a
    thread, keeping each one's peak: VmHWM alone does not say which of them peaked."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_anon_kib = 0
        self.peak_file_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                now = memory_kib(self.pid)
            except OSError:
                return
            self.peak_anon_kib = max(self.peak_anon_kib, now.get("RssAnon", 0))
            self.peak_file_kib = max(self.peak_file_kib, now.get("RssFile", 0))


def combiner_metrics(federation: LocalFederation, index: int = 0) -> dict[str, float]:
    """A combiner's Prometheus samples, scraped as an admin; keys are the sample names
    with their labels, e.g. ``stratafl_combiner_phase_seconds_total{phase=stage}``."""
    tier = next(t for t in federation.group.tiers if t.name == f"combiner-{index}")
    assert tier.ready_file is not None, "the launcher gives every combiner a ready file"
    url = json.loads(tier.ready_file.read_text())["metrics_url"]
    token = federation.admin_token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    ca = federation.ca_file
    verify = ssl.create_default_context(cafile=str(ca)) if ca else True
    response = httpx.get(url, headers=headers, verify=verify, timeout=30)
    response.raise_for_status()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


@contextmanager
def py_spy(folder: Path | None, pids: dict[str, int], native: bool = False) -> Iterator[None]:
    """Record each process in ``pids`` with py-spy (100 Hz) while the block runs: raw
    collapsed stacks into ``folder/NAME.txt`` (for `top_functions`) and a flame graph
    into ``folder/NAME.svg``. Nothing is recorded when ``folder`` is None."""
    if folder is None:
        yield
        return
    tool = shutil.which("py-spy")
    if tool is None:
        raise SystemExit("--py-spy needs py-spy: pip install py-spy")
    folder.mkdir(parents=True, exist_ok=True)
    spies = [
        subprocess.Popen(
            [
                tool,
                "record",
                "--pid",
                str(pid),
                "--format",
                "raw",
                "--rate",
                "100",
                "--output",
                str(folder / f"{name}.txt"),
                "--native" if native else "--nonblocking",  # py-spy allows one of the two
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in pids.items()
    ]
    try:
        yield
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            spy.wait()
    for name in pids:
        raw = folder / f"{name}.txt"
        if raw.exists():
            (folder / f"{name}.svg").write_text(flame_graph(raw, title=name))


def top_functions(path: Path, count: int = 12) -> list[tuple[str, float]]:
    """Share of samples in which each function is on the stack (inclusive), highest first."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        total += int(samples)
        for frame in set(stack.split(";")):
            inclusive[frame] += int(samples)
    return [(frame, n / total) for frame, n in inclusive.most_common(count)] if total else []


def flame_graph(raw: Path, title: str, width: int = 1200) -> str:
    """An SVG flame graph of py-spy's raw collapsed stacks: one box per frame, as wide as
    its share of the samples, each caller under its callees; hover a box for its name."""
    tree = _Frame()
    for line in raw.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if stack and samples.isdigit():
            tree.add(stack.split(";"), int(samples))
    row, total = 16, max(tree.samples, 1)
    height = (tree.depth() + 2) * row
    boxes: list[str] = []

    def draw(frame: _Frame, x: float, level: int) -> None:
        for name, kid in sorted(frame.kids.items()):
            w = width * kid.samples / total
            if w >= 0.5:
                y = height - (level + 2) * row
                label = html.escape(name)
                text = label[: int(w / 7)] if w > 30 else ""
                boxes.append(
                    f"<g><title>{label} ({100 * kid.samples / total:.1f} %)</title>"
                    f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 1}" '
                    f'fill="hsl({20 + len(name) % 40},80%,60%)"/>'
                    f'<text x="{x + 2:.1f}" y="{y + row - 4}" font-size="10">{text}</text></g>'
                )
                draw(kid, x, level + 1)
            x += w

    draw(tree, 0.0, 0)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="monospace"><text x="4" y="14" font-size="12">'
        f"{html.escape(title)}: {tree.samples} samples at 100 Hz</text>\n"
        + "\n".join(boxes)
        + "\n</svg>\n"
    )


class _Frame:
    """A node of the merged call tree: its samples and its callees by name."""

    def __init__(self) -> None:
        self.samples = 0
        self.kids: dict[str, _Frame] = {}

    def add(self, stack: list[str], samples: int) -> None:
        self.samples += samples
        if stack:
            self.kids.setdefault(stack[0], _Frame()).add(stack[1:], samples)

    def depth(self) -> int:
        return 1 + max((kid.depth() for kid in self.kids.values()), default=0)
