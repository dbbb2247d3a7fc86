"""A hostile combiner: the real combiner, enrolled with a genuine token, whose partials the
site's operator alters before they leave (it adds `ALTERATION` to every value).

Run as ``python -m tests.support.hostile_combiner OPTIONS_JSON`` (`start_hostile_combiner`
does): the process serves the combiner exactly as ``python -m stratafl.launch.tier
combiner`` would, over real sockets, except for what it does to each partial. Nothing in
the test process is patched; the alteration lives only in the attacker's own process.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np

from stratafl.combiner.main import CombinerOptions, serve_combiner
from stratafl.combiner.runner import CombinerRoundRunner, RoundResult
from stratafl.launch.federation import LocalFederation
from stratafl.launch.processes import Tier
from stratafl.launch.tier import TierKind, options_from_json, options_to_json
from stratafl.proto import stratafl_pb2 as pb
from stratafl.security import Role

ALTERATION = 100.0
"""What the hostile combiner adds to every value of its partial."""
ROOT = Path(__file__).resolve().parents[2]

Run = Callable[[CombinerRoundRunner, pb.RoundSpec], Awaitable[RoundResult]]


def altering(run: Run) -> Run:
    """``run``, with `ALTERATION` added to the partial it returns."""

    async def run_and_alter(runner: CombinerRoundRunner, spec: pb.RoundSpec) -> RoundResult:
        result = await run(runner, spec)
        if result.partial is not None:
            shift = np.float32(ALTERATION)
            result.partial = {name: value + shift for name, value in result.partial.items()}
        return result

    return run_and_alter


def start_hostile_combiner(fed: LocalFederation, name: str) -> str:
    """Start the hostile combiner ``name`` with a token the admin issued it; returns its
    gRPC address once it registered. The federation stops it with its own tiers."""
    options = CombinerOptions(
        controller=fed.url,
        combiner_id=name,
        workdir=fed.workdir / name,
        ready_file=fed.group.ready_file(name),
        token_file=fed.token_file(name, Role.COMBINER),
        ca_file=fed.ca_file,
    )
    command = [sys.executable, "-m", __name__, options_to_json(options)]
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths), PYTHONUNBUFFERED="1")
    log_path = fed.group.log_path(name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL
        )
    tier = Tier(name, process, log_path, options.ready_file)
    fed.group.tiers.append(tier)
    return str(json.loads(tier.wait_ready())["grpc_address"])


def main() -> None:
    options = options_from_json(TierKind.COMBINER, sys.argv[1])
    assert isinstance(options, CombinerOptions)
    CombinerRoundRunner.run = altering(CombinerRoundRunner.run)  # type: ignore[method-assign]
    asyncio.run(serve_combiner(options))


if __name__ == "__main__":
    main()
