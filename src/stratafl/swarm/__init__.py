"""`strata swarm`: a fleet simulator that is also a load generator.

Thousands of light clients per process, on asyncio gRPC, over several processes; each is
a real client on the wire (its own token, channel, task stream and transfers) driving the
one client protocol, `stratafl.client.protocol`, as the client runtime does: drift
correction (kept in memory per client), partial updates, the session's codec. Modules,
one job each::

    options     SwarmOptions: what to run, bounded
    identities  one identity and token per client: minted, read from a file, or insecure
    shared      what the clients of one process share: the protocol (TLS, HTTP pool,
                models, counters) and the apps
    worker      one process of clients (python -m stratafl.swarm SPEC), a `ClientState` each
    fleet       Fleet: the worker processes, started, summed and stopped
    stats       SwarmStats: the protocol's counters, and RSS

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
