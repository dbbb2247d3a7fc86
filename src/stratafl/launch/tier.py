"""Start one tier from its typed options: ``python -m stratafl.launch.tier KIND OPTIONS_JSON``.

The launcher runs each tier as a child process through this module instead of building CLI
flags, so a renamed option is a type error in the launcher rather than a child that fails
to parse its command line. The options travel as the JSON of their dataclass (pydantic
serialises and validates it), and `run_tier` calls the tier's serve function. `strata
controller|combiner|client start` build the same dataclasses from their flags and call
`run_tier` too.

Each tier's module is imported only when that tier starts, so a client process does not
load the controller's web stack.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from stratafl.errors import ConfigError, StrataError
from stratafl.logs import configure_logging

if TYPE_CHECKING:
    from stratafl.client.main import ClientOptions
    from stratafl.combiner.main import CombinerOptions
    from stratafl.controller.main import ControllerOptions

    TierOptions: TypeAlias = ControllerOptions | CombinerOptions | ClientOptions


class TierKind(StrEnum):
    CONTROLLER = "controller"
    COMBINER = "combiner"
    CLIENT = "client"


def options_class(kind: TierKind) -> type[TierOptions]:
    """The options dataclass of a tier (importing that tier's module)."""
    if kind is TierKind.CONTROLLER:
        from stratafl.controller.main import ControllerOptions

        return ControllerOptions
    if kind is TierKind.COMBINER:
        from stratafl.combiner.main import CombinerOptions

        return CombinerOptions
    from stratafl.client.main import ClientOptions

    return ClientOptions


def kind_of(options: TierOptions) -> TierKind:
    """Which tier ``options`` start."""
    return next(kind for kind in TierKind if isinstance(options, options_class(kind)))


def options_to_json(options: TierOptions) -> str:
    return TypeAdapter(type(options)).dump_json(options).decode()


def options_from_json(kind: TierKind, text: str) -> TierOptions:
    """Rebuild the options `options_to_json` wrote; ConfigError names what does not fit."""
    cls = options_class(kind)
    try:
        options = TypeAdapter(cls).validate_json(text)
    except PydanticValidationError as exc:
        raise ConfigError(f"these are not valid {kind} options: {exc}") from exc
    unknown = set(json.loads(text)) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ConfigError(f"{kind} options have no field {', '.join(sorted(unknown))}")
    return options


def tier_command(options: TierOptions) -> list[str]:
    """The command line that runs a tier with ``options`` in a new Python process."""
    kind = kind_of(options)
    return [sys.executable, "-m", "stratafl.launch.tier", kind, options_to_json(options)]


def ready_file_of(options: TierOptions) -> Path | None:
    """Where the tier announces itself once it serves (a client: once it has a task stream)."""
    return options.ready_file


def run_tier(options: TierOptions) -> None:
    """Run a tier in this process until it is stopped (SIGTERM or SIGINT); a ready file a
    previous run left is removed first (`stratafl.launch.readiness`)."""
    from stratafl.client.main import ClientOptions, run_client
    from stratafl.launch.readiness import clear_ready_file

    clear_ready_file(ready_file_of(options))

    if isinstance(options, ClientOptions):
        run_client(options)
        return
    from stratafl.combiner.main import CombinerOptions, serve_combiner

    if isinstance(options, CombinerOptions):
        asyncio.run(serve_combiner(options))
        return
    from stratafl.controller.main import serve_controller

    asyncio.run(serve_controller(options))


PARENT_CHECK_SECONDS = 1.0


def stop_when_orphaned(parent: int) -> threading.Thread:
    """Stop this tier (SIGTERM to itself, as the launcher's `stop_all` would) once its
    launcher ``parent`` is gone, however it died (a SIGKILL runs no cleanup): a launcher's
    tiers never outlive it, holding ports and CPU. Tiers started by `strata ... start` run
    `run_tier` directly and are not watched."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        logging.getLogger("stratafl").warning("the launcher (pid %d) is gone: stopping", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    watcher = threading.Thread(target=watch, name="stop-when-orphaned", daemon=True)
    watcher.start()
    return watcher


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    kinds = ", ".join(TierKind)
    if len(args) != 2 or args[0] not in set(TierKind):
        print(f"usage: python -m stratafl.launch.tier {{{kinds}}} OPTIONS_JSON", file=sys.stderr)
        return 2
    configure_logging()
    stop_when_orphaned(os.getppid())
    try:
        run_tier(options_from_json(TierKind(args[0]), args[1]))
    except StrataError as exc:
        logging.getLogger("stratafl").error("%s stopped: %s", args[0], exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
