"""The wire: bounded framing, frame types, the handshake and the AEAD channel.

Handshakes run over trio.testing memory streams; timeouts run under MockClock, so nothing here
waits in real time. Hypothesis feeds arbitrary bytes to the frame decoder, the message decoder
and the handshake: each must end in a valid result or its own typed error, within its limits.
"""

from __future__ import annotations

import nacl.public
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus.crypto import PrivateKey, hash_bytes
from network import ChannelError, FrameError, HandshakeError, MessageError, NetworkLimits
from network.channel import FrameCipher, SecureStream
from network.framing import FrameDecoder, encode_frame_header
from network.handshake import (
    HANDSHAKE_FRAME_BYTES_MAX,
    HANDSHAKE_TAG,
    HandshakeResult,
    auth_signing_payload,
    derive_session_keys,
    encode_auth,
    encode_hello,
    perform_handshake,
)
from network.messages import (
    Announce,
    Fetch,
    Gossip,
    Message,
    Ping,
    Request,
    Response,
    ResponseStatus,
    decode_message,
    encode_announce,
    encode_fetch,
    encode_gossip,
    encode_message,
    encode_ping,
    encode_request,
    encode_response,
)
from network.ratelimit import TokenBucket
from network.seen import RelayStore, SeenCache

CHAIN_ID = "suanpan-test"
GENESIS = hash_bytes(b"genesis")
ALICE, BOB, MALLORY = (PrivateKey(bytes([n]) * 32) for n in (1, 2, 3))
LIMITS = NetworkLimits(handshake_timeout_seconds=10.0)
HANDSHAKE_REASONS = {"bad_frame", "bad_hello", "bad_auth", "connection_closed", "timeout"}


# ---------------------------------------------------------------- framing


def test_frames_split_anywhere_decode_to_the_same_bodies() -> None:
    bodies = [b"a", b"bc" * 40, bytes(range(256)), b"z"]
    wire = b"".join(encode_frame_header(len(body)) + body for body in bodies)
    for step in (1, 3, 7, len(wire)):
        decoder = FrameDecoder(frame_bytes_max=1024, chunk_bytes_max=len(wire))
        decoded = []
        for start in range(0, len(wire), step):
            decoder.feed(wire[start : start + step])
            while (body := decoder.next_frame()) is not None:
                decoded.append(body)
        assert decoded == bodies
        assert decoder.buffered_bytes == 0


def test_an_oversized_length_is_refused_from_its_header_alone() -> None:
    decoder = FrameDecoder(frame_bytes_max=1000)
    with pytest.raises(FrameError) as caught:
        decoder.feed(encode_frame_header(2**32 - 1))  # nothing but the 4-byte header
    assert caught.value.reason == "frame_too_large"
    assert decoder.buffered_bytes == 0
    with pytest.raises(FrameError):  # a failed decoder stays failed
        decoder.feed(b"more")


def test_feeding_without_draining_is_refused_not_buffered() -> None:
    decoder = FrameDecoder(frame_bytes_max=10, chunk_bytes_max=10)
    frame = encode_frame_header(5) + b"hello"
    decoder.feed(frame)
    decoder.feed(frame)
    with pytest.raises(FrameError) as caught:
        decoder.feed(frame)
    assert caught.value.reason == "buffer_overflow"


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(st.binary(max_size=64), max_size=40), frame_max=st.integers(1, 100))
def test_arbitrary_bytes_to_the_frame_decoder_end_in_frames_or_a_frame_error(
    chunks: list[bytes], frame_max: int
) -> None:
    decoder = FrameDecoder(frame_bytes_max=frame_max, chunk_bytes_max=64)
    failure: FrameError | None = None
    try:
        for chunk in chunks:
            decoder.feed(chunk)
            assert decoder.buffered_bytes <= decoder.buffer_bytes_max
            while (body := decoder.next_frame()) is not None:
                assert 1 <= len(body) <= frame_max
    except FrameError as error:
        failure = error
    if failure is not None:
        assert failure.reason in {"frame_too_large", "empty_frame"}
        assert decoder.buffered_bytes == 0


