"""The studies `strata experiment` runs, by name, in the order `strata experiment all` runs
them."""

from __future__ import annotations

from collections.abc import Mapping

from stratafl.errors import ConfigError
from stratafl.experiments import heterogeneity, label_flipping
from stratafl.experiments.study import Study

STUDIES: Mapping[str, Study] = {s.name: s for s in (heterogeneity.STUDY, label_flipping.STUDY)}


def get_study(name: str) -> Study:
    """The study called ``name``; ConfigError lists the valid names."""
    try:
        return STUDIES[name]
    except KeyError:
        raise ConfigError(f"unknown study {name!r}; valid studies are {list(STUDIES)}") from None
