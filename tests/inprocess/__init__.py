"""In-process tests: real servers (gRPC, ASGI) and the tiers' round logic in one process, on
loopback."""
