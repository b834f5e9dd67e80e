"""Scenarios for whole ``Network`` nodes: real TCP on 127.0.0.1 among nodes in one trio process.

No test waits on the wall clock for something to happen: each waits for an event or polls a
condition under a generous deadline, so a busy machine makes tests slower, never red.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing

from consensus.crypto import PrivateKey, hash_bytes
from network import (
    InboundMessage,
    InboundTransactions,
    Network,
    NetworkConfig,
    NetworkLimits,
    PeerAddress,
    PeerUnavailableError,
    RequestError,
)
from network import network as network_module
from network.channel import SecureStream
from network.handshake import HandshakeResult, perform_handshake
from network.loglimit import LogLimiter
from network.messages import Ping, decode_message, encode_message, encode_ping
from tests.test_network_wire import handshake_pair

CHAIN_ID = "suanpan-test"
GENESIS = hash_bytes(b"genesis")
KEYS = [PrivateKey(bytes([index + 1]) * 32) for index in range(6)]
# Generous: the machine is shared. Short backoff so redials happen promptly in real time.
TEST_LIMITS = NetworkLimits(
    handshake_timeout_seconds=20.0,
    dial_backoff_base_seconds=0.05,
    dial_backoff_max_seconds=0.5,
    ping_interval_seconds=30.0,
    idle_timeout_seconds=120.0,
)
DEADLINE_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def config_for(
    index: int,
    peers: Sequence[tuple[int, int]] = (),
    *,
    port: int = 0,
    chain_id: str = CHAIN_ID,
    genesis: bytes = GENESIS,
    allow: Sequence[int] = range(4),
    limits: NetworkLimits = TEST_LIMITS,
) -> NetworkConfig:
    """Node ``index``; ``peers`` are (index, port) pairs it dials."""
    return NetworkConfig(
        chain_id=chain_id,
        genesis_hash=genesis,
        identity=KEYS[index],
        listen_port=port,
        persistent_peers=tuple(
            PeerAddress(KEYS[other].public_key, "127.0.0.1", other_port)
            for other, other_port in peers
        ),
        allowlist=frozenset(KEYS[other].public_key for other in allow if other != index),
        limits=limits,
    )


@dataclass
class Node:
    network: Network
    scope: trio.CancelScope
    delivered: list[bytes] = field(default_factory=list)
    messages: list[InboundMessage] = field(default_factory=list)


async def _drain(node: Node) -> None:
    async def transactions() -> None:
        batch: InboundTransactions
        async for batch in node.network.transactions:
            node.delivered.extend(batch.transactions)

    async def messages() -> None:
        async for message in node.network.messages:
            node.messages.append(message)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(transactions)
        nursery.start_soon(messages)


async def start_node(nursery: trio.Nursery, network: Network) -> Node:
    """Run ``network`` (and consumers of its channels) in its own cancel scope."""
    scope = trio.CancelScope()
    node = Node(network, scope)

    async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            async with trio.open_nursery() as inner:
                await inner.start(network.run)
                inner.start_soon(_drain, node)
                task_status.started()

    await nursery.start(run)
    return node


async def wait_for(condition: Callable[[], bool], deadline: float = DEADLINE_SECONDS) -> None:
    # Statistics counters have no event to wait on, so poll them under a generous deadline.
    with trio.fail_after(deadline):
        while not condition():  # noqa: ASYNC110
            await trio.sleep(0.01)


@asynccontextmanager
async def mesh(count: int = 4) -> AsyncIterator[tuple[trio.Nursery, list[Node]]]:
    """``count`` nodes, fully connected: node i dials every node started before it."""
    async with trio.open_nursery() as nursery:
        nodes: list[Node] = []
        for index in range(count):
            peers = [(other, nodes[other].network.listen_port) for other in range(index)]
            nodes.append(await start_node(nursery, Network(config_for(index, peers))))
        with trio.fail_after(DEADLINE_SECONDS):
            for index, node in enumerate(nodes):
                others = [KEYS[other].public_key for other in range(count) if other != index]
                await node.network.wait_peers_connected(others)
        yield nursery, nodes
        nursery.cancel_scope.cancel()


def transactions(tag: str, count: int) -> list[bytes]:
    return [f"{tag}-{number:06d}".encode() + bytes(180) for number in range(count)]


async def test_gossip_reaches_every_node_exactly_once() -> None:
    async with mesh(4) as (_, nodes):
        sent = {index: transactions(f"origin{index}", 300) for index in range(4)}
        for index, node in enumerate(nodes):
            # In several calls, so batches and flooding interleave.
            for start in range(0, 300, 70):
                chunk = sent[index][start : start + 70]
                assert node.network.gossip_transactions(chunk) == len(chunk)
        for index, node in enumerate(nodes):
            expected = {tx for other, txs in sent.items() if other != index for tx in txs}
            await wait_for(lambda: len(node.delivered) >= 900)  # noqa: B023 - awaited here
            assert sorted(node.delivered) == sorted(expected)  # each once, none missing
        # Re-gossiping known transactions sends nothing new anywhere.
        assert nodes[0].network.gossip_transactions(sent[1][:10]) == 0
        for index, node in enumerate(nodes):
            stats = node.network.statistics()
            assert stats.transactions_delivered == 900
            assert stats.transactions_gossiped == 300
            assert stats.transactions_shed_outbound == stats.transactions_shed_inbound == 0
            assert stats.peers_connected == 3
            assert stats.connection_errors == {}, index


async def test_resent_transactions_reach_only_peers_that_lack_them() -> None:
    """A resend goes to every peer again; a peer that holds the bytes drops them as duplicates,
    one that forgot them (dropped for a passing reason) takes them again."""
    async with mesh(2) as (_, nodes):
        origin, peer = nodes
        sent = transactions("resend", 5)
        assert origin.network.gossip_transactions(sent) == 5
        await wait_for(lambda: len(peer.delivered) >= 5)
        # Already known to the origin's gossip: nothing goes out; a resend goes regardless.
        assert origin.network.gossip_transactions(sent) == 0
        origin.network.resend_transactions(sent)
        await wait_for(lambda: peer.network.statistics().transactions_duplicate >= 5)
        assert len(peer.delivered) == 5
        # The peer forgets two of them: the next resend delivers exactly those two.
        peer.network.forget_transactions(sent[1:3])
        origin.network.resend_transactions(sent)
        await wait_for(lambda: len(peer.delivered) >= 7)
        await wait_for(lambda: peer.network.statistics().transactions_duplicate >= 8)
        assert sorted(peer.delivered[5:]) == sorted(sent[1:3])
        stats = origin.network.statistics()
        assert (stats.transactions_gossiped, stats.transactions_resent) == (5, 10)
        assert peer.network.statistics().transactions_forgotten == 2


async def test_transactions_shed_inbound_are_taken_when_resent() -> None:
    """A frame shed because the node's transaction channel was full is not remembered as seen:
    the origin's resend delivers it."""
    limits = dataclasses.replace(TEST_LIMITS, inbound_transaction_batches_max=1)
    async with trio.open_nursery() as nursery:
        origin = Network(config_for(0, limits=limits))
        await nursery.start(origin.run)
        receiver = Network(config_for(1, [(0, origin.listen_port)], limits=limits))
        await nursery.start(receiver.run)  # nobody reads its transaction channel yet
        with trio.fail_after(DEADLINE_SECONDS):
            await receiver.wait_peers_connected([KEYS[0].public_key])
            await origin.wait_peers_connected([KEYS[1].public_key])
        first, second = transactions("shed", 2)
        origin.gossip_transactions([first])
        await wait_for(lambda: receiver.statistics().transactions_delivered == 1)
        origin.gossip_transactions([second])  # the channel holds the first: shed
        await wait_for(lambda: receiver.statistics().transactions_shed_inbound == 1)
        delivered = [receiver.transactions.receive_nowait()]
        origin.resend_transactions([first, second])
        with trio.fail_after(DEADLINE_SECONDS):
            delivered.append(await receiver.transactions.receive())
        assert [batch.transactions for batch in delivered] == [(first,), (second,)]
        stats = receiver.statistics()
        assert (stats.transactions_delivered, stats.transactions_duplicate) == (2, 1)
        nursery.cancel_scope.cancel()


