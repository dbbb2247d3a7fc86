"""``python -m stratafl.swarm SPEC.json``: one swarm process, as `strata swarm` starts it."""

from stratafl.swarm.worker import main

main()