# ---------------------------------------------------------------- frame types


def test_every_frame_type_round_trips() -> None:
    assert decode_message(encode_ping(), LIMITS) == Ping()
    hashes = (hash_bytes(b"1"), hash_bytes(b"2"))
    assert decode_message(encode_announce(hashes), LIMITS) == Announce(hashes)
    assert decode_message(encode_fetch(hashes), LIMITS) == Fetch(hashes)
    with pytest.raises(MessageError, match="bad_hashes"):
        decode_message(encode_fetch([b"short"]), LIMITS)
    assert decode_message(encode_gossip([b"tx1", b"tx2"]), LIMITS) == Gossip((b"tx1", b"tx2"))
    assert decode_message(encode_message(200, b"vote"), LIMITS) == Message(200, b"vote")
    assert decode_message(encode_request(2**64 - 1, b"h=3"), LIMITS) == Request(2**64 - 1, b"h=3")
    assert decode_message(encode_response(9, ResponseStatus.BUSY, b""), LIMITS) == Response(
        9, ResponseStatus.BUSY, b""
    )


def test_gossip_limits_are_enforced_by_the_decoder() -> None:
    limits = NetworkLimits(transaction_bytes_max=100, transaction_batch_count_max=3)
    with pytest.raises(MessageError, match="bad_gossip"):
        decode_message(encode_gossip([b"x" * 101]), limits)
    with pytest.raises(MessageError, match="bad_gossip"):
        decode_message(encode_gossip([b"x"] * 4), limits)
    with pytest.raises(MessageError, match="unknown_type"):
        decode_message(b"\x99", limits)


@settings(max_examples=300, deadline=None)
@given(plaintext=st.binary(max_size=300) | st.binary(max_size=40).map(lambda b: b"\x02" + b))
def test_arbitrary_plaintexts_decode_or_raise_message_error(plaintext: bytes) -> None:
    limits = NetworkLimits(transaction_bytes_max=64, transaction_batch_count_max=8)
    try:
        message = decode_message(plaintext, limits)
    except MessageError:
        return
    if isinstance(message, Gossip):
        assert len(message.transactions) <= 8
        assert all(1 <= len(tx) <= 64 for tx in message.transactions)


# ---------------------------------------------------------------- helpers with bounds


def test_seen_cache_remembers_recent_keys_within_its_capacity() -> None:
    cache = SeenCache(capacity=10)
    assert all(cache.add(bytes([n])) for n in range(100))
    assert len(cache) <= 10
    assert bytes([99]) in cache
    assert not cache.add(bytes([99]))
    assert bytes([0]) not in cache


def test_relay_store_keeps_a_transaction_at_least_its_generation_time() -> None:
    store = RelayStore(capacity=1000, generation_s=4.0)

    def held() -> set[bytes]:
        return {bytes([n]) for n in range(20) if store.get(hash_bytes(bytes([n]))) is not None}

    def put(n: int, now: float) -> None:
        store.put_many([hash_bytes(bytes([n]))], [bytes([n])], now)

    put(0, 10.0)
    put(1, 13.9)
    assert held() == {b"\x00", b"\x01"}
    # 4 s after the generation's first transaction a new one starts; the old is still held.
    put(2, 14.0)
    assert held() == {b"\x00", b"\x01", b"\x02"}
    put(3, 17.9)
    assert held() == {b"\x00", b"\x01", b"\x02", b"\x03"}
    # The next rotation drops the first generation: 0 and 1, held 8 and 4.1 s.
    put(4, 18.0)
    assert held() == {b"\x02", b"\x03", b"\x04"}
    assert len(store) == 3
    # Nothing put for a long while: the next put rotates once, so what was current stays.
    put(5, 100.0)
    assert held() == {b"\x04", b"\x05"}