async def test_gossip_is_relayed_by_announce_and_fetch_across_a_line() -> None:
    """0 - 1 - 2: nodes 0 and 2 are not connected; node 1 announces, the far end fetches."""
    async with trio.open_nursery() as nursery:
        nodes = [await start_node(nursery, Network(config_for(0)))]
        nodes.append(
            await start_node(nursery, Network(config_for(1, [(0, nodes[0].network.listen_port)])))
        )
        nodes.append(
            await start_node(nursery, Network(config_for(2, [(1, nodes[1].network.listen_port)])))
        )
        # Both ends of each link must have registered it: an origin pushes only to the peers it
        # is connected to at that moment.
        with trio.fail_after(DEADLINE_SECONDS):
            await nodes[1].network.wait_peers_connected([KEYS[0].public_key, KEYS[2].public_key])
            await nodes[0].network.wait_peers_connected([KEYS[1].public_key])
            await nodes[2].network.wait_peers_connected([KEYS[1].public_key])
        from_0, from_2 = transactions("left", 400), transactions("right", 300)
        nodes[0].network.gossip_transactions(from_0)
        nodes[2].network.gossip_transactions(from_2)
        await wait_for(lambda: len(nodes[2].delivered) >= 400 and len(nodes[0].delivered) >= 300)
        await wait_for(lambda: len(nodes[1].delivered) >= 700)
        assert sorted(nodes[2].delivered) == sorted(from_0)
        assert sorted(nodes[0].delivered) == sorted(from_2)
        assert sorted(nodes[1].delivered) == sorted(from_0 + from_2)
        middle = nodes[1].network.statistics()
        assert middle.fetches_served == 700
        assert middle.transactions_announced == 700
        assert nodes[2].network.statistics().transactions_fetched == 400
        nursery.cancel_scope.cancel()


