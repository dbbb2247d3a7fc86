"""`strata swarm`: a fleet simulator that is also a load generator.

Thousands of light clients per process, on asyncio gRPC, over several processes; each is
a real client on the wire (its own token, channel, task stream and transfers) speaking the
protocol of `stratafl.client`. Modules, one job each::

    options     SwarmOptions: what to run, bounded
    identities  one identity and token per client: minted, read from a file, or insecure
    wire        the protocol's messages for asyncio (download, upload, bearer metadata)
    shared      what the clients of one process share (app, TLS, HTTP pool, models)
    client      SwarmClient: one client's loop
    worker      one process of clients (python -m stratafl.swarm SPEC)
    fleet       Fleet: the worker processes, started, summed and stopped
    stats       SwarmStats: the counters, and RSS

The swarm is a client: it never imports the combiner or the controller.
"""

from stratafl.swarm.fleet import Fleet, fleet_identities, follow
from stratafl.swarm.identities import Identity
from stratafl.swarm.options import DEFAULT_APP, SwarmOptions
from stratafl.swarm.stats import SwarmStats

__all__ = [
    "DEFAULT_APP",
    "Fleet",
    "Identity",
    "SwarmOptions",
    "SwarmStats",
    "fleet_identities",
    "follow",
]
