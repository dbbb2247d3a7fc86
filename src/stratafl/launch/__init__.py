"""Start federations on this machine: every tier as its own process on loopback (from its typed
options), `strata run` as a use case, and the session report."""