def test_relay_store_count_bound_rotates_before_the_time_and_bad_bounds_are_refused() -> None:
    store = RelayStore(capacity=4, generation_s=60.0)
    for n in range(10):
        store.put_many([hash_bytes(bytes([n]))], [bytes([n])], float(n))
    assert len(store) <= 4
    assert store.get(hash_bytes(bytes([9]))) == bytes([9])
    assert store.get(hash_bytes(bytes([0]))) is None
    with pytest.raises(ValueError, match="generation_s"):
        RelayStore(capacity=4, generation_s=0.0)
    with pytest.raises(ValueError, match="capacity"):
        RelayStore(capacity=1)
    with pytest.raises(ValueError, match="relay_store_seconds must exceed fetch_delay_seconds"):
        NetworkLimits(relay_store_seconds=1.0, fetch_delay_seconds=1.0)


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate_per_second=10.0, burst=10.0, now=0.0)
    assert [bucket.consume(1, 0.0) for _ in range(10)] == [0.0] * 10
    assert bucket.consume(1, 0.0) == pytest.approx(0.1)
    assert bucket.consume(1, 10.0) == 0.0


# ---------------------------------------------------------------- handshake


async def handshake_pair(
    alice: PrivateKey = ALICE,
    bob: PrivateKey = BOB,
    *,
    bob_chain_id: str = CHAIN_ID,
    bob_genesis: bytes = GENESIS,
    alice_allows: frozenset[bytes] = frozenset({BOB.public_key}),
) -> tuple[HandshakeResult | HandshakeError, HandshakeResult | HandshakeError]:
    """Alice dials Bob over a memory stream; each side's result or error."""
    left, right = trio.testing.memory_stream_pair()
    outcomes: dict[str, HandshakeResult | HandshakeError] = {}

    async def side(name: str, coroutine_factory: object) -> None:
        try:
            outcomes[name] = await coroutine_factory()  # type: ignore[operator]
        except HandshakeError as error:
            outcomes[name] = error
            if name == "alice":
                await left.aclose()
            else:
                await right.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            side,
            "alice",
            lambda: perform_handshake(
                left,
                initiator=True,
                identity=alice,
                chain_id=CHAIN_ID,
                genesis_hash=GENESIS,
                allowlist=alice_allows,
                limits=LIMITS,
            ),
        )
        nursery.start_soon(
            side,
            "bob",
            lambda: perform_handshake(
                right,
                initiator=False,
                identity=bob,
                chain_id=bob_chain_id,
                genesis_hash=bob_genesis,
                allowlist={ALICE.public_key},
                limits=LIMITS,
            ),
        )
    return outcomes["alice"], outcomes["bob"]


def reason(outcome: HandshakeResult | HandshakeError) -> str:
    assert isinstance(outcome, HandshakeError), outcome
    return outcome.reason


async def test_handshake_authenticates_both_sides_and_frames_flow() -> None:
    alice, bob = await handshake_pair()
    assert isinstance(alice, HandshakeResult)
    assert isinstance(bob, HandshakeResult)
    assert alice.peer_public_key == BOB.public_key
    assert bob.peer_public_key == ALICE.public_key
    await alice.stream.send_frames([b"one", b"two"])
    await bob.stream.send_frames([b"three"])
    assert [await bob.stream.receive_frame() for _ in range(2)] == [b"one", b"two"]
    assert await alice.stream.receive_frame() == b"three"


async def test_frames_one_write_brought_are_taken_without_waiting() -> None:
    alice, bob = await handshake_pair()
    assert isinstance(alice, HandshakeResult)
    assert isinstance(bob, HandshakeResult)
    assert bob.stream.receive_buffered() is None  # nothing received yet, and no wait
    await alice.stream.send_frames([b"one", b"two", b"three"])
    assert await bob.stream.receive_frame() == b"one"
    # The same read brought the other two: taken in order, with no I/O.
    assert bob.stream.receive_buffered() == b"two"
    assert bob.stream.receive_buffered() == b"three"
    assert bob.stream.receive_buffered() is None
    assert bob.stream.frames_received == 3
    await alice.stream.send_frames([b"four"])
    assert await bob.stream.receive_frame() == b"four"


