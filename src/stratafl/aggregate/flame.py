"""FLAME (Nguyen et al. 2022, "FLAME: Taming Backdoors in Federated Learning", USENIX
Security), Algorithm 1. Over n updates W_i and the round's global model G:

    delta_i = W_i - G,   e_i = ||delta_i||                  (L2 over all tensors)
    c_ij    = 1 - cos(delta_i, delta_j)                      (cluster_models: cos(W_i, W_j))
    A       = the clients in the cluster HDBSCAN(c; min_cluster_size = n // 2 + 1,
              min_samples = 1, allow_single_cluster) finds; its noise points are rejected
    S       = median(e_1, ..., e_n)                          (all n clients, as the paper)
    G*      = G + (1 / |A|) sum_{i in A} delta_i min(1, S / e_i)
    G'      = G* + N(0, (lambda S)^2) on every floating-point weight

A cluster must hold more than half of the clients, so at most one exists: the majority the
paper assumes honest. HDBSCAN also labels as noise the points that leave that cluster
before its densest core, so an honest client at the cluster's edge can be rejected too;
that is FLAME's behaviour, not a bug here.

Why updates by default: every model is G + delta_i, and once ||G|| >> ||delta_i|| the
models' cosine distance is ``||P(delta_i - delta_j)||^2 / (2 ||G||^2)`` to first order
(P projects out G): a scaled Euclidean distance between the updates that ignores what they
do along G. The updates' cosine measures the direction each client trains in, which is
what the paper's argument is about, and clipping takes care of magnitudes.
``cluster_models=true`` gives the literal Algorithm 1.

Across tiers each combiner runs FLAME over its own clients (filter, clip at its own S,
mean, noise); the partial carries the number of admitted clients (or their examples) and
the reducer takes the weighted mean of partials, adding nothing. Each partial is within
S_k of G before noise, so the merged model is within max_k S_k; the merged noise std is
``lambda sqrt(sum_k a_k^2 S_k^2) / sum_k a_k``: lambda S / sqrt(M) for M equal combiners.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from stratafl.aggregate.blocks import coordinate_blocks, flat, stack_block
from stratafl.aggregate.clipping import clip_scale
from stratafl.aggregate.rule import (
    AggregatesBySelecting,
    LeftOut,
    NeedsEveryInput,
    Update,
    check_inputs,
    require_updates,
    weighted_merge,
)
from stratafl.errors import ConfigError
from stratafl.params import Params, TensorSpec


def delta_gram(
    updates: Sequence[Update], reference: Update, specs: Sequence[TensorSpec]
) -> np.ndarray:
    """The (n + 1, n + 1) Gram matrix of ``[G, W_1 - G, ..., W_n - G]`` over all tensors.

    One blockwise pass gives the update norms (its diagonal), the updates' cosines and,
    through ``W_i . W_j = G.G + G.d_i + G.d_j + d_i.d_j``, the models' cosines, without
    subtracting large model inner products from each other.
    """
    rows_of = [reference, *updates]
    gram = np.zeros((len(rows_of), len(rows_of)), dtype=np.float64)
    for spec in specs:
        for block in coordinate_blocks(spec.size, len(rows_of)):
            rows = stack_block(rows_of, spec.name, block)
            rows[1:] -= rows[0]
            gram += rows @ rows.T
    return gram


def cosine_distances(gram: np.ndarray) -> np.ndarray:
    """``1 - cos`` from a Gram matrix, in [0, 2]; a zero vector is at distance 1 from all
    others (its cosine is taken as 0)."""
    norms = np.sqrt(np.maximum(np.diag(gram), 0.0))
    nonzero = norms > 0
    safe = np.where(nonzero, norms, 1.0)
    cosines = np.where(np.outer(nonzero, nonzero), gram / np.outer(safe, safe), 0.0)
    distances = np.clip(1.0 - cosines, 0.0, 2.0)
    np.fill_diagonal(distances, 0.0)
    return distances


def majority_cluster(distances: np.ndarray) -> np.ndarray:
    """Boolean mask of the clients HDBSCAN clusters with the paper's settings.

    scikit-learn is imported here, not at module level, so that importing stratafl stays
    fast for everyone who never aggregates with FLAME.
    """
    from sklearn.cluster import HDBSCAN

    count = len(distances)
    labels = HDBSCAN(
        min_cluster_size=count // 2 + 1,
        min_samples=1,
        allow_single_cluster=True,
        metric="precomputed",
        copy=True,
    ).fit_predict(distances)
    admitted = np.asarray(labels) >= 0
    if not admitted.any():
        raise ConfigError(
            f"flame: HDBSCAN found no cluster of more than half of the {count} updates; "
            "FLAME assumes an honest majority, so this round cannot be aggregated"
        )
    return admitted


@dataclass(frozen=True)
class Screening:
    """What FLAME decided about one round's updates, before averaging."""

    admitted: tuple[int, ...]
    """Indices of the updates in the majority cluster, ascending."""
    norms: tuple[float, ...]
    """e_i = ||W_i - G|| of every update."""
    clip_bound: float
    """S, the median of ``norms``: the clipping bound and the noise scale."""


