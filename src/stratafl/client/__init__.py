"""Tier 1: the client runtime and the user-facing `ClientApp` API."""