async def test_a_tampered_frame_already_received_fails_authentication() -> None:
    alice, bob, raw = await connected_streams()
    first = alice._sender.seal(b"first")
    second = bytearray(alice._sender.seal(b"second"))
    second[-1] ^= 0x01
    await raw.send_all(first + bytes(second))
    assert await bob.receive_frame() == b"first"
    with pytest.raises(ChannelError, match="authentication_failed"):
        bob.receive_buffered()


async def test_wrong_chain_id_is_rejected_by_both_sides() -> None:
    alice, bob = await handshake_pair(bob_chain_id="other-chain")
    assert reason(alice) == "chain_id_mismatch"
    assert reason(bob) == "chain_id_mismatch"
    assert isinstance(alice, HandshakeError)
    assert "'other-chain'" in alice.detail


async def test_wrong_genesis_hash_is_rejected_by_both_sides() -> None:
    alice, bob = await handshake_pair(bob_genesis=hash_bytes(b"fork"))
    assert reason(alice) == "genesis_mismatch"
    assert reason(bob) == "genesis_mismatch"
    assert isinstance(bob, HandshakeError)
    assert GENESIS.hex() in bob.detail


async def test_unknown_key_is_rejected() -> None:
    alice, _ = await handshake_pair(bob=MALLORY, alice_allows=frozenset({BOB.public_key}))
    assert reason(alice) == "unknown_peer"


async def test_bad_transcript_signature_is_rejected() -> None:
    """Mallory holds Bob's allowlisted key but signs a transcript other than this one (as a
    man in the middle relaying another session's signature would)."""
    ours, theirs = trio.testing.memory_stream_pair()

    async def mallory() -> None:
        ephemeral = nacl.public.PrivateKey.generate()
        await theirs.send_all(encode_hello(bytes(ephemeral.public_key)))
        hello = b""
        while len(hello) < 4 + 40:
            hello += await theirs.receive_some(4 + 40 - len(hello))
        keys = derive_session_keys(ephemeral, hello[4 + 8 :], initiator=False)
        wrong_transcript = hash_bytes(b"some other session")
        signature = BOB.sign(
            HANDSHAKE_TAG, CHAIN_ID, auth_signing_payload(False, wrong_transcript, GENESIS)
        )
        auth = encode_auth(BOB.public_key, CHAIN_ID, GENESIS, signature)
        await theirs.send_all(FrameCipher(keys.responder_to_initiator).seal(auth))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(mallory)
        with pytest.raises(HandshakeError) as caught:
            await perform_handshake(
                ours,
                initiator=True,
                identity=ALICE,
                chain_id=CHAIN_ID,
                genesis_hash=GENESIS,
                allowlist={BOB.public_key},
                limits=LIMITS,
            )
    assert caught.value.reason == "bad_signature"


async def test_reached_peer_must_be_the_one_dialled() -> None:
    left, right = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: perform_handshake(
                right,
                initiator=False,
                identity=MALLORY,
                chain_id=CHAIN_ID,
                genesis_hash=GENESIS,
                allowlist={ALICE.public_key},
                limits=LIMITS,
            )
        )
        with pytest.raises(HandshakeError) as caught:
            await perform_handshake(
                left,
                initiator=True,
                identity=ALICE,
                chain_id=CHAIN_ID,
                genesis_hash=GENESIS,
                allowlist={BOB.public_key, MALLORY.public_key},
                limits=LIMITS,
                expected_peer=BOB.public_key,
            )
    assert caught.value.reason == "unexpected_peer"