async def test_killed_peer_is_redialled_and_catches_up_on_new_gossip() -> None:
    async with mesh(4) as (nursery, nodes):
        first = transactions("before", 50)
        nodes[1].network.gossip_transactions(first)
        await wait_for(lambda: all(len(node.delivered) == 50 for node in nodes[2:] + nodes[:1]))

        # Kill node 0 (the others all dial it), then bring it back on the same port.
        port = nodes[0].network.listen_port
        nodes[0].scope.cancel()
        await wait_for(
            lambda: all(node.network.statistics().peers_connected == 2 for node in nodes[1:])
        )
        nodes[1].network.gossip_transactions(transactions("while-down", 20))
        restarted = await start_node(nursery, Network(config_for(0, port=port)))
        with trio.fail_after(DEADLINE_SECONDS):
            await restarted.network.wait_peers_connected(KEYS[i].public_key for i in (1, 2, 3))
        for node in nodes[1:]:
            with trio.fail_after(DEADLINE_SECONDS):
                await node.network.wait_peers_connected([KEYS[0].public_key])

        after = transactions("after", 60)
        nodes[2].network.gossip_transactions(after)
        await wait_for(lambda: len(restarted.delivered) >= 60)
        assert sorted(restarted.delivered) == sorted(after)
        assert nodes[3].network.statistics().dial_attempts >= 2


async def test_consensus_send_broadcast_and_block_sync_request() -> None:
    async def handler(peer: bytes, payload: bytes) -> bytes:
        if payload == b"fail":
            raise LookupError("no such height")
        return b"block:" + payload + b":for:" + peer[:2]

    async with trio.open_nursery() as nursery:
        server = await start_node(nursery, Network(config_for(0), request_handler=handler))
        port = server.network.listen_port
        clients = [
            await start_node(nursery, Network(config_for(index, [(0, port)]))) for index in (1, 2)
        ]
        with trio.fail_after(DEADLINE_SECONDS):
            await server.network.wait_peers_connected([KEYS[1].public_key, KEYS[2].public_key])

        assert server.network.broadcast(7, b"prepare") == 2
        assert clients[0].network.send(KEYS[0].public_key, 9, b"commit")
        assert not clients[0].network.send(KEYS[3].public_key, 9, b"nobody")  # not connected
        await wait_for(lambda: all(client.messages for client in clients) and bool(server.messages))
        for client in clients:
            assert client.messages == [InboundMessage(KEYS[0].public_key, 7, b"prepare")]
        assert server.messages == [InboundMessage(KEYS[1].public_key, 9, b"commit")]
        assert clients[0].network.statistics().messages_undeliverable == 1

        answer = await clients[1].network.request(KEYS[0].public_key, b"h=5")
        assert answer == b"block:h=5:for:" + KEYS[2].public_key[:2]
        with pytest.raises(RequestError, match="no such height"):
            await clients[1].network.request(KEYS[0].public_key, b"fail")
        with pytest.raises(PeerUnavailableError):
            await clients[1].network.request(KEYS[3].public_key, b"h=1")
        nursery.cancel_scope.cancel()


