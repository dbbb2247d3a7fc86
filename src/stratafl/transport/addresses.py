"""The address a server binds to and the one it tells others to reach it at.

A server bound to ``0.0.0.0`` (or ``::``) listens on every interface, but that address
reaches nothing from another host: a controller announcing ``0.0.0.0:port`` at
``/discovery``, or a combiner registering it, would send every peer to itself. So a
wildcard bind needs an advertised name or address (``--advertise-address``), and it is
also the name the server's TLS certificate carries.
"""

from __future__ import annotations

import ipaddress

from stratafl.errors import ConfigError

WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "[::]", ""})
"""Binds that mean "every interface": never an address another host can dial."""


def is_wildcard(host: str) -> bool:
    return host.strip() in WILDCARD_HOSTS


def advertised_host(host: str, advertise: str | None) -> str:
    """The host peers reach this server at: ``advertise`` if given, else the bound ``host``.

    Raises `ConfigError` naming the fix for a wildcard bind without an advertised name,
    and for a wildcard given as the advertised name itself.
    """
    if advertise is not None and advertise.strip():
        advertise = advertise.strip()
        if is_wildcard(advertise):
            raise ConfigError(
                f"--advertise-address {advertise} reaches no one; give the name or IP "
                "address that other hosts reach this host at"
            )
        return advertise.removeprefix("[").removesuffix("]")
    if is_wildcard(host):
        shown = host.strip() or "''"
        raise ConfigError(
            f"--host {shown} needs --advertise-address NAME_OR_IP that others reach this host at"
        )
    return host


def host_port(host: str, port: int) -> str:
    """``host:port`` as gRPC and URLs want it: an IPv6 literal goes in brackets."""
    bare = host.removeprefix("[").removesuffix("]")
    try:
        literal = ipaddress.ip_address(bare)
    except ValueError:
        return f"{host}:{port}"
    return f"[{bare}]:{port}" if literal.version == 6 else f"{bare}:{port}"
