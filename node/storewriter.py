"""The block writer process: writes a node's blocks and held tree records to its store.

With ``[store] writer_process`` a node writes its blocks here instead of on a thread of its
own: the LMDB puts, the commit and its fsync then take no time from the node's event loop or
its interpreter lock, and the node goes on executing the next block meanwhile, as it does with
the writer thread. The node starts this process (``Store.start_writer_process``) with its own
pid and the descriptor of a memory file they share as arguments, and talks to it over the
process's standard input and output: one msgpack request per frame, its body in the shared
memory file (``node.store.FrameChannel``), one answer each. The process opens the
same LMDB environment and writes exactly what the node's own ``Store`` would write; the node
keeps the held tree records its readers need. It never grows the map itself: it answers
``map_full`` and the node, where the readers are, grows it and sends the new size.

The process exits when its standard input ends, and on Linux the kernel kills it when the node
dies, so no write outlives the node that asked for it by more than the write in progress.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
from pathlib import Path
from typing import IO

from node.heap import HeapTrimmer
from node.store import (
    EncodedBlock,
    FrameChannel,
    MapNotGrownHere,
    Store,
    WriterMessage,
)

__all__ = ["main"]

# prctl(2)'s option that signals this process when its parent thread exits.
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """On Linux, be killed when the node exits; exit now if it already has. Signals a
    terminal or a test network sends the node's whole process group are the node's to act on:
    it writes what is queued and then ends the requests."""
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_IGN)
    # Looked up among the symbols the interpreter already loaded, as ``node.heap`` finds
    # ``malloc_trim``: no library search (``find_library`` runs a program to search).
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        raise SystemExit(1)


def _open(options: object) -> Store:
    if not isinstance(options, dict):
        raise TypeError("open wants the store's options")
    return Store(
        Path(options["path"]),
        chain_id=options["chain_id"],
        genesis_hash=options["genesis_hash"],
        map_size_bytes=options["map_size_bytes"],
        sync=options["sync"],
        tree_flush_blocks=options["tree_flush_blocks"],
        tree_pending_records_max=options["tree_pending_records_max"],
        grow_map_here=False,
    )


def _encoded_blocks(value: object) -> list[EncodedBlock]:
    """The blocks of a ``write_blocks`` request, their shape checked (the records inside are
    the store's to refuse: LMDB takes only bytes)."""
    if type(value) is not tuple:
        raise TypeError("write_blocks wants a list of blocks")
    blocks: list[EncodedBlock] = []
    for fields in value:
        if type(fields) is not tuple or len(fields) != len(EncodedBlock._fields):
            raise TypeError(
                f"a block of write_blocks has not the {len(EncodedBlock._fields)} fields"
            )
        if type(fields[0]) is not int or not all(type(field) is bytes for field in fields[1:7]):
            raise TypeError("a block of write_blocks has a height or hash of the wrong type")
        blocks.append(EncodedBlock._make(fields))
    return blocks


def _handle(store: Store | None, request: WriterMessage) -> tuple[Store | None, object]:
    """Carry out ``request``; returns the store (opened by ``open``) and the answer."""
    kind = request[0]
    if kind == "open":
        if store is not None:
            raise RuntimeError("the store is open already")
        return _open(request[1]), None
    if store is None:
        raise RuntimeError(f"{kind!r} before the store was opened")
    if kind == "write_blocks":
        encoded = _encoded_blocks(request[1])
        store.write_blocks(encoded, flush=bool(request[2]))
        return store, None
    if kind == "write_held_tree":
        written = store.write_held_tree()
        return store, (written, store.height)
    if kind == "map_size":
        size = request[1]
        if type(size) is not int:
            raise TypeError("map_size wants a number of bytes")
        store.adopt_map_size(size)
        return store, None
    if kind == "reload":
        store.reload_held_records()
        return store, None
    raise RuntimeError(f"unknown request {kind!r}")


def serve(requests: IO[bytes], answers: IO[bytes], shared: int | None = None) -> None:
    """Answer requests until ``requests`` ends (their bodies in the memory file ``shared``
    when the node shares one)."""
    store: Store | None = None
    channel = FrameChannel(requests, answers, shared)
    # The freed memory of each request's blocks goes back to the system, as the node's does.
    heap = HeapTrimmer()
    try:
        while True:
            try:
                request = channel.receive()
            except EOFError:
                return
            started = time.thread_time_ns()
            answer: WriterMessage
            try:
                store, value = _handle(store, request)
                outcome: tuple[object, ...] = ("ok", value)
            except MapNotGrownHere:
                outcome = ("map_full",)
            except Exception as error:  # every failure is the node's to report
                outcome = ("error", type(error).__name__, str(error))
            heap.after_write()
            spent = time.thread_time_ns() - started
            answer = (outcome[0], spent, time.process_time_ns(), *outcome[1:])
            channel.send(answer)
    finally:
        if store is not None:
            store.close()


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if len(arguments) not in (1, 2) or not all(argument.isdigit() for argument in arguments):
        print(
            "usage: python -m node.storewriter PARENT_PID [SHARED_MEMORY_FD] (a node starts it)",
            file=sys.stderr,
        )
        return 2
    _die_with_parent(int(arguments[0]))
    shared = int(arguments[1]) if len(arguments) == 2 else None
    requests = sys.stdin.buffer
    answers = sys.stdout.buffer
    # Nothing else may write to the answers' stream.
    sys.stdout = sys.stderr
    serve(requests, answers, shared)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
