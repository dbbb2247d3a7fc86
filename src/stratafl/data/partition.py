"""Split a labelled dataset among simulated clients, reproducibly from a seed.

Every partitioner returns ``num_partitions`` sorted int64 index arrays that are disjoint and
together cover every index, so client ``k`` of a federation and the pooled baseline see
exactly the same examples; the one exception is the ``+shared:F`` suffix, which adds the
same shared subset to every partition. The same (labels, spec, num_partitions, seed)
always gives the same split, in any process: that is what lets each client process compute
its own share without anyone sending it the indices.

Specs, as written on the command line:

    iid            uniform random split into near-equal sizes
    dirichlet:A    per class, shares drawn from Dirichlet(A); small A = skewed label mixes
                   (Hsu et al. 2019, "Measuring the effects of non-identical data ...")
    shards:S       sort by label, cut into K*S shards, S shards per client
                   (McMahan et al. 2017's pathological non-IID split)

Any of them may end in ``+shared:F`` (0 < F < 1), e.g. ``shards:2+shared:0.05``: a
globally shared subset of the training data, fraction F of it, that every client trains
on besides its own partition (Zhao et al. 2018, "Federated Learning with Non-IID Data").
The subset is drawn once from the training data, per class in proportion (so it has the
training data's label mix), from the seed alone; it is taken out before the rest is split,
so no example is both shared and private, and the pooled baseline still holds every
example once. Zhao et al. also warm up the first model on the shared data; that is not
done here (the seed model is the app's, as in every other session).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stratafl.errors import ConfigError

VALID_SPECS = (
    "'iid', 'dirichlet:<alpha > 0>' (e.g. 'dirichlet:0.5') or 'shards:<int >= 1>', "
    "optionally ending in '+shared:<fraction in (0, 1)>' (e.g. 'shards:2+shared:0.05')"
)

DIRICHLET_MIN_SIZE = 10
"""Dirichlet partitions smaller than this (or than n // K if that is smaller) are redrawn."""
DIRICHLET_MAX_DRAWS = 100
SHARED_STREAM = 0x5A4F
"""Mixed into the seed of the shared subset's draw, so it is independent of the split's."""


def iid(labels: np.ndarray, num_partitions: int, seed: int) -> list[np.ndarray]:
    """A uniform random split; sizes differ by at most one."""
    n = _check(labels, num_partitions)
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, num_partitions)]


