"""The release of the C allocator's free memory (``node.heap``): rate-limited, safe where the C
library has no ``malloc_trim``, and, with glibc, really returning freed pages that ``free``
alone keeps; and the resident memory's split into heap and file-backed pages in the
metrics."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from node.heap import HeapTrimmer, malloc_trim
from node.metrics import NodeMetrics
from node.procstatus import resident_memory_split


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_releases_at_most_once_per_interval() -> None:
    clock = FakeClock()
    calls: list[int] = []

    def release(pad: int) -> int:
        calls.append(pad)
        return 1

    trimmer = HeapTrimmer(interval_s=1.0, release=release, clock=clock)
    assert trimmer.available
    assert trimmer.after_write()
    assert calls == [0]
    clock.now += 0.4
    assert not trimmer.after_write()
    clock.now += 0.5
    assert not trimmer.after_write()
    assert calls == [0]
    clock.now += 0.1
    assert trimmer.after_write()
    assert calls == [0, 0]
    assert trimmer.releases == 2


def test_without_malloc_trim_it_does_nothing() -> None:
    trimmer = HeapTrimmer(release=None)
    assert not trimmer.available
    assert not trimmer.after_write()
    assert trimmer.releases == 0


def test_a_negative_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        HeapTrimmer(interval_s=-1.0)


# Allocates 64 MiB in 4 KiB objects (each its own malloc), frees all but every 16th (so the free
# runs sit below live chunks and free() cannot give them back from the heap's top), then prints
# the anonymous RSS in KiB after the frees and after a release.
_FRAGMENT = textwrap.dedent(
    """
    import sys
    from node.heap import HeapTrimmer

    def anonymous_kib() -> int:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
        raise SystemExit("no RssAnon")

    blocks = [bytes(4000) + bytes([i % 256]) for i in range(16_384)]
    kept = blocks[::16]
    del blocks
    freed = anonymous_kib()
    assert HeapTrimmer().after_write()
    print(freed, anonymous_kib(), len(kept))
    """
)


@pytest.mark.skipif(malloc_trim is None, reason="the C library has no malloc_trim")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_a_release_returns_freed_pages_that_free_keeps() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _FRAGMENT], capture_output=True, text=True, timeout=120, check=True
    )
    freed_kib, released_kib, kept = (int(field) for field in result.stdout.split())
    assert kept == 1024
    # 60 MiB were freed in runs of fifteen 4 KiB chunks: free() kept them in the process, the
    # release gave back nearly all of them.
    assert freed_kib - released_kib > 40 * 1024, (freed_kib, released_kib)


def test_the_resident_memory_split_reads_both_fields_or_nothing(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text(
        "Name:\tpython\nRssAnon:\t  139804 kB\nRssFile:\t   14656 kB\nRssShmem:\t0 kB\n"
    )
    assert resident_memory_split(status) == (139804 * 1024, 14656 * 1024)
    status.write_text("Name:\tpython\nRssAnon:\t  139804 kB\n")
    assert resident_memory_split(status) is None
    status.write_text("RssAnon:\tmany kB\nRssFile:\t1 kB\n")
    assert resident_memory_split(status) is None
    assert resident_memory_split(tmp_path / "absent") is None


def test_the_metrics_export_the_split_when_there_is_one() -> None:
    exposition = NodeMetrics().render().decode()
    split = resident_memory_split()
    if split is None:
        assert "suanpan_memory_anonymous_bytes" not in exposition
    else:
        assert "suanpan_memory_anonymous_bytes " in exposition
        assert "suanpan_memory_file_bytes " in exposition
