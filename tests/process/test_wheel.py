"""The built wheel is whole: installed outside the checkout, `strata run` works with the
packaged demo app.

The wheel is built offline (``pip wheel --no-build-isolation --no-index``) from a copy of the
checkout's sources, so that the build leaves nothing in the checkout and no stale ``build/``
folder can hand the wheel a module the sources no longer have. It is installed into a fresh
virtualenv that sees the checkout venv's dependencies through a ``.pth`` line: a plain path
line is appended to ``sys.path`` without running that folder's own ``.pth`` files, so the
editable install of the checkout stays invisible and ``stratafl`` comes from the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from stratafl.data.fashion_mnist import FILES, SYSTEM_DIR
from tests.support.paths import REPOSITORY

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not all((SYSTEM_DIR / name).is_file() for name in FILES.values()),
        reason="needs `apt-get install dataset-fashion-mnist`",
    ),
]

ROOT = REPOSITORY


def _run(command: list[str | Path], cwd: Path, timeout: float = 300) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _build_wheel(folder: Path) -> tuple[Path, Path]:
    source = folder / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "src",
        source / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
    )
    dist = folder / "dist"
    pip = [sys.executable, "-m", "pip"]
    _run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", dist, source],
        folder,
    )
    (wheel,) = dist.glob("stratafl-*.whl")
    return wheel, source / "src"


def _venv_with(wheel: Path, folder: Path) -> Path:
    venv = folder / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], folder)
    python = venv / "bin" / "python"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            python,
            "install",
            "--no-deps",
            "--no-index",
            wheel,
        ],
        folder,
    )
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], folder)
    (Path(purelib.strip()) / "_checkout_dependencies.pth").write_text(
        sysconfig.get_path("purelib") + "\n"
    )
    return venv


def test_the_wheel_runs_a_federation_with_the_packaged_demo_app(tmp_path):
    wheel, sources = _build_wheel(tmp_path)
    packaged = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(sources)) for p in (sources / "stratafl").rglob("*.py")}
    assert modules - packaged == set(), "modules missing from the wheel"
    assert {"stratafl/py.typed", "stratafl/proto/stratafl.proto"} <= packaged
    assert "stratafl/store/migrations/script.py.mako" in packaged  # with versions/*.py above
    assert "stratafl/apps/fashion_mnist.py" in packaged

    venv = _venv_with(wheel, tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    where = _run(
        [venv / "bin" / "python", "-c", "import stratafl; print(stratafl.__file__)"], outside
    )
    assert Path(where.strip()).is_relative_to(venv), f"stratafl imported from {where}"

    report = outside / "report.json"
    command = [venv / "bin" / "strata", "run", "--clients", "2", "--combiners", "1"]
    command += ["--rounds", "1", "--no-baselines", "--report", report, "--workdir", outside / "fed"]
    stdout = _run(command, outside, timeout=600)
    assert "app stratafl.apps.fashion_mnist:make_app" in " ".join(stdout.split())
    result = json.loads(report.read_text())
    assert result["app"] == "stratafl.apps.fashion_mnist:make_app"
    assert [r["status"] for r in result["rounds"]] == ["finished"]
    assert result["rounds"][0]["accuracy"] > 0.5
