"""Each testnet node in its own Linux network namespace, one veth pair per node pair.

Theory of operation
-------------------
``Topology(n)`` builds, with the ``ip`` command of iproute2 (root only)::

    root namespace                          namespace <prefix>-node<i>
    <prefix>h<i>  198.18.x.y+1/30  <-veth->  host     198.18.x.y+2/30   client API, metrics
                                             peer<j>  10.a.b.1|2/30  <-veth->  peer<i> in node<j>
                                             lo       127.0.0.1

Every pair of nodes ``a < b`` gets its own veth pair, ``peer<b>`` in ``a``'s namespace with
10.a.b.1 and ``peer<a>`` in ``b``'s with 10.a.b.2, so each link can be cut on its own. A
namespace has no default route: traffic for a peer can only take that peer's link, never a
detour through another link or the root namespace. Inside the namespaces every node uses the
same ports (``P2P_PORT``, ``API_PORT``, ``METRICS_PORT``) because nothing else shares them.

The client API must stay reachable from the root namespace, where the load generator, the
chaos watchers and the live view run as ordinary threads. So each namespace also has one veth
to the root namespace (``host``), and the node's API and metrics listen on its address there.
The alternative, running every client through ``ip netns exec``, would move those threads
into child processes; a veth keeps them unchanged and is what a machine with a separate
management network looks like. The peers never learn the host-side addresses.

Those host-side /30 networks are the only addresses the root namespace sees, so they must not
collide with another run or with the machine's own networks: they come from 198.18.0.0/15
(reserved for network testing, RFC 2544), skipping every network the root namespace already
has an address or route in, chosen under an exclusive lock (``/run/suanpan-netns/allocate.lock``)
and created before that lock is released. The 10.a.b.0/30 pair networks exist only inside the
run's own namespaces and never collide.

Link faults, for the chaos runner (``cut``, ``heal``):

* both directions: ``ip link set peer<j> down`` in node ``i``'s namespace. The veth loses its
  carrier at both ends (a pulled cable): connects fail, packets already in TCP buffers are
  retransmitted into nothing until the link comes back up (``heal`` sets it up, restores the
  neighbour entry the kernel flushed, and waits for the carrier);
* one direction, node ``i`` to node ``j``: a ``blackhole`` route in ``i``'s namespace for
  ``j``'s address on their link. Every packet ``i`` sends to ``j`` on that link is dropped,
  while ``j``'s packets still reach ``i`` (so ``i`` hears ``j``'s pings but its answers,
  ACKs included, are lost: TCP breaks, asymmetrically). The kernel has no netem or
  iptables here, and a route needs neither.

``heal`` undoes exactly what ``cut`` did.

Naming and clean-up: a run's names all start with one prefix, ``spn`` plus four random hex
digits (a veth name holds at most 15 characters): namespaces ``<prefix>-node<i>``, root-side
veths ``<prefix>h<i>``. Interfaces inside the namespaces vanish with them. ``close`` kills
any process left in the namespaces (normally the nodes are already stopped), deletes the
root-side veths (which removes their peers) and the namespaces, and releases the run's lock
file ``/run/suanpan-netns/<prefix>.lock``; it runs from ``__exit__``, so a failure or a
Ctrl-C that unwinds the caller cleans up too. A run killed outright (SIGKILL) leaves its
lock file unlocked: the next ``Topology`` removes such leftovers (``sweep_stale``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Final

from node.config import HostPort
from node.testnet.testnet import Layout, NodeAddresses

__all__ = [
    "API_PORT",
    "METRICS_PORT",
    "P2P_PORT",
    "NetnsError",
    "Topology",
    "netns_unavailable_reason",
    "run_ip",
    "sweep_stale",
]

# Every node has its namespace to itself, so all use the usual ports.
P2P_PORT: Final = 26656
API_PORT: Final = 26657
METRICS_PORT: Final = 26660
# Host-side networks: RFC 2544's benchmarking range, cut into /30s (two usable addresses).
HOST_NETWORK: Final = ipaddress.IPv4Network("198.18.0.0/15")
# Pair networks 10.a.b.0/30 need a, b <= 255; the testnet tools stop at 64 validators.
NODES_MAX: Final = 64
LOCK_DIRECTORY: Final = Path("/run/suanpan-netns")
PREFIX_PATTERN: Final = re.compile(r"spn[0-9a-f]{4}")
# One `ip` call: generous, the machine is busy; a hung call is reported, not waited on forever.
_IP_TIMEOUT_S: Final = 30.0
_PROBE_TIMEOUT_S: Final = 10.0
_STOP_WAIT_S: Final = 10.0
# A new veth pair gets its carrier within about a second; ten is for a very busy machine.
_CARRIER_WAIT_S: Final = 10.0
_RUN_ID_ATTEMPTS: Final = 20
_ROUTE_TYPES: Final = frozenset(
    {"unicast", "local", "broadcast", "multicast", "anycast", "blackhole", "unreachable"}
    | {"prohibit", "throw", "nat"}
)


class NetnsError(RuntimeError):
    """An ``ip`` command failed; the message names the command, its exit status and output."""


def run_ip(*arguments: str, timeout_s: float = _IP_TIMEOUT_S) -> str:
    """Run ``ip ARGUMENTS`` and return its standard output; raise ``NetnsError`` naming the
    command and what it printed when it fails."""
    command = ["ip", *arguments]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except FileNotFoundError:
        raise NetnsError("the `ip` command (iproute2) is not installed") from None
    except subprocess.TimeoutExpired:
        raise NetnsError(f"`{' '.join(command)}` did not finish in {timeout_s:.0f}s") from None
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip() or "no output"
        raise NetnsError(f"`{' '.join(command)}` failed (exit {done.returncode}): {output}")
    return done.stdout


def netns_unavailable_reason() -> str | None:
    """Why this machine cannot run a netns testnet, or ``None`` when it can (checked by doing
    it: create a namespace with a veth inside, then delete it)."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root (`ip netns add` needs CAP_SYS_ADMIN)"
    probe = f"spnprobe-{os.getpid()}-{secrets.token_hex(2)}"
    try:
        run_ip("netns", "add", probe, timeout_s=_PROBE_TIMEOUT_S)
    except NetnsError as error:
        return f"cannot create a network namespace here: {error}"
    try:
        run_ip(
            *(
                "-n",
                probe,
                "link",
                "add",
                "name",
                "probe0",
                "type",
                "veth",
                "peer",
                "name",
                "probe1",
            ),
            timeout_s=_PROBE_TIMEOUT_S,
        )
    except NetnsError as error:
        return f"cannot create a veth pair here: {error}"
    finally:
        with contextlib.suppress(NetnsError):
            run_ip("netns", "delete", probe, timeout_s=_PROBE_TIMEOUT_S)
    try:
        LOCK_DIRECTORY.mkdir(mode=0o700, exist_ok=True)
    except OSError as error:
        return f"cannot create {LOCK_DIRECTORY}: {error.strerror}"
    return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing)."""
    LOCK_DIRECTORY.mkdir(mode=0o700, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def _namespaces() -> list[str]:
    # `ip netns list` prints "name" or "name (id: N)" per line.
    return [line.split()[0] for line in run_ip("netns", "list").splitlines() if line.strip()]


def _root_links() -> list[str]:
    # `ip -o link` prints "N: name@peer: <FLAGS> ..." per line.
    names = []
    for line in run_ip("-o", "link", "show").splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@")[0])
    return names


def _names_of(prefix: str) -> tuple[list[str], list[str]]:
    """The namespaces and root-side links whose names start with ``prefix``."""
    namespaces = [name for name in _namespaces() if name.startswith(prefix + "-")]
    links = [name for name in _root_links() if name.startswith(prefix + "h")]
    return namespaces, links


def _pids_in(namespace: str) -> list[int]:
    try:
        return [int(pid) for pid in run_ip("netns", "pids", namespace).split()]
    except NetnsError:
        return []  # the namespace is already gone


def _kill_processes_in(namespace: str) -> None:
    """SIGKILL whatever still runs in ``namespace`` (normally nothing: the caller stopped its
    nodes) and wait until nothing does; a child stays for its ``Popen`` to reap."""
    pids = _pids_in(namespace)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + _STOP_WAIT_S
    while pids and time.monotonic() < deadline:
        time.sleep(0.05)  # a SIGKILLed process leaves the namespace within milliseconds
        pids = _pids_in(namespace)


def _remove(prefix: str) -> list[str]:
    """Remove every namespace and root-side link of run ``prefix``; the errors, if any."""
    errors = []
    try:
        namespaces, links = _names_of(prefix)
    except NetnsError as error:
        return [str(error)]
    for namespace in namespaces:
        _kill_processes_in(namespace)
    for link in links:
        try:
            run_ip("link", "delete", link)
        except NetnsError as error:
            if "Cannot find device" not in str(error):  # gone with its namespace meanwhile
                errors.append(str(error))
    for namespace in namespaces:
        try:
            run_ip("netns", "delete", namespace)
        except NetnsError as error:
            errors.append(str(error))
    return errors


def sweep_stale() -> list[str]:
    """Remove the namespaces and veths of runs whose owner died without cleaning up (their
    lock file exists but nobody holds it); return those runs' prefixes."""
    removed: list[str] = []
    if not LOCK_DIRECTORY.is_dir():
        return removed
    for lock_file in sorted(LOCK_DIRECTORY.glob("spn*.lock")):
        prefix = lock_file.stem
        if not PREFIX_PATTERN.fullmatch(prefix):
            continue
        descriptor = os.open(lock_file, os.O_RDWR)
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    continue  # its run is alive
                raise
            _remove(prefix)
            lock_file.unlink(missing_ok=True)
            removed.append(prefix)
        finally:
            os.close(descriptor)
    return removed


