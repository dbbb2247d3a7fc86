"""How many clients a combiner serves when ``--max-clients`` is not given: as many as this
machine's open files and memory allow.

Every connected client holds one socket and a share of the combiner's memory: about
100 kB idle and 280 kB at the peak of a round of a 70 kB model (514 MiB with 5,000
clients connected, 1,388 MiB at the peak of their round; docs/results.md). A fixed default
of 1,000 refused clients a large machine serves easily, and promised a machine with the
usual soft limit of 1,024 open files more sockets than it could open.
"""

from __future__ import annotations

import logging

from stratafl.machine import available_memory_bytes, raise_open_files_limit

log = logging.getLogger("stratafl.combiner")

BYTES_PER_CLIENT = 300 * 1024
"""A connected client's share of a combiner's memory at the peak of a round, rounded up."""

MEMORY_SHARE = 0.5
"""Of the memory available at start, the share the clients' peak may take: the rest is for
the models the combiner stages and folds, and for the other processes of the machine."""

FILES_RESERVED = 256
"""Open files kept for the combiner itself: staged models, its link to the controller,
logs, TLS material, the metrics server."""


def default_max_clients(open_files: int) -> int:
    """The most clients this machine lets one combiner hold (at least 1), given the open
    files it may hold."""
    by_files = open_files - FILES_RESERVED
    by_memory = int(available_memory_bytes() * MEMORY_SHARE) // BYTES_PER_CLIENT
    return max(1, min(by_files, by_memory))


def serving_capacity(max_clients: int | None) -> int:
    """``max_clients``, or what this machine allows; either way with the soft limit on open
    files raised to the hard one, which a combiner of many clients needs."""
    files = raise_open_files_limit()
    if max_clients is None:
        max_clients = default_max_clients(files)
        log.info(
            "serving at most %d clients: what %d open files and the memory available allow "
            "(--max-clients to choose)",
            max_clients,
            files,
        )
    elif max_clients > files - FILES_RESERVED:
        log.warning(
            "--max-clients %d is more than the %d open files this process may hold allow; "
            "raise the limit (ulimit -n) or lower --max-clients",
            max_clients,
            files,
        )
    return max_clients
