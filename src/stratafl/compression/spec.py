"""Which codec a session's updates travel in, parsed from one string.

``none`` (raw weights, as always), ``float16``, ``int8`` (a per-tensor scale) or
``topk:fraction=F`` (the largest ``F`` of each tensor's entries, with error feedback). The
controller validates the string once, in the session's settings; the combiner and the
clients parse the same canonical form (`Compression.__str__`), so both sides derive the
same layout (the same ``k`` per tensor) from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from stratafl.errors import ConfigError, ModelFormatError

HELP = "use none, float16, int8 or topk:fraction=F with 0 < F <= 1, e.g. topk:fraction=0.01"


class Codec(StrEnum):
    NONE = "none"
    FLOAT16 = "float16"
    INT8 = "int8"
    TOPK = "topk"


@dataclass(frozen=True)
class Compression:
    """A session's update codec; ``fraction`` is top-k's share of each tensor's entries."""

    codec: Codec = Codec.NONE
    fraction: float = 1.0

    def __post_init__(self) -> None:
        if not (0.0 < self.fraction <= 1.0) or math.isnan(self.fraction):
            raise ConfigError(f"compression fraction {self.fraction} is out of range; {HELP}")

    def __str__(self) -> str:
        if self.codec == Codec.TOPK:
            return f"topk:fraction={self.fraction!r}"
        return str(self.codec)

    @property
    def is_delta(self) -> bool:
        """Every codec but ``none`` encodes the update (params minus the global model)."""
        return self.codec != Codec.NONE

    def k_of(self, size: int) -> int:
        """How many entries of a tensor of ``size`` entries top-k sends: at least one."""
        if size == 0:
            return 0
        return min(size, max(1, math.ceil(self.fraction * size)))


NONE = Compression()


def parse_compression(text: str) -> Compression:
    """``"topk:fraction=0.01"`` -> ``Compression(TOPK, 0.01)``; a ConfigError naming the fix."""
    name, _, options = text.strip().partition(":")
    try:
        codec = Codec(name.strip().lower() or "none")
    except ValueError:
        raise ConfigError(f"unknown compression {text!r}; {HELP}") from None
    if codec != Codec.TOPK:
        if options:
            raise ConfigError(f"compression {codec} takes no options, got {options!r}; {HELP}")
        return Compression(codec)
    key, _, value = options.partition("=")
    if key.strip() != "fraction":
        raise ConfigError(f"compression {text!r} needs fraction=F; {HELP}")
    try:
        fraction = float(value)
    except ValueError:
        raise ConfigError(f"compression fraction {value!r} is not a number; {HELP}") from None
    return Compression(codec, fraction)


def check_codec(announced: str, expected: Compression) -> None:
    """Refuse an update whose header names another codec than the session's (``""`` is
    ``none``, as sent before codecs existed): a `ModelFormatError`, an outcome's reason."""
    try:
        got = parse_compression(announced[:64])
    except ConfigError:
        got = None
    if got != expected:
        raise ModelFormatError(
            f"the update is encoded as {announced[:64]!r} but this session uses "
            f"{str(expected)!r}; encode updates with the task's compression"
        )