@dataclass(frozen=True)
class Flame(AggregatesBySelecting, NeedsEveryInput):
    """FLAME: cluster by cosine distance, keep the majority, clip to the median update
    norm S, average, add Gaussian noise of std ``noise_lambda * S`` (module docstring).

    ``noise_lambda``: 0.001, the paper's value for image classification (0.01 for its
    word prediction task). ``weight_by_examples``: false averages the admitted clients
    equally, as the paper; true weights them by example counts. ``cluster_models``: false
    clusters the updates W_i - G, true the models W_i as written in Algorithm 1. ``seed``:
    as for dp_gaussian, None draws fresh OS entropy; the runtime keys the noise per round
    and combiner through `for_round`.
    """

    name: ClassVar[str] = "flame"
    streaming: ClassVar[bool] = False
    min_updates: ClassVar[int] = 3

    noise_lambda: float = 0.001
    weight_by_examples: bool = False
    cluster_models: bool = False
    seed: int | None = None
    noise_key: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise_lambda) and self.noise_lambda >= 0):
            raise ConfigError(
                f"flame: noise_lambda={self.noise_lambda} must be >= 0 (the noise std is "
                "noise_lambda times the median update norm; the paper uses 0.001)"
            )
        if self.seed is not None and self.seed < 0:
            raise ConfigError(f"flame: seed={self.seed} must be >= 0, or unset")

    def for_round(self, round_number: int, combiner_key: int) -> Flame:
        """This rule with its noise stream keyed by the round and the combiner."""
        return replace(self, noise_key=(int(round_number), int(combiner_key)))

    def generator(self) -> np.random.Generator:
        """A fresh noise generator: reproducible iff ``seed`` is set."""
        return np.random.default_rng(
            np.random.SeedSequence(entropy=self.seed, spawn_key=self.noise_key)
        )

    def screen(self, updates: Sequence[Update], reference: Update) -> Screening:
        """Cluster the updates and compute the clipping bound (one pass over the updates)."""
        specs = check_inputs(self.name, updates, [1.0] * len(updates), reference)
        require_updates(self.name, len(updates), self.min_updates, "HDBSCAN needs a majority")
        gram = delta_gram(updates, reference, specs)
        inner = gram[1:, 1:]  # delta_i . delta_j
        if self.cluster_models:  # W_i . W_j = G.G + G.delta_i + G.delta_j + delta_i.delta_j
            towards_g = gram[0, 1:]
            inner = inner + towards_g[:, None] + towards_g[None, :] + gram[0, 0]
        admitted = majority_cluster(cosine_distances(inner))
        norms = np.sqrt(np.maximum(np.diag(gram)[1:], 0.0))
        return Screening(
            admitted=tuple(int(i) for i in np.flatnonzero(admitted)),
            norms=tuple(float(e) for e in norms),
            clip_bound=float(np.median(norms)),
        )

    def aggregate_selecting(
        self, updates: Sequence[Update], weights: Sequence[float], reference: Update
    ) -> tuple[Params, float, LeftOut]:
        """The noised clipped mean of the admitted updates, the admitted count (or their
        examples, with ``weight_by_examples``) as its weight, and the updates outside the
        majority cluster as left out."""
        specs = check_inputs(self.name, updates, weights, reference)
        screening = self.screen(updates, reference)
        chosen = screening.admitted
        shares = np.array([weights[i] if self.weight_by_examples else 1.0 for i in chosen])
        scales = [clip_scale(screening.norms[i], screening.clip_bound) for i in chosen]
        coefficients = shares / shares.sum() * np.array(scales)
        noise_std = self.noise_lambda * screening.clip_bound
        admitted = [updates[i] for i in chosen]
        result = _shifted(reference, admitted, coefficients, specs, noise_std, self.generator())
        why = "flame keeps the majority cluster of update directions; this one lies outside it"
        left_out = {i: why for i in range(len(updates)) if i not in chosen}
        return result, float(shares.sum()), left_out

    def merge(
        self, partials: Sequence[Update], weights: Sequence[float], reference: Update
    ) -> tuple[Params, float]:
        """Mean of the combiners' FLAME results weighted by what each admitted; no further
        filtering, clipping or noise."""
        return weighted_merge(partials, weights, reference)


def _shifted(
    reference: Update,
    updates: Sequence[Update],
    coefficients: np.ndarray,
    specs: Sequence[TensorSpec],
    noise_std: float,
    rng: np.random.Generator,
) -> Params:
    """``G + sum_i c_i (W_i - G)``, plus N(0, noise_std^2) on floating-point tensors, in
    each tensor's own dtype; one rounding, block by block."""
    rows_of = [reference, *updates]
    result: Params = {}
    for spec in specs:
        out = np.empty(spec.shape, dtype=spec.numpy_dtype)
        out_flat = flat(out)
        noisy = noise_std > 0 and np.issubdtype(spec.numpy_dtype, np.floating)
        for block in coordinate_blocks(spec.size, len(rows_of)):
            rows = stack_block(rows_of, spec.name, block)
            values = rows[0] + coefficients @ (rows[1:] - rows[0])
            if noisy:
                values += rng.normal(0.0, noise_std, size=values.shape)
            out_flat[block] = values
        result[spec.name] = out
    return result
