"""Every `strata` command: parse the arguments, call the layer below, print the answer.

Nothing here decides anything: the tiers, the launcher and the studies do the work, and
nothing below imports this package (the import contracts check it). ``main`` is the entry
point of the `strata` script (`stratafl.cli.main:main`).
"""