def _mac(node: int, peer: int) -> str:
    """Node ``node``'s MAC on its link with ``peer``: locally administered, unique per link."""
    return f"02:53:50:{node:02x}:{peer:02x}:01"


@dataclass(frozen=True, slots=True)
class _Cut:
    """One cut link: both directions (link down) or ``node`` to ``peer`` only (a route)."""

    node: int
    peer: int
    one_way: bool


class Topology:
    """One run's namespaces and links (see the module documentation); a context manager that
    builds them on entry and removes them on exit."""

    def __init__(self, nodes: int) -> None:
        if not 1 <= nodes <= NODES_MAX:
            raise ValueError(f"a netns testnet has 1..{NODES_MAX} nodes, not {nodes}")
        self.nodes = nodes
        self.prefix = ""
        self._host_networks: list[ipaddress.IPv4Network] = []
        self._lock_descriptor: int | None = None
        self._cuts: dict[tuple[int, int], _Cut] = {}
        self._guard = threading.Lock()

    # ----------------------------------------------------------------- names and addresses

    def namespace(self, index: int) -> str:
        """Node ``index``'s namespace."""
        return f"{self.prefix}-node{index}"

    @property
    def namespaces(self) -> tuple[str, ...]:
        """Every node's namespace, in node order."""
        return tuple(self.namespace(i) for i in range(self.nodes))

    def host_link(self, index: int) -> str:
        """The root-side end of node ``index``'s veth to the root namespace."""
        return f"{self.prefix}h{index}"

    def api_host(self, index: int) -> str:
        """Node ``index``'s address on its veth to the root namespace (API, metrics)."""
        return str(self._host_networks[index].network_address + 2)

    @staticmethod
    def peer_host(index: int, peer: int) -> str:
        """``peer``'s address on its link with node ``index`` (where ``index`` dials it)."""
        low, high = min(index, peer), max(index, peer)
        return f"10.{low}.{high}.{1 if peer == low else 2}"

    def command_prefix(self, index: int) -> tuple[str, ...]:
        """What runs a command inside node ``index``'s namespace."""
        return ("ip", "netns", "exec", self.namespace(index))

    def layout(self) -> Layout:
        """The testnet layout: peers on every address, dialled on their pair links; API and
        metrics on the host-side veth."""
        nodes = tuple(
            NodeAddresses(
                p2p_listen=HostPort("0.0.0.0", P2P_PORT),
                rpc_listen=HostPort(self.api_host(i), API_PORT),
                metrics_listen=HostPort(self.api_host(i), METRICS_PORT),
            )
            for i in range(self.nodes)
        )
        dial = tuple(
            tuple(
                None if i == j else HostPort(self.peer_host(i, j), P2P_PORT)
                for j in range(self.nodes)
            )
            for i in range(self.nodes)
        )
        return Layout("netns", nodes, dial)

    # ----------------------------------------------------------------- building

    def __enter__(self) -> Topology:
        self.create()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def create(self) -> None:
        """Build every namespace and link; on any failure remove what was built and raise
        ``NetnsError``.

        Ctrl-C while building (on the main thread) is raised here between two steps, not
        wherever the interpreter happens to be: raised inside the clean-up of a finished `ip`
        command's process object, it would be reported and dropped, and the build would go
        on to the end."""
        assert not self.prefix, "a topology is created once"
        main = threading.current_thread() is threading.main_thread()
        interrupted: list[int] = []

        def hold(number: int, frame: FrameType | None) -> None:
            interrupted.append(number)

        def step() -> None:
            if interrupted:
                raise KeyboardInterrupt

        previous = signal.signal(signal.SIGINT, hold) if main else None
        try:
            try:
                with _locked(LOCK_DIRECTORY / "allocate.lock"):
                    # Under the lock: no other run is between creating its lock file and
                    # locking it.
                    sweep_stale()
                    self._claim_prefix()
                    self._host_networks = self._free_host_networks()
                    for index in range(self.nodes):
                        step()
                        self._create_namespace(index)
                for low in range(self.nodes):
                    for high in range(low + 1, self.nodes):
                        step()
                        self._create_pair(low, high)
                step()
                self._wait_carriers()
            finally:
                if main:
                    signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)
            step()  # one that came after the last step
        except BaseException:
            self.close()
            raise

    def _claim_prefix(self) -> None:
        taken = {name.split("-")[0] for name in _namespaces()}
        taken |= {name[:7] for name in _root_links() if PREFIX_PATTERN.match(name)}
        for _ in range(_RUN_ID_ATTEMPTS):
            prefix = f"spn{secrets.token_hex(2)}"
            if prefix in taken:
                continue
            LOCK_DIRECTORY.mkdir(mode=0o700, exist_ok=True)
            path = LOCK_DIRECTORY / f"{prefix}.lock"
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(descriptor)  # another run holds this prefix
                continue
            self.prefix = prefix
            self._lock_descriptor = descriptor
            return
        raise NetnsError(f"no free run prefix after {_RUN_ID_ATTEMPTS} tries")

    def _free_host_networks(self) -> list[ipaddress.IPv4Network]:
        """``nodes`` /30 networks in ``HOST_NETWORK`` that overlap no address or route of the
        root namespace (the caller holds the allocation lock)."""
        used: list[ipaddress.IPv4Network] = []
        for line in run_ip("-4", "-o", "address", "show").splitlines():
            fields = line.split()
            if "inet" in fields:
                text = fields[fields.index("inet") + 1]
                used.append(ipaddress.IPv4Interface(text).network)
        for line in run_ip("-4", "route", "show", "table", "all").splitlines():
            fields = line.split()
            if not fields:
                continue
            # "[type] destination ...": a route type word comes first for non-unicast routes.
            destination = fields[1] if fields[0] in _ROUTE_TYPES and len(fields) > 1 else fields[0]
            with contextlib.suppress(ValueError):  # "default" and the like
                used.append(ipaddress.IPv4Network(destination, strict=False))
        used = [network for network in used if network.overlaps(HOST_NETWORK)]
        blocks = list(HOST_NETWORK.subnets(new_prefix=30))
        start = secrets.randbelow(len(blocks))
        chosen: list[ipaddress.IPv4Network] = []
        for offset in range(len(blocks)):
            block = blocks[(start + offset) % len(blocks)]
            if not any(block.overlaps(network) for network in used):
                chosen.append(block)
                if len(chosen) == self.nodes:
                    return chosen
        raise NetnsError(f"fewer than {self.nodes} free /30 networks left in {HOST_NETWORK}")

    def _create_namespace(self, index: int) -> None:
        namespace = self.namespace(index)
        network = self._host_networks[index]
        root_side = self.host_link(index)
        run_ip("netns", "add", namespace)
        run_ip("-n", namespace, "link", "set", "lo", "up")
        run_ip("link", "add", root_side, "type", "veth", "peer", "name", "host", "netns", namespace)
        run_ip("address", "add", f"{network.network_address + 1}/30", "dev", root_side)
        run_ip("-n", namespace, "address", "add", f"{self.api_host(index)}/30", "dev", "host")
        run_ip("link", "set", root_side, "up")
        run_ip("-n", namespace, "link", "set", "host", "up")

    def _create_pair(self, low: int, high: int) -> None:
        # Quiet links: no ARP (permanent neighbour entries instead) and no IPv6 addresses, so
        # a link's packet counters count exactly the nodes' IPv4 traffic (``received_packets``).
        ends = ((low, high), (high, low))
        run_ip(
            *("-n", self.namespace(low), "link", "add", f"peer{high}", "address", _mac(low, high)),
            *("type", "veth", "peer", "name", f"peer{low}", "address", _mac(high, low)),
            *("netns", self.namespace(high)),
        )
        for node, peer in ends:
            namespace, device = self.namespace(node), f"peer{peer}"
            run_ip("-n", namespace, "link", "set", device, "addrgenmode", "none", "arp", "off")
            own = f"{self.peer_host(peer, node)}/30"
            run_ip("-n", namespace, "address", "add", own, "dev", device)
            self._add_neighbour(node, peer)
        for node, peer in ends:
            run_ip("-n", self.namespace(node), "link", "set", f"peer{peer}", "up")

    def _add_neighbour(self, node: int, peer: int) -> None:
        """Tell ``node`` the peer's MAC on their link (the link has no ARP). Taking the device
        down flushes this entry, so a heal adds it again."""
        run_ip(
            *("-n", self.namespace(node), "neighbour", "replace", self.peer_host(node, peer)),
            *("lladdr", _mac(peer, node), "dev", f"peer{peer}", "nud", "permanent"),
        )

    def _wait_carriers(self, *namespaces: str) -> None:
        """Wait until every link in ``namespaces`` (default all) reports a carrier: the kernel
        raises it asynchronously, up to about a second after ``link set up``, and traffic
        sent before that is lost."""
        deadline = time.monotonic() + _CARRIER_WAIT_S
        for namespace in namespaces or self.namespaces:
            while "NO-CARRIER" in run_ip("-n", namespace, "-o", "link", "show"):
                if time.monotonic() > deadline:
                    raise NetnsError(
                        f"links in {namespace} have no carrier after {_CARRIER_WAIT_S:g}s"
                    )
                time.sleep(0.05)

    # ----------------------------------------------------------------- link faults

    def _check_pair(self, node: int, peer: int) -> tuple[int, int]:
        if not (0 <= node < self.nodes and 0 <= peer < self.nodes) or node == peer:
            raise ValueError(f"no link between node{node} and node{peer}")
        return min(node, peer), max(node, peer)

    def cut(self, node: int, peer: int, *, one_way: bool = False) -> None:
        """Cut the link between ``node`` and ``peer``: both directions, or with ``one_way``
        only what ``node`` sends to ``peer``. A link is cut at most once at a time."""
        key = self._check_pair(node, peer)
        with self._guard:
            if key in self._cuts:
                raise ValueError(f"the link node{key[0]}-node{key[1]} is already cut")
            if one_way:
                run_ip(
                    "-n",
                    self.namespace(node),
                    "route",
                    "add",
                    "blackhole",
                    f"{self.peer_host(node, peer)}/32",
                )
            else:
                run_ip("-n", self.namespace(node), "link", "set", f"peer{peer}", "down")
            self._cuts[key] = _Cut(node, peer, one_way)

    def heal(self, node: int, peer: int) -> None:
        """Undo the cut of the link between ``node`` and ``peer`` (nothing if it is whole)."""
        key = self._check_pair(node, peer)
        with self._guard:
            cut = self._cuts.get(key)
            if cut is None:
                return
            if cut.one_way:
                run_ip(
                    "-n",
                    self.namespace(cut.node),
                    "route",
                    "delete",
                    "blackhole",
                    f"{self.peer_host(cut.node, cut.peer)}/32",
                )
            else:
                run_ip("-n", self.namespace(cut.node), "link", "set", f"peer{cut.peer}", "up")
                self._add_neighbour(cut.node, cut.peer)
                self._wait_carriers(self.namespace(cut.node), self.namespace(cut.peer))
            del self._cuts[key]

    def received_packets(self, node: int, peer: int) -> int:
        """Packets ``node`` has received on its link with ``peer`` since the link was made
        (IPv4 only: the link carries nothing else)."""
        self._check_pair(node, peer)
        output = run_ip("-j", "-s", "-n", self.namespace(node), "link", "show", f"peer{peer}")
        try:
            (device,) = json.loads(output)
            packets = device["stats64"]["rx"]["packets"]
        except (ValueError, KeyError, TypeError) as error:
            raise NetnsError(
                f"cannot read the packet counters in {output[:200]!r}: {error}"
            ) from None
        if not isinstance(packets, int):
            raise NetnsError(f"packet counter is not a number: {packets!r}")
        return packets

    def is_cut(self, node: int, peer: int) -> bool:
        """True while the link between ``node`` and ``peer`` is cut (either way)."""
        return self._check_pair(node, peer) in self._cuts

    # ----------------------------------------------------------------- clean-up

    def leftovers(self) -> list[str]:
        """The run's namespaces and root-side veths that still exist (empty after ``close``)."""
        if not self.prefix:
            return []
        namespaces, links = _names_of(self.prefix)
        return namespaces + links

    def close(self) -> list[str]:
        """Remove every namespace and veth of this run (idempotent); return the problems met.
        Ctrl-C and SIGTERM are held off meanwhile, so a second one cannot leave half a
        topology behind."""
        if not self.prefix:
            return []
        main = threading.current_thread() is threading.main_thread()
        held = [
            (number, signal.signal(number, signal.SIG_IGN))
            for number in ((signal.SIGINT, signal.SIGTERM) if main else ())
        ]
        try:
            errors = _remove(self.prefix)
            self._cuts.clear()
            if self._lock_descriptor is not None:
                (LOCK_DIRECTORY / f"{self.prefix}.lock").unlink(missing_ok=True)
                os.close(self._lock_descriptor)
                self._lock_descriptor = None
        finally:
            for number, handler in held:
                signal.signal(number, handler)
        return errors
