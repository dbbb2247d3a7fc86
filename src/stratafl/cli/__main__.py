"""``python -m stratafl.cli ...``: the `strata` command without the installed script."""

from stratafl.cli.main import main

main()
