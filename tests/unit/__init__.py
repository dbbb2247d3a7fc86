"""Unit tests: one module or function at a time, in memory or on local files; no server is
started."""
