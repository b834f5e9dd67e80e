"""``StateOverlay`` against a plain model: layers keep their keys unsorted until a scan or the
write set needs them, and every interleaving of writes, savepoints and scans must still give
exactly the model's reads, scans and write set. ``watched_changes`` must move whenever what is
visible under the watched prefix may have changed."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from apps.state import MemoryBackend, StateOverlay

KEYS = st.sampled_from([b"a", b"b", b"ba", b"c", b"w/1", b"w/2", b"w/3", b"z"])
WATCH = b"w/"
STEP = st.one_of(
    st.tuples(st.just("put"), KEYS, st.binary(min_size=1, max_size=2)),
    st.tuples(st.just("delete"), KEYS),
    st.tuples(st.just("savepoint")),
    st.tuples(st.just("release")),
    st.tuples(st.just("rollback")),
    st.tuples(st.just("scan"), st.none() | KEYS, st.none() | KEYS, st.booleans()),
    st.tuples(st.just("get"), KEYS),
)


def visible(
    backend: dict[bytes, bytes], layers: list[dict[bytes, bytes | None]]
) -> dict[bytes, bytes]:
    state: dict[bytes, bytes | None] = dict(backend)
    for layer in layers:
        state.update(layer)
    return {key: value for key, value in state.items() if value is not None}


@settings(max_examples=300, deadline=None)
# A put under a deletion in a deeper savepoint survives both releases (the model once folded
# every closing layer into the bottom one and lost it).
@example({}, [("savepoint",), ("delete", b"a"), ("savepoint",), ("put", b"a", b"\x00")])
@given(
    st.dictionaries(KEYS, st.binary(min_size=1, max_size=2), max_size=5),
    st.lists(STEP, max_size=40),
)
def test_overlay_matches_a_model(
    backend_items: dict[bytes, bytes], steps: list[tuple[Any, ...]]
) -> None:
    overlay = StateOverlay(MemoryBackend(sorted(backend_items.items())), watch=WATCH)
    layers: list[dict[bytes, bytes | None]] = [{}]
    for step in steps:
        before = visible(backend_items, layers)
        changes = overlay.watched_changes
        kind = step[0]
        if kind == "put":
            overlay.put(step[1], step[2])
            layers[-1][step[1]] = step[2]
        elif kind == "delete":
            overlay.delete(step[1])
            layers[-1][step[1]] = None
        elif kind == "savepoint":
            overlay.savepoint()
            layers.append({})
        elif kind == "release" and len(layers) > 1:
            overlay.release()
            top = layers.pop()
            layers[-1].update(top)
        elif kind == "rollback" and len(layers) > 1:
            overlay.rollback()
            layers.pop()
        elif kind == "scan":
            _, start, end, reverse = step
            state = visible(backend_items, layers)
            expected = sorted(
                (key, value)
                for key, value in state.items()
                if key >= (start or b"") and (end is None or key < end)
            )
            if reverse:
                expected.reverse()
            assert list(overlay.scan(start or b"", end, reverse=reverse)) == expected
        elif kind == "get":
            assert overlay.get(step[1]) == visible(backend_items, layers).get(step[1])
        after = visible(backend_items, layers)
        watched_before = {key: value for key, value in before.items() if key.startswith(WATCH)}
        watched_after = {key: value for key, value in after.items() if key.startswith(WATCH)}
        if watched_before != watched_after:
            assert overlay.watched_changes > changes
    while len(layers) > 1:
        overlay.release()
        top = layers.pop()
        layers[-1].update(top)
    assert overlay.writes() == tuple(sorted(layers[0].items()))
    assert overlay.write_map() == layers[0]
