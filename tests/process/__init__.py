"""Process tests: every tier as its own process (end-to-end, failure, browser and study tests);
marked slow."""
