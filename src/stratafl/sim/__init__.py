"""Local federations: every tier as its own process on loopback (started from its typed
options), `strata run` as a use case, and the session report."""
