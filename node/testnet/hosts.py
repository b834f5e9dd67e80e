"""A testnet for separate machines: one node per host (``suanpan testnet init --hosts``).

``parse_hosts`` checks a comma-separated host list (IPv4, IPv6 or DNS names; every problem
named at once); ``hosts_layout`` turns it into a ``node.testnet.testnet.Layout``: node ``i``
runs on host ``i``, every node listens for peers on the same port, and every node's
persistent peers are the other hosts at that port. Peers listen on all addresses (``any``)
or on their own host's address (``host``); the client API and metrics stay on loopback
unless the operator asks for the host's address.

The systemd unit shipped beside this module (``suanpan@.service``) runs
``suanpan start --home /var/lib/suanpan/%i``; ``testnet init --hosts`` copies it next to
the homes.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from importlib import resources
from typing import Final

from node.config import HostPort
from node.testnet.testnet import Layout, NodeAddresses

__all__ = [
    "API_LISTEN_CHOICES",
    "DEFAULT_API_PORT",
    "DEFAULT_METRICS_PORT",
    "DEFAULT_P2P_PORT",
    "P2P_LISTEN_CHOICES",
    "SYSTEMD_UNIT_FILE",
    "HostsError",
    "hosts_layout",
    "parse_hosts",
    "systemd_unit",
]

# CometBFT's ports, so firewall rules written for it read the same.
DEFAULT_P2P_PORT: Final = 26656
DEFAULT_API_PORT: Final = 26657
DEFAULT_METRICS_PORT: Final = 26660
# any: peers may connect to any address of the machine (0.0.0.0, or :: for an IPv6 host);
# host: only to the address given in --hosts (the machine must own it).
P2P_LISTEN_CHOICES: Final = ("any", "host")
# loopback: API and metrics reachable on the machine only; host: on the --hosts address.
API_LISTEN_CHOICES: Final = ("loopback", "host")
SYSTEMD_UNIT_FILE: Final = "suanpan@.service"
# RFC 1123 host names: labels of letters, digits and inner hyphens, 63 characters at most.
_LABEL: Final = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_NAME_CHARACTERS_MAX: Final = 253


class HostsError(ValueError):
    """A ``--hosts`` list that cannot be used; ``problems`` names each one."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("--hosts: " + "; ".join(problems))
        self.problems = problems


def _check_host(text: str) -> tuple[str, str | None]:
    """The host in canonical form and its problem (``None`` when usable)."""
    candidate = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        address = None
    if address is not None:
        if address.is_unspecified:
            return candidate, f"{text!r} means 'any address'; peers cannot dial it"
        if address.is_multicast or (address.version == 4 and str(address) == "255.255.255.255"):
            return candidate, f"{text!r} is a multicast or broadcast address, not a machine"
        return str(address), None
    if text.startswith("["):
        return text, f"{text!r} is not an IPv6 address"
    name = text.rstrip(".").lower()
    labels = name.split(".")
    if not name or len(name) > _NAME_CHARACTERS_MAX or not all(map(_LABEL.fullmatch, labels)):
        return text, (
            f"{text!r} is neither an IP address nor a host name (letters, digits and"
            " inner hyphens, dot-separated)"
        )
    if labels[-1].isdigit():
        return text, f"{text!r} is not a valid IPv4 address"
    return name, None


def parse_hosts(text: str, *, validators: int | None = None) -> tuple[str, ...]:
    """The hosts of ``--hosts HOST1,HOST2,...`` in order (IP addresses and names canonical);
    raises ``HostsError`` naming every problem: an empty entry, a malformed name or address,
    an address no peer can dial, a host listed twice (one node per host), a count that is
    not ``validators``."""
    problems: list[str] = []
    hosts: list[str] = []
    seen: dict[str, int] = {}
    entries = [entry.strip() for entry in text.split(",")]
    for position, entry in enumerate(entries, 1):
        if not entry:
            problems.append(f"entry {position} is empty (a stray comma?)")
            continue
        if any(character.isspace() for character in entry):
            problems.append(f"entry {position} {entry!r} contains spaces")
            continue
        host, problem = _check_host(entry)
        if problem is not None:
            problems.append(problem)
            continue
        if host in seen:
            problems.append(
                f"{entry!r} is listed twice (entries {seen[host]} and {position});"
                " one node per host"
            )
            continue
        seen[host] = position
        hosts.append(host)
    if validators is not None and not problems and len(hosts) != validators:
        problems.append(f"{len(hosts)} host(s) for {validators} validators; give one per validator")
    if problems:
        raise HostsError(problems)
    return tuple(hosts)


def _any_address(host: str) -> str:
    try:
        return "::" if ipaddress.ip_address(host).version == 6 else "0.0.0.0"
    except ValueError:
        return "0.0.0.0"  # a name; an IPv4 wildcard, as most consortium networks are IPv4


def _loopback(host: str) -> str:
    try:
        return "::1" if ipaddress.ip_address(host).version == 6 else "127.0.0.1"
    except ValueError:
        return "127.0.0.1"


def hosts_layout(
    hosts: Sequence[str],
    *,
    p2p_listen: str = "any",
    api_listen: str = "loopback",
    p2p_port: int = DEFAULT_P2P_PORT,
    api_port: int = DEFAULT_API_PORT,
    metrics_port: int = DEFAULT_METRICS_PORT,
) -> Layout:
    """One node per host (hosts as ``parse_hosts`` returns them): node ``i`` listens for peers
    on ``p2p_port`` (all addresses, or host ``i``'s with ``p2p_listen="host"``) and dials node
    ``j`` at ``hosts[j]:p2p_port``; its API and metrics listen on loopback (or host ``i`` with
    ``api_listen="host"``). Raises ``ValueError`` when the choices or ports do not fit."""
    if p2p_listen not in P2P_LISTEN_CHOICES:
        raise ValueError(f"p2p listen {p2p_listen!r} is not one of {P2P_LISTEN_CHOICES}")
    if api_listen not in API_LISTEN_CHOICES:
        raise ValueError(f"API listen {api_listen!r} is not one of {API_LISTEN_CHOICES}")
    ports = {"--p2p-port": p2p_port, "--api-port": api_port, "--metrics-port": metrics_port}
    for option, port in ports.items():
        if not 1 <= port <= 65535:
            raise ValueError(f"{option} {port} is outside 1..65535")
    if len(set(ports.values())) != len(ports):
        # A wildcard p2p listener and a loopback API on one port would collide on the machine.
        raise ValueError("--p2p-port, --api-port and --metrics-port must all differ")
    if not hosts:
        raise ValueError("no hosts")
    nodes = tuple(
        NodeAddresses(
            p2p_listen=HostPort(host if p2p_listen == "host" else _any_address(host), p2p_port),
            rpc_listen=HostPort(host if api_listen == "host" else _loopback(host), api_port),
            metrics_listen=HostPort(
                host if api_listen == "host" else _loopback(host), metrics_port
            ),
            advertised=HostPort(host, p2p_port),
        )
        for host in hosts
    )
    dial = tuple(
        tuple(None if i == j else HostPort(hosts[j], p2p_port) for j in range(len(hosts)))
        for i in range(len(hosts))
    )
    return Layout("hosts", nodes, dial, tuple(hosts))


def systemd_unit() -> str:
    """The shipped systemd template unit (``suanpan@.service``)."""
    return (resources.files("node.testnet") / SYSTEMD_UNIT_FILE).read_text("utf-8")