async def test_simultaneous_dials_leave_exactly_one_agreed_connection() -> None:
    port_a, port_b = free_port(), free_port()
    async with trio.open_nursery() as nursery:
        a = await start_node(nursery, Network(config_for(0, [(1, port_b)], port=port_a)))
        b = await start_node(nursery, Network(config_for(1, [(0, port_a)], port=port_b)))
        with trio.fail_after(DEADLINE_SECONDS):
            await a.network.wait_peers_connected([KEYS[1].public_key])
            await b.network.wait_peers_connected([KEYS[0].public_key])
        # Messages flow both ways over whichever connection won.
        a.network.send(KEYS[1].public_key, 1, b"ping-a")
        b.network.send(KEYS[0].public_key, 1, b"ping-b")
        await wait_for(lambda: bool(a.messages) and bool(b.messages))
        assert len(a.network.peers()) == len(b.network.peers()) == 1
        [peer_of_a] = a.network.peers()
        [peer_of_b] = b.network.peers()
        assert peer_of_a.outbound != peer_of_b.outbound  # both ends kept the same connection
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"genesis": hash_bytes(b"another genesis")}, "genesis_mismatch"),
        ({"chain_id": "another-chain"}, "chain_id_mismatch"),
    ],
)
async def test_peer_on_another_chain_is_rejected_with_a_plain_log_event(
    caplog: pytest.LogCaptureFixture, override: dict[str, object], reason: str
) -> None:
    caplog.set_level(logging.WARNING, logger="suanpan.network")
    async with trio.open_nursery() as nursery:
        a = await start_node(nursery, Network(config_for(0)))
        b_config = config_for(1, [(0, a.network.listen_port)], **override)  # type: ignore[arg-type]
        b = await start_node(nursery, Network(b_config))
        await wait_for(lambda: a.network.statistics().handshake_failures.get(reason, 0) >= 1)
        await wait_for(lambda: b.network.statistics().handshake_failures.get(reason, 0) >= 1)
        assert a.network.peers() == []
        assert b.network.peers() == []
        nursery.cancel_scope.cancel()
    lines = [record.getMessage() for record in caplog.records]
    assert any(
        line.startswith(f"handshake_rejected reason={reason} peer=127.0.0.1:") for line in lines
    )


async def test_a_flood_of_bad_handshakes_is_counted_and_its_log_lines_are_bounded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="suanpan.network")
    attempts = 60
    async with trio.open_nursery() as nursery:
        node = await start_node(nursery, Network(config_for(0)))
        for _ in range(attempts):
            stream = await trio.open_tcp_stream("127.0.0.1", node.network.listen_port)
            async with stream:
                with contextlib.suppress(trio.BrokenResourceError):
                    await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"x" * 64)
        await wait_for(
            lambda: sum(node.network.statistics().handshake_failures.values()) >= attempts
        )
        statistics = node.network.statistics()
        nursery.cancel_scope.cancel()
    lines = [r for r in caplog.records if r.getMessage().startswith("handshake_rejected")]
    assert len(lines) == 10  # the first ten of the minute
    assert statistics.handshake_logs_suppressed == attempts - 10
    assert sum(statistics.handshake_failures.values()) == attempts  # every one counted


def test_the_log_limiter_reports_what_it_suppressed_in_the_next_window() -> None:
    limiter = LogLimiter(lines_max=2, window_s=60.0)
    decisions = [limiter.admit("handshake_rejected", now) for now in (0, 1, 2, 3, 59)]
    assert decisions == [(True, 0), (True, 0), (False, 0), (False, 0), (False, 0)]
    assert limiter.admit("other", 5) == (True, 0)  # kinds are limited separately
    assert limiter.admit("handshake_rejected", 60) == (True, 3)
    assert limiter.suppressed_total == 3