def dirichlet(labels: np.ndarray, num_partitions: int, alpha: float, seed: int) -> list[np.ndarray]:
    """Per class, split its examples among partitions in proportions drawn from
    Dirichlet(alpha, ..., alpha).

    No partition may be empty (a client without data cannot train, and a tiny one adds only
    noise), so a draw that leaves any partition with fewer than
    ``min(DIRICHLET_MIN_SIZE, n // num_partitions)`` examples is redrawn, as Flower's
    `DirichletPartitioner` does. If ``DIRICHLET_MAX_DRAWS`` draws all fail (tiny datasets,
    very small alpha), the last draw is repaired by moving random examples from the largest
    partitions into the small ones. Both steps depend on the seed only.
    """
    n = _check(labels, num_partitions)
    if not (math.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"dirichlet alpha must be a finite number > 0, got {alpha}")
    labels = np.asarray(labels)
    min_size = max(1, min(DIRICHLET_MIN_SIZE, n // num_partitions))
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    parts: list[np.ndarray] = []
    for _ in range(DIRICHLET_MAX_DRAWS):
        parts = _dirichlet_draw(by_class, num_partitions, alpha, rng)
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(p) for p in parts]
    return [np.sort(p) for p in _top_up(parts, min_size, rng)]


def shards(
    labels: np.ndarray, num_partitions: int, shards_per_client: int, seed: int
) -> list[np.ndarray]:
    """Sort by label, cut into ``num_partitions * shards_per_client`` near-equal shards and
    deal ``shards_per_client`` random shards to each client.

    A shard straddles a label boundary when class sizes are not multiples of the shard
    size: a client then holds at most ``2 * shards_per_client`` labels if every class is at
    least a shard long (more if classes are smaller), and at most ``shards_per_client`` when
    class sizes are multiples of the shard size (e.g. Fashion-MNIST train, 10 clients x 2).
    Which examples of a class fall in which shard is random too, so seeds differ even on
    sorted data.
    """
    n = _check(labels, num_partitions)
    if shards_per_client < 1:
        raise ConfigError(f"shards per client must be >= 1, got {shards_per_client}")
    num_shards = num_partitions * shards_per_client
    if num_shards > n:
        raise ConfigError(
            f"{num_partitions} clients x {shards_per_client} shards = {num_shards} shards "
            f"but only {n} examples; use fewer clients or shards per client"
        )
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(n)
    by_label = shuffled[np.argsort(np.asarray(labels)[shuffled], kind="stable")]
    cut = np.array_split(by_label, num_shards)
    deal = rng.permutation(num_shards).reshape(num_partitions, shards_per_client)
    return [np.sort(np.concatenate([cut[s] for s in row])) for row in deal]


@dataclass(frozen=True)
class IID:
    """Parsed ``iid``."""

    def split(self, labels: np.ndarray, num_partitions: int, seed: int) -> list[np.ndarray]:
        return iid(labels, num_partitions, seed)

    def __str__(self) -> str:
        return "iid"


@dataclass(frozen=True)
class Dirichlet:
    """Parsed ``dirichlet:<alpha>``."""

    alpha: float

    def split(self, labels: np.ndarray, num_partitions: int, seed: int) -> list[np.ndarray]:
        return dirichlet(labels, num_partitions, self.alpha, seed)

    def __str__(self) -> str:
        return f"dirichlet:{self.alpha:g}"


@dataclass(frozen=True)
class Shards:
    """Parsed ``shards:<shards per client>``."""

    per_client: int

    def split(self, labels: np.ndarray, num_partitions: int, seed: int) -> list[np.ndarray]:
        return shards(labels, num_partitions, self.per_client, seed)

    def __str__(self) -> str:
        return f"shards:{self.per_client}"


BasePartitioner = IID | Dirichlet | Shards


def shared_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The sorted indices of the globally shared subset: ``fraction`` of each class's
    examples (rounded), drawn from ``seed`` alone, the same in every process."""
    n = _check(labels, 1)
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, SHARED_STREAM])
    picks = [np.empty(0, dtype=np.int64)]
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        picks.append(rng.choice(members, round(fraction * len(members)), replace=False))
    chosen = np.sort(np.concatenate(picks)).astype(np.int64)
    if len(chosen) == 0:
        raise ConfigError(
            f"shared fraction {fraction:g} of {n} examples rounds to no example in any "
            "class; use a larger fraction"
        )
    return chosen


@dataclass(frozen=True)
class WithShared:
    """Parsed ``<base>+shared:<fraction>``: every partition of ``base`` plus one shared
    subset (`shared_subset`), which ``base`` never sees."""

    base: BasePartitioner
    fraction: float

    def shared(self, labels: np.ndarray, seed: int) -> np.ndarray:
        return shared_subset(labels, self.fraction, seed)

    def split(self, labels: np.ndarray, num_partitions: int, seed: int) -> list[np.ndarray]:
        shared = self.shared(labels, seed)
        rest = np.setdiff1d(np.arange(len(labels)), shared)
        if len(rest) < num_partitions:
            raise ConfigError(
                f"sharing {len(shared)} of {len(labels)} examples leaves {len(rest)} for "
                f"{num_partitions} clients; use a smaller shared fraction"
            )
        own = self.base.split(np.asarray(labels)[rest], num_partitions, seed)
        return [np.union1d(rest[part], shared).astype(np.int64) for part in own]

    def __str__(self) -> str:
        return f"{self.base}+shared:{self.fraction:g}"


Partitioner = IID | Dirichlet | Shards | WithShared


def parse_partitioner(spec: str) -> Partitioner:
    """Parse ``"iid"``, ``"dirichlet:0.5"`` or ``"shards:2"``, optionally followed by
    ``"+shared:0.05"`` (case and spaces ignored)."""
    base, plus, suffix = spec.partition("+")
    if not plus:
        return _parse_base(spec)
    kind, sep, arg = (s.strip() for s in suffix.strip().lower().partition(":"))
    try:
        fraction = float(arg) if kind == "shared" and sep else math.nan
    except ValueError:
        fraction = math.nan
    if not 0 < fraction < 1:  # NaN fails too
        raise ConfigError(f"partitioner {spec!r} is not valid; use {VALID_SPECS}")
    return WithShared(_parse_base(base), fraction)


def _parse_base(spec: str) -> BasePartitioner:
    kind, sep, arg = spec.strip().lower().partition(":")
    kind, arg = kind.strip(), arg.strip()
    if kind == "iid" and not sep:
        return IID()
    if kind == "dirichlet" and arg:
        try:
            alpha = float(arg)
        except ValueError:
            alpha = math.nan
        if math.isfinite(alpha) and alpha > 0:
            return Dirichlet(alpha)
    if kind == "shards" and arg:
        try:
            per_client = int(arg)
        except ValueError:
            per_client = 0
        if per_client >= 1:
            return Shards(per_client)
    raise ConfigError(f"partitioner {spec!r} is not valid; use {VALID_SPECS}")


def partition(labels: np.ndarray, spec: str, num_partitions: int, seed: int) -> list[np.ndarray]:
    """Split ``labels`` by the partitioner ``spec``: the one call client processes make."""
    return parse_partitioner(spec).split(labels, num_partitions, seed)


def _check(labels: np.ndarray, num_partitions: int) -> int:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ConfigError(
            f"labels must be a 1-D integer array, got {labels.dtype}{list(labels.shape)}"
        )
    if isinstance(num_partitions, bool) or not isinstance(num_partitions, int | np.integer):
        raise ConfigError(f"num_partitions must be an int, got {num_partitions!r}")
    if not 1 <= num_partitions <= len(labels):
        raise ConfigError(
            f"num_partitions must be between 1 and the number of examples ({len(labels)}), "
            f"got {num_partitions}"
        )
    return len(labels)


def _dirichlet_draw(
    by_class: list[np.ndarray], num_partitions: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    chunks: list[list[np.ndarray]] = [[] for _ in range(num_partitions)]
    for members in by_class:
        members = rng.permutation(members)
        shares = rng.dirichlet(np.full(num_partitions, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(members)).astype(np.int64)
        for k, piece in enumerate(np.split(members, cuts)):
            chunks[k].append(piece)
    return [np.concatenate(c) for c in chunks]


def _top_up(parts: list[np.ndarray], min_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    parts = [rng.permutation(p) for p in parts]
    for k in range(len(parts)):
        while len(parts[k]) < min_size:
            donor = int(np.argmax([len(p) for p in parts]))
            take = min(min_size - len(parts[k]), len(parts[donor]) - min_size)
            parts[k] = np.concatenate([parts[k], parts[donor][:take]])
            parts[donor] = parts[donor][take:]
    return parts
