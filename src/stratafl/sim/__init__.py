"""Local federations: every tier as its own process on loopback, and the session report."""