async def test_a_flipped_bit_in_a_ciphertext_closes_the_connection() -> None:
    async with trio.open_nursery() as nursery:
        node = await start_node(nursery, Network(config_for(0)))
        stream = await trio.open_tcp_stream("127.0.0.1", node.network.listen_port)
        result = await perform_handshake(
            stream,
            initiator=True,
            identity=KEYS[1],
            chain_id=CHAIN_ID,
            genesis_hash=GENESIS,
            allowlist={KEYS[0].public_key},
            limits=TEST_LIMITS,
        )
        wire = bytearray(result.stream._sender.seal(encode_message(3, b"a vote")))
        wire[10] ^= 0x04
        await stream.send_all(bytes(wire))
        with trio.fail_after(DEADLINE_SECONDS):
            assert await stream.receive_some(1024) == b""  # the node hung up
        await wait_for(
            lambda: node.network.statistics().connection_errors == {"authentication_failed": 1}
        )
        assert node.messages == []
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_consensus_queue_overflow_closes_the_connection_loudly_and_it_recovers() -> None:
    limits = NetworkLimits(
        consensus_queue_frames_max=4,
        dial_backoff_base_seconds=0.05,
        dial_backoff_max_seconds=0.5,
    )
    async with trio.open_nursery() as nursery:
        a = await start_node(nursery, Network(config_for(0, limits=limits)))
        b = await start_node(
            nursery, Network(config_for(1, [(0, a.network.listen_port)], limits=limits))
        )
        with trio.fail_after(DEADLINE_SECONDS):
            await a.network.wait_peers_connected([KEYS[1].public_key])
        # No checkpoint between the sends: the sender task cannot drain, the queue fills.
        results = [a.network.send(KEYS[1].public_key, 2, b"vote %d" % n) for n in range(5)]
        assert results == [True] * 4 + [False]
        assert a.network.statistics().send_queue_overflows == 1
        # b dials a again; consensus traffic flows once more.
        await wait_for(lambda: a.network.statistics().connections_opened >= 2)
        with trio.fail_after(DEADLINE_SECONDS):
            await a.network.wait_peers_connected([KEYS[1].public_key])
        assert a.network.send(KEYS[1].public_key, 2, b"after")
        await wait_for(lambda: any(m.payload == b"after" for m in b.messages))
        nursery.cancel_scope.cancel()


async def test_consensus_frames_written_before_a_stop_reach_the_peer() -> None:
    """``wait_consensus_sent``: a node that stops on purpose (``[consensus] halt_height``)
    first waits for its queued consensus frames to be written; the peer then gets every one
    though the node's tasks end at once after the wait."""
    async with trio.open_nursery() as nursery:
        a = await start_node(nursery, Network(config_for(0)))
        b = await start_node(nursery, Network(config_for(1, [(0, a.network.listen_port)])))
        with trio.fail_after(DEADLINE_SECONDS):
            await a.network.wait_peers_connected([KEYS[1].public_key])
        votes = [b"vote %d" % n for n in range(3)]
        # No checkpoint between the sends: all three wait in the queue.
        assert all(a.network.send(KEYS[1].public_key, 2, vote) for vote in votes)
        assert a.network.consensus_unsent() == 1
        # No time to write them: the wait says so.
        assert not await a.network.wait_consensus_sent(0)
        assert await a.network.wait_consensus_sent(DEADLINE_SECONDS)
        assert a.network.consensus_unsent() == 0
        a.scope.cancel()
        await wait_for(lambda: [m.payload for m in b.messages] == votes)
        nursery.cancel_scope.cancel()


