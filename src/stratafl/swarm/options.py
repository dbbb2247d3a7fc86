"""What `strata swarm` is asked to run, checked once before anything starts.

Every count is bounded: a swarm is a load generator, and a typo of one zero too many must
fail with a message, not exhaust the machine's memory or file descriptors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stratafl.errors import ConfigError

__all__ = [
    "DEFAULT_APP",
    "MAX_CLIENTS",
    "MAX_CLIENTS_PER_PROCESS",
    "MAX_PROCESSES",
    "SwarmOptions",
]

DEFAULT_APP = "stratafl.apps.noise:make_app"
MAX_CLIENTS = 100_000
"""Clients of one swarm, over all its processes."""
MAX_CLIENTS_PER_PROCESS = 20_000
"""Each client holds a TCP connection (a file descriptor) and a few kB in its process."""
MAX_PROCESSES = 64
MAX_CONNECTING = 10_000


@dataclass(frozen=True, kw_only=True)
class SwarmOptions:
    """A fleet of light clients: what `strata swarm` parses its flags into."""

    controller: str  # the controller's URL, e.g. https://127.0.0.1:8080
    clients: int
    app: str = DEFAULT_APP  # package.module:attr or path/to/file.py:attr
    processes: int = 1
    id_prefix: str = "swarm"  # client ids are PREFIX-0 .. PREFIX-(N-1) (minted or insecure)
    token_file: Path | None = None  # an admin token: the swarm mints its clients' tokens
    tokens_file: Path | None = None  # or a file of client tokens, one per line
    save_tokens: Path | None = None  # write the minted tokens here (0600), for --tokens-file
    ca_file: Path | None = None  # the federation's CA certificate
    insecure: bool = False  # no TLS, no tokens: for a controller started --insecure
    app_per_client: bool = False  # build the app once per client (partitioned data)
    connecting: int = 200  # clients of one process asking for a combiner at the same time
    duration: float | None = None  # seconds to run; None: until SIGTERM or Ctrl-C
    seed: int = 0
    stats_seconds: float = 5.0  # how often the fleet prints a line of totals (0: never)

    def check(self) -> None:
        """Raise `ConfigError` naming the first setting out of bounds."""
        if not 1 <= self.clients <= MAX_CLIENTS:
            raise ConfigError(f"--clients must be 1..{MAX_CLIENTS}, got {self.clients}")
        if not 1 <= self.processes <= min(MAX_PROCESSES, self.clients):
            raise ConfigError(
                f"--processes must be 1..{min(MAX_PROCESSES, self.clients)} (at most one per "
                f"client), got {self.processes}"
            )
        per_process = -(-self.clients // self.processes)
        if per_process > MAX_CLIENTS_PER_PROCESS:
            raise ConfigError(
                f"{per_process} clients per process is more than {MAX_CLIENTS_PER_PROCESS}; "
                f"raise --processes to {-(-self.clients // MAX_CLIENTS_PER_PROCESS)} or more"
            )
        if not 1 <= self.connecting <= MAX_CONNECTING:
            raise ConfigError(f"--connecting must be 1..{MAX_CONNECTING}, got {self.connecting}")
        if self.duration is not None and not self.duration > 0:
            raise ConfigError(f"--duration must be > 0 seconds, got {self.duration}")
        if not self.stats_seconds >= 0:
            raise ConfigError(f"--stats-seconds must be >= 0, got {self.stats_seconds}")
        if not self.id_prefix or len(self.id_prefix) > 64 or not self.id_prefix.isprintable():
            raise ConfigError(f"--id-prefix must be 1..64 printable characters: {self.id_prefix!r}")
        self._check_credentials()

    def _check_credentials(self) -> None:
        if self.insecure:
            if self.token_file or self.tokens_file:
                raise ConfigError(
                    "--insecure sends no tokens: drop --token-file/--tokens-file, or --insecure"
                )
            return
        if (self.token_file is None) == (self.tokens_file is None):
            raise ConfigError(
                "a swarm's clients need tokens: pass --token-file ADMIN_TOKEN (the swarm mints "
                "one per client) or --tokens-file FILE (one client token per line), not both; "
                "or --insecure for an insecure controller on loopback"
            )
        if self.ca_file is None:
            raise ConfigError(
                "a secured swarm needs --ca-file (the controller's trust/ca.crt), or --insecure"
            )
        if self.save_tokens is not None and self.token_file is None:
            raise ConfigError("--save-tokens writes minted tokens: it needs --token-file ADMIN")