def test_a_huge_handshake_frame_is_refused_from_its_header_without_waiting() -> None:
    async def scenario() -> None:
        ours, theirs = trio.testing.memory_stream_pair()
        await theirs.send_all(encode_frame_header(HANDSHAKE_FRAME_BYTES_MAX + 1))  # no body
        with pytest.raises(HandshakeError) as caught:
            await perform_handshake(
                ours,
                initiator=False,
                identity=BOB,
                chain_id=CHAIN_ID,
                genesis_hash=GENESIS,
                allowlist={ALICE.public_key},
                limits=LIMITS,
            )
        assert caught.value.reason == "bad_frame"
        assert trio.current_time() == 0.0  # refused at once, not by the timeout

    trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_stalled_handshake_times_out_in_virtual_time() -> None:
    async def scenario() -> float:
        ours, _silent = trio.testing.memory_stream_pair()
        with pytest.raises(HandshakeError) as caught:
            await perform_handshake(
                ours,
                initiator=False,
                identity=BOB,
                chain_id=CHAIN_ID,
                genesis_hash=GENESIS,
                allowlist={ALICE.public_key},
                limits=LIMITS,
            )
        assert caught.value.reason == "timeout"
        return trio.current_time()

    elapsed = trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))
    assert elapsed == pytest.approx(LIMITS.handshake_timeout_seconds)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    garbage=st.lists(st.binary(max_size=600), max_size=6),
    close=st.booleans(),
    valid_hello_first=st.booleans(),
)
def test_arbitrary_bytes_to_the_handshake_end_in_a_typed_rejection(
    garbage: list[bytes], close: bool, valid_hello_first: bool
) -> None:
    async def scenario() -> None:
        ours, theirs = trio.testing.memory_stream_pair()
        if valid_hello_first:
            await theirs.send_all(encode_hello(bytes(nacl.public.PrivateKey.generate().public_key)))
        for chunk in garbage:
            await theirs.send_all(chunk)
        if close:
            await theirs.send_eof()
        with pytest.raises(HandshakeError) as caught:
            await perform_handshake(
                ours,
                initiator=False,
                identity=BOB,
                chain_id=CHAIN_ID,
                genesis_hash=GENESIS,
                allowlist={ALICE.public_key},
                limits=LIMITS,
            )
        assert caught.value.reason in HANDSHAKE_REASONS

    trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))


# ---------------------------------------------------------------- the AEAD channel


async def connected_streams() -> tuple[SecureStream, SecureStream, trio.abc.Stream]:
    """Alice's and Bob's secure streams, and Alice's raw stream for injecting bytes."""
    alice, bob = await handshake_pair()
    assert isinstance(alice, HandshakeResult)
    assert isinstance(bob, HandshakeResult)
    return alice.stream, bob.stream, alice.stream.stream


async def test_a_flipped_ciphertext_bit_fails_authentication() -> None:
    alice, bob, raw = await connected_streams()
    wire = bytearray(alice._sender.seal(b"commit vote"))
    wire[-3] ^= 0x01
    await raw.send_all(bytes(wire))
    with pytest.raises(ChannelError, match="authentication_failed"):
        await bob.receive_frame()


async def test_a_replayed_frame_fails_authentication() -> None:
    alice, bob, raw = await connected_streams()
    frame = alice._sender.seal(b"prepare")
    await raw.send_all(frame + frame)
    assert await bob.receive_frame() == b"prepare"
    with pytest.raises(ChannelError, match="authentication_failed"):
        await bob.receive_frame()


async def test_reordered_frames_fail_authentication() -> None:
    alice, bob, raw = await connected_streams()
    first, second = alice._sender.seal(b"first"), alice._sender.seal(b"second")
    await raw.send_all(second + first)
    with pytest.raises(ChannelError, match="authentication_failed"):
        await bob.receive_frame()


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(garbage=st.lists(st.binary(min_size=1, max_size=300), max_size=5))
def test_arbitrary_bytes_after_the_handshake_close_cleanly(garbage: list[bytes]) -> None:
    async def scenario() -> None:
        _, bob, raw = await connected_streams()
        for chunk in garbage:
            await raw.send_all(chunk)
        await raw.aclose()
        try:
            while await bob.receive_frame() is not None:
                raise AssertionError("forged bytes produced a frame")
        except (FrameError, ChannelError):
            pass

    trio.run(scenario)


def test_first_sightings_filters_repeats_within_and_across_batches() -> None:
    cache = SeenCache(capacity=100)
    assert cache.first_sightings([b"a", b"b", b"a"]) == (
        [b"a", b"b"],
        [hash_bytes(b"a"), hash_bytes(b"b")],
    )
    assert cache.first_sightings([b"b", b"c"]) == ([b"c"], [hash_bytes(b"c")])
    assert hash_bytes(b"c") in cache