async def test_gossip_beyond_a_peers_backlog_is_shed_and_counted() -> None:
    limits = NetworkLimits(gossip_queue_bytes_max=200 * 1024)
    async with trio.open_nursery() as nursery:
        a = await start_node(nursery, Network(config_for(0, limits=limits)))
        await start_node(
            nursery, Network(config_for(1, [(0, a.network.listen_port)], limits=limits))
        )
        with trio.fail_after(DEADLINE_SECONDS):
            await a.network.wait_peers_connected([KEYS[1].public_key])
        a.network.gossip_transactions(transactions("small", 100))  # 19 KB: queued
        a.network.gossip_transactions(transactions("large", 2000))  # 380 KB: shed whole
        stats = a.network.statistics()
        assert stats.transactions_forwarded == 100
        assert stats.transactions_shed_outbound == 2000
        assert stats.peers[0].transactions_shed == 2000
        nursery.cancel_scope.cancel()


async def test_inbound_connections_beyond_the_limit_are_refused() -> None:
    limits = NetworkLimits(inbound_connections_max=1, handshake_timeout_seconds=60.0)
    async with trio.open_nursery() as nursery:
        node = await start_node(nursery, Network(config_for(0, limits=limits)))
        first = await trio.open_tcp_stream("127.0.0.1", node.network.listen_port)
        await first.receive_some(64)  # the node's hello: its handshake slot is taken
        second = await trio.open_tcp_stream("127.0.0.1", node.network.listen_port)
        with trio.fail_after(DEADLINE_SECONDS):
            assert await second.receive_some(64) == b""
        assert node.network.statistics().inbound_rejected == 1
        await first.aclose()
        await second.aclose()
        nursery.cancel_scope.cancel()


async def test_a_node_stopped_mid_handshake_closes_the_socket_it_dialled() -> None:
    """A node cancelled while it dials closes the socket it opened itself (left to the garbage
    collector, it would be a ResourceWarning at some later collection): a listener that takes
    the connection and never answers holds the node in its handshake. (An inbound connection's
    socket is closed by ``trio.serve_tcp`` when its handler ends.)"""
    opened: list[trio.SocketStream] = []

    async def open_stream(host: str, port: int) -> trio.abc.Stream:
        stream = await trio.open_tcp_stream(host, port)
        opened.append(stream)
        return stream

    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = int(listeners[0].socket.getsockname()[1])
        network = Network(config_for(0, [(1, port)]), open_stream=open_stream)
        node = await start_node(nursery, network)
        accepted = await listeners[0].accept()
        await accepted.receive_some(64)  # the node's hello: it waits for an answer
        assert len(opened) == 1
        assert opened[0].socket.fileno() >= 0
        node.scope.cancel()
        with trio.fail_after(DEADLINE_SECONDS):
            assert await accepted.receive_some(64) == b""
        assert opened[0].socket.fileno() == -1
        await accepted.aclose()
        await listeners[0].aclose()
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- virtual time (MockClock)


def refusing_opener(attempts: list[float]) -> Callable[[str, int], Awaitable[trio.abc.Stream]]:
    async def open_stream(host: str, port: int) -> trio.abc.Stream:
        attempts.append(trio.current_time())
        raise ConnectionRefusedError(f"{host}:{port} refused")

    return open_stream


def test_redial_backoff_is_exponential_capped_and_jittered_in_virtual_time() -> None:
    limits = NetworkLimits(
        dial_backoff_base_seconds=1.0, dial_backoff_max_seconds=8.0, dial_backoff_jitter=0.5
    )
    attempts: list[float] = []

    async def scenario() -> None:
        network = Network(
            config_for(0, [(1, 9)], limits=limits),
            random=lambda: 0.5,  # jitter factor 1 - 0.5 * 0.5 = 0.75
            open_stream=refusing_opener(attempts),
        )
        with trio.move_on_after(60.0):
            await network.run()
        assert network.statistics().dial_failures == len(attempts)

    trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))
    gaps = [round(later - earlier, 6) for earlier, later in itertools.pairwise(attempts)]
    assert gaps[:6] == [0.75, 1.5, 3.0, 6.0, 6.0, 6.0]


