"""Tier 2: the combiner serves many clients and folds their updates into one partial."""
