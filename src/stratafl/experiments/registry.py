"""The studies `strata experiment` runs, by name, in the order `strata experiment all` runs
them."""

from __future__ import annotations

from collections.abc import Mapping

from stratafl.errors import ConfigError
from stratafl.experiments import (
    across_combiners,
    backdoor,
    backdoor_defences,
    communication,
    defence_cost,
    drift_correction,
    fedavg_vs_fedsgd,
    heterogeneity,
    label_flipping,
    model_poisoning,
    shared_data,
)
from stratafl.experiments.study import Study

STUDIES: Mapping[str, Study] = {
    s.name: s
    for s in (
        heterogeneity.STUDY,
        shared_data.STUDY,
        fedavg_vs_fedsgd.STUDY,
        label_flipping.STUDY,
        backdoor.STUDY,
        model_poisoning.STUDY,
        defence_cost.STUDY,
        communication.STUDY,
        across_combiners.STUDY,
        drift_correction.STUDY,
        backdoor_defences.STUDY,
    )
}


def get_study(name: str) -> Study:
    """The study called ``name``; ConfigError lists the valid names."""
    try:
        return STUDIES[name]
    except KeyError:
        raise ConfigError(f"unknown study {name!r}; valid studies are {list(STUDIES)}") from None
