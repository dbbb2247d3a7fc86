"""Who the clients of a swarm are: one identity (and one token) per client.

A swarm client is a real client on the wire, so each has its own token, whose subject is
its id. There are two ways to get them, and both are bounded:

- ``--token-file ADMIN``: the swarm mints one client token per client through the REST
  API (``POST /tokens``, a few requests at a time), named ``PREFIX-0`` .. ``PREFIX-(N-1)``;
  ``--save-tokens FILE`` keeps them for the next run.
- ``--tokens-file FILE``: one client token per line (blank lines and ``#`` comments are
  skipped), as `--save-tokens` writes them; the first N are used.

An ``--insecure`` swarm has no tokens: its ids are ``PREFIX-i``.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from stratafl.errors import AuthError, ConfigError
from stratafl.restapi import ControllerClient
from stratafl.security import Role, read_claims_unverified
from stratafl.security.files import write_private
from stratafl.security.tokens import MAX_TOKEN_CHARS

__all__ = [
    "MINTING_AT_ONCE",
    "Identity",
    "as_lines",
    "from_lines",
    "insecure_identities",
    "mint_tokens",
    "read_tokens",
    "split",
    "write_tokens",
]

MINTING_AT_ONCE = 8
"""Token requests in flight at once: enough to hide latency, few enough not to crowd out
the controller's other callers."""


@dataclass(frozen=True, slots=True)
class Identity:
    """One swarm client: its id and its token (None on an insecure federation)."""

    client_id: str
    token: str | None = None


def insecure_identities(prefix: str, count: int) -> list[Identity]:
    return [Identity(f"{prefix}-{i}") for i in range(count)]


def read_tokens(path: Path, count: int) -> list[Identity]:
    """The first ``count`` client tokens of ``path``; each must be a client token, and no
    two may name the same client."""
    limit = count * (MAX_TOKEN_CHARS + 2) + 1_000_000  # room for comments and blank lines
    try:
        with open(path, encoding="ascii") as stream:
            text = stream.read(limit + 1)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read the tokens file {path} ({exc}); pass --tokens-file"
        ) from exc
    identities: list[Identity] = []
    seen: set[str] = set()
    for number, line in enumerate(text[:limit].splitlines(), start=1):
        token = line.strip()
        if not token or token.startswith("#"):
            continue
        try:
            claims = read_claims_unverified(token)
        except AuthError as exc:
            raise ConfigError(f"{path} line {number}: {exc}") from exc
        if claims.role != Role.CLIENT:
            raise ConfigError(
                f"{path} line {number}: a {claims.role} token; a swarm needs client tokens "
                "(strata token create NAME --role client)"
            )
        if claims.subject in seen:
            raise ConfigError(f"{path} line {number}: a second token of client {claims.subject!r}")
        seen.add(claims.subject)
        identities.append(Identity(claims.subject, token))
        if len(identities) == count:
            return identities
    raise ConfigError(
        f"{path} holds {len(identities)} client tokens, fewer than the {count} clients asked; "
        "pass --clients to match, or mint them with --token-file ADMIN --save-tokens FILE"
    )


def mint_tokens(
    controller: ControllerClient,
    prefix: str,
    count: int,
    *,
    ttl_seconds: float | None = None,
) -> list[Identity]:
    """One new client token per client, named and subject ``PREFIX-i``; ``controller``
    must carry an admin token. Raises the first refusal (e.g. a non-admin token)."""

    def mint(index: int) -> Identity:
        name = f"{prefix}-{index}"
        issued = controller.create_token(name, Role.CLIENT, ttl_seconds=ttl_seconds)
        return Identity(name, issued.token)

    with ThreadPoolExecutor(MINTING_AT_ONCE, thread_name_prefix="strata-mint") as pool:
        return list(pool.map(mint, range(count)))


def write_tokens(path: Path, identities: Sequence[Identity]) -> None:
    """Write the tokens one per line, readable by their owner only (they are secrets)."""
    lines = "".join(f"{i.token}\n" for i in identities if i.token is not None)
    write_private(path, lines.encode("ascii"))


def split(identities: Sequence[Identity], parts: int) -> list[list[Identity]]:
    """``identities`` in ``parts`` runs whose sizes differ by one at most."""
    size, extra = divmod(len(identities), parts)
    runs, start = [], 0
    for part in range(parts):
        end = start + size + (1 if part < extra else 0)
        runs.append(list(identities[start:end]))
        start = end
    return runs


def as_lines(identities: Sequence[Identity]) -> str:
    """The identities as ``client_id<TAB>token`` lines: how a worker process gets its own."""
    return "".join(f"{i.client_id}\t{i.token or ''}\n" for i in identities)


def from_lines(text: str) -> list[Identity]:
    identities = []
    for line in text.splitlines():
        client_id, _, token = line.partition("\t")
        identities.append(Identity(client_id, token or None))
    return identities