def _run_against_one_peer(
    limits: NetworkLimits,
    peer: Callable[[SecureStream], Awaitable[None]],
    body: Callable[[Network], Awaitable[None]],
) -> None:
    """Run node 0's network in virtual time, dialling one peer (``KEYS[1]``) over a memory
    stream: the peer completes the handshake, then ``peer`` runs on its encrypted stream.
    ``body`` drives the test; the network stops when it returns."""

    async def scenario() -> None:
        async def open_stream(host: str, port: int) -> trio.abc.Stream:
            ours, theirs = trio.testing.memory_stream_pair()
            nursery.start_soon(answer, theirs)
            return ours

        async def answer(stream: trio.abc.Stream) -> None:
            result = await perform_handshake(
                stream,
                initiator=False,
                identity=KEYS[1],
                chain_id=CHAIN_ID,
                genesis_hash=GENESIS,
                allowlist={KEYS[0].public_key},
                limits=limits,
            )
            await peer(result.stream)

        network = Network(config_for(0, [(1, 9)], limits=limits), open_stream=open_stream)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(network.run)
            await body(network)
            nursery.cancel_scope.cancel()

    trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_silent_authenticated_peer_is_dropped_after_the_idle_timeout() -> None:
    limits = NetworkLimits(idle_timeout_seconds=20.0, ping_interval_seconds=5.0)
    closed_at: list[float] = []

    async def silent_peer(stream: SecureStream) -> None:
        while await stream.receive_frame() is not None:  # reads pings, never answers
            pass
        closed_at.append(trio.current_time())

    async def body(network: Network) -> None:
        await trio.sleep(30.0)
        assert network.statistics().connection_errors == {"idle_timeout": 1}

    _run_against_one_peer(limits, silent_peer, body)
    assert closed_at
    assert closed_at[0] == pytest.approx(20.0)


def test_an_idle_sender_pings_once_per_interval_until_the_silent_peer_is_dropped() -> None:
    limits = NetworkLimits(idle_timeout_seconds=20.0, ping_interval_seconds=5.0)
    # Per connection: when each ping arrived, and when the connection ended.
    pings_at: list[list[float]] = []
    closed_at: list[float] = []

    async def silent_peer(stream: SecureStream) -> None:
        pings_at.append([])
        while (frame := await stream.receive_frame()) is not None:
            assert decode_message(frame, limits) == Ping()
            pings_at[-1].append(trio.current_time())
        closed_at.append(trio.current_time())

    async def body(network: Network) -> None:
        await trio.sleep(30.0)

    _run_against_one_peer(limits, silent_peer, body)
    # A ping after each 5 s the sender waited, then the connection closed at 20 s: nothing
    # was ever heard from the peer.
    assert pings_at[0] == pytest.approx([5.0, 10.0, 15.0])
    assert closed_at[0] == pytest.approx(20.0)


def test_a_peer_heard_within_the_idle_timeout_is_kept_however_long_the_connection() -> None:
    limits = NetworkLimits(idle_timeout_seconds=20.0, ping_interval_seconds=5.0)

    async def slow_peer(stream: SecureStream) -> None:
        async with trio.open_nursery() as inner:
            inner.start_soon(drain, stream)
            while True:  # one ping every 19 s: never 20 s of silence
                await trio.sleep(19.0)
                await stream.send_frames([encode_ping()])

    async def drain(stream: SecureStream) -> None:
        while await stream.receive_frame() is not None:
            pass

    async def body(network: Network) -> None:
        await trio.sleep(100.0)
        assert network.statistics().connection_errors == {}
        assert [peer.public_key for peer in network.peers()] == [KEYS[1].public_key]

    _run_against_one_peer(limits, slow_peer, body)


def test_a_flooding_peer_is_held_to_its_receive_rate_in_virtual_time() -> None:
    limits = NetworkLimits(peer_receive_frames_per_second=1000.0)
    finished_at: list[float] = []

    async def flooding_peer(stream: SecureStream) -> None:
        await stream.send_frames([encode_message(1, b"x")] * 5000)
        await trio.sleep_forever()

    async def count(network: Network) -> None:
        for _ in range(5000):
            await network.messages.receive()
        finished_at.append(trio.current_time())

    _run_against_one_peer(limits, flooding_peer, count)
    # A burst of 1000 frames, then 1000 frames per (virtual) second.
    assert finished_at[0] == pytest.approx(4.0, abs=0.01)


