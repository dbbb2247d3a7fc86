"""Where the tests' files are, named once: the apps client processes load by path, the
repository's folders."""

from __future__ import annotations

from pathlib import Path

SUPPORT = Path(__file__).resolve().parent
REPOSITORY = SUPPORT.parents[1]
EXAMPLES = REPOSITORY / "examples"

TEST_APP = f"{SUPPORT / 'federation_apps.py'}:make_app"
"""The small client app of federation_apps.py, loaded by path in every client process."""

DASHBOARD_APP = f"{SUPPORT / 'dashboard_app.py'}:make_app"
CRASHING_APP = f"{SUPPORT / 'crashing_app.py'}:make_app"
TORCH_EXAMPLE = f"{EXAMPLES / 'fashion_mnist_torch.py'}:make_app"
PULL_APP = f"{SUPPORT / 'swarm_apps.py'}:make_app"
"""A drift-correctable app that refuses the server's state: swarm sessions with FedDyn."""
RECORDING_APP = f"{SUPPORT / 'federation_apps.py'}:make_recording_app"
"""`federation_apps.RecordingApp`: writes the settings and configs it got to its data path."""
