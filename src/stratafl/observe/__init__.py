"""What the processes tell their operators: Prometheus metrics, the per-round log line and
the MLflow export (see docs/operations.md)."""
