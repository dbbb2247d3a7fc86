"""Model files staged on disk on their way into an aggregation rule."""