def test_a_peers_consensus_messages_are_held_to_their_own_rate_in_virtual_time() -> None:
    """Well inside the frame rate, a peer's consensus messages (a decode and often a signature
    check each for the node) are held to ``peer_receive_messages_per_second``."""
    limits = NetworkLimits(peer_receive_messages_per_second=2000.0)
    finished_at: list[float] = []

    async def flooding_peer(stream: SecureStream) -> None:
        await stream.send_frames([encode_message(1, b"x")] * 10_000)
        await trio.sleep_forever()

    async def count(network: Network) -> None:
        for _ in range(10_000):
            await network.messages.receive()
        finished_at.append(trio.current_time())

    _run_against_one_peer(limits, flooding_peer, count)
    # A burst of 2,000 messages, then 2,000 per (virtual) second.
    assert finished_at[0] == pytest.approx(4.0, abs=0.01)


def test_a_quiet_peers_message_is_not_held_behind_a_flooding_peers() -> None:
    """Node 0 dials two peers: one floods it with consensus messages, the other sends one.
    The node takes them from the peers in turn (``network.inbox``): the quiet peer's message
    comes out second, not behind the thousands the flooder got in first."""
    flood = 3000

    async def flooder(stream: SecureStream) -> None:
        await stream.send_frames([encode_message(1, f"flood {n}".encode()) for n in range(flood)])
        await trio.sleep_forever()

    async def quiet(stream: SecureStream) -> None:
        await trio.sleep(1.0)  # after the flood is in
        await stream.send_frames([encode_message(1, b"vote")])
        await trio.sleep_forever()

    async def body(network: Network) -> None:
        with trio.fail_after(60):
            while network.messages.waiting(KEYS[2].public_key) == 0:  # noqa: ASYNC110
                await trio.sleep(0.01)
        assert network.messages.waiting(KEYS[1].public_key) >= 500
        first = [await network.messages.receive() for _ in range(2)]
        assert [message.payload for message in first] == [b"flood 0", b"vote"]
        assert first[1].peer == KEYS[2].public_key

    async def scenario() -> None:
        peers = {9001: (1, flooder), 9002: (2, quiet)}

        async def open_stream(host: str, port: int) -> trio.abc.Stream:
            ours, theirs = trio.testing.memory_stream_pair()
            nursery.start_soon(answer, theirs, *peers[port])
            return ours

        async def answer(
            stream: trio.abc.Stream, index: int, peer: Callable[[SecureStream], Awaitable[None]]
        ) -> None:
            result = await perform_handshake(
                stream,
                initiator=False,
                identity=KEYS[index],
                chain_id=CHAIN_ID,
                genesis_hash=GENESIS,
                allowlist={KEYS[0].public_key},
                limits=TEST_LIMITS,
            )
            await peer(result.stream)

        network = Network(config_for(0, [(1, 9001), (2, 9002)]), open_stream=open_stream)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(network.run)
            await body(network)
            nursery.cancel_scope.cancel()

    trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))


async def _secure_stream() -> SecureStream:
    """One end of an authenticated channel over memory (whose keys the test does not use)."""
    ours, _ = await handshake_pair()
    assert isinstance(ours, HandshakeResult)
    return ours.stream


async def test_a_replaced_connections_sender_leaves_the_queues_to_its_successor() -> None:
    """Two dials crossed and the second connection replaced the first while the first one's
    sender was about to run again: it returns without taking a frame or arming the peer's
    wake-up, which the new connection's sender needs to hear of the next frame."""
    network = Network(config_for(0))
    peer_key = KEYS[1].public_key
    preferred = network.public_key < peer_key  # we dial the preferred connection
    old = network_module._Connection(
        peer_key, await _secure_stream(), not preferred, "127.0.0.1", 1
    )
    new = network_module._Connection(peer_key, await _secure_stream(), preferred, "127.0.0.1", 2)
    assert network._register(old)
    assert network._register(new)
    peer = network._peers[peer_key]
    assert peer.connection is new
    wakeup = trio.Event()
    peer.queues.wakeup = wakeup  # armed by the new connection's sender
    assert peer.queues.push_priority(b"a vote")
    with trio.fail_after(DEADLINE_SECONDS):
        await network._send_loop(old)
    assert list(peer.queues.priority) == [b"a vote"]
    assert peer.queues.wakeup is wakeup
    assert wakeup.is_set()
