"""What the deployment tests (tests/deploy) share: podman run with the settings
scripts/image.sh renders, and the images that script builds.

One recipe for podman's settings (runc, explicit ulimits: the sandbox lacks
CAP_SYS_RESOURCE and crun refuses its hybrid cgroups), the same for the images, the
compose federation and `podman kube play`; and the images rebuilt whenever the sources
changed, so a test never runs a stale image.
"""

from __future__ import annotations

import os
import subprocess

from tests.support.paths import REPOSITORY

__all__ = ["IMAGE_SCRIPT", "build_images", "podman_env"]

IMAGE_SCRIPT = REPOSITORY / "scripts" / "image.sh"


def podman_env() -> dict[str, str]:
    """This process's environment with ``CONTAINERS_CONF`` naming the containers.conf
    scripts/image.sh renders (``--conf``)."""
    rendered = subprocess.run(
        [str(IMAGE_SCRIPT), "--conf"], capture_output=True, text=True, check=True, timeout=60
    )
    return dict(os.environ, CONTAINERS_CONF=rendered.stdout.strip())


def build_images(env: dict[str, str]) -> None:
    """Build the images of these sources with scripts/image.sh (seconds when they exist
    already: it rebuilds only what changed; minutes on a fresh machine)."""
    subprocess.run([str(IMAGE_SCRIPT)], env=env, check=True, timeout=1200)
