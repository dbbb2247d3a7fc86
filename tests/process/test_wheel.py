"""The release is whole: the sdist is built, the wheel is built from the sdist (as
`python -m build` does for a release), and that wheel, installed outside the checkout,
reports the checkout's version and runs `strata run` with the packaged demo app.

The release is built offline (``python -m build --no-isolation``) from a copy of the
checkout's sources, so that the build leaves nothing in the checkout and no stale ``build/``
folder can hand the wheel a module the sources no longer have. The copy has no git
metadata, so the version setuptools-scm reads from the checkout is handed to the build in
``SETUPTOOLS_SCM_PRETEND_VERSION``: the test checks that it reaches the sdist's name, the
wheel's and ``stratafl.__version__``. The wheel is installed into a fresh virtualenv that
sees the checkout venv's dependencies through a ``.pth`` line: a plain path line is appended
to ``sys.path`` without running that folder's own ``.pth`` files, so the editable install of
the checkout stays invisible and ``stratafl`` comes from the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest
from setuptools_scm import get_version

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


def _run(command: list[str | Path], cwd: Path, timeout: float = 300, **extra_env: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(extra_env)
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


def _build_release(folder: Path, version: str) -> tuple[Path, Path, Path]:
    """The sdist, then the wheel built from it, of a copy of the checkout's sources."""
    source = folder / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "src",
        source / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
    )
    dist = folder / "dist"
    build = [sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, source]
    _run(build, folder, SETUPTOOLS_SCM_PRETEND_VERSION=version)
    (sdist,) = dist.glob("stratafl-*.tar.gz")
    (wheel,) = dist.glob("stratafl-*.whl")
    return sdist, wheel, source / "src"


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


def test_the_sdist_builds_a_wheel_that_reports_its_version_and_runs_a_federation(tmp_path):
    version = get_version(root=str(ROOT))
    sdist, wheel, sources = _build_release(tmp_path, version)
    assert sdist.name == f"stratafl-{version}.tar.gz"
    assert wheel.name.startswith(f"stratafl-{version.replace('-', '_')}-py3-none-any")
    modules = {str(p.relative_to(sources)) for p in (sources / "stratafl").rglob("*.py")}
    in_sdist = {n.split("/", 1)[1] for n in tarfile.open(sdist).getnames() if "/" in n}
    assert {f"src/{module}" for module in modules} - in_sdist == set(), "modules missing"
    assert {"LICENSE", "PKG-INFO", "pyproject.toml", "README.md"} <= in_sdist

    packaged = set(zipfile.ZipFile(wheel).namelist())
    assert modules - packaged == set(), "modules missing from the wheel"
    assert {"stratafl/py.typed", "stratafl/proto/stratafl.proto"} <= packaged
    assert "stratafl/store/migrations/script.py.mako" in packaged  # with versions/*.py above
    assert "stratafl/apps/fashion_mnist.py" in packaged
    metadata = zipfile.ZipFile(wheel).read(f"stratafl-{version}.dist-info/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert f"stratafl-{version}.dist-info/licenses/LICENSE" in packaged

    venv = _venv_with(wheel, tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    python = venv / "bin" / "python"
    where = _run([python, "-c", "import stratafl; print(stratafl.__file__)"], outside)
    assert Path(where.strip()).is_relative_to(venv), f"stratafl imported from {where}"
    assert _run([venv / "bin" / "strata", "--version"], outside).split() == ["stratafl", version]

    report = outside / "report.json"
    command = [venv / "bin" / "strata", "run", "--clients", "2", "--combiners", "1"]
    command += ["--rounds", "1", "--no-baselines", "--report", report, "--workdir", outside / "fed"]
    stdout = _run(command, outside, timeout=600)
    assert "app stratafl.apps.fashion_mnist:make_app" in " ".join(stdout.split())
    result = json.loads(report.read_text())
    assert result["app"] == "stratafl.apps.fashion_mnist:make_app"
    assert [r["status"] for r in result["rounds"]] == ["finished"]
    assert result["rounds"][0]["accuracy"] > 0.5
