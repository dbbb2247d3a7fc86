"""The experiments of the field, by one command: `strata experiment NAME`.

Each study runs real federations (every tier a process on loopback, the aggregation rules
chosen by their spec strings) through the launcher users run, and writes
``<out>/<name>/results.json``, PNG plots and a README.md with its tables:

    from stratafl.experiments import STUDIES, Size, StudyRun
    STUDIES["heterogeneity"].run(StudyRun(Size.QUICK, seeds=(0,), out=Path("/tmp/results")))

The studies (``strata experiment list``): heterogeneity, shared-data, fedavg-vs-fedsgd,
label-flipping, backdoor, model-poisoning, defence-cost, communication, across-combiners;
each reports the fairness view (per-client accuracy of the final model) too.

``quick`` is the same code path on a few clients, rounds and examples (what CI runs);
``full`` is what docs/results reports.
"""

from stratafl.experiments.registry import STUDIES, get_study
from stratafl.experiments.study import DEFAULT_APP, QUICK_APP, Size, Study, StudyRun

__all__ = ["DEFAULT_APP", "QUICK_APP", "STUDIES", "Size", "Study", "StudyRun", "get_study"]
