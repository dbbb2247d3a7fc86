"""Tier 3: discovery, sessions and rounds, the reducer, the REST API."""
