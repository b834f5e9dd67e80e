"""Handing the C allocator's free memory back to the operating system, at most once a second.

Theory of operation
-------------------
Most of a node's heap that Python does not manage itself is allocated with the C library's
``malloc``: objects over 512 bytes (tree records, encoded blocks, large dict tables), LMDB's
dirty pages during a write transaction, PyNaCl's buffers. glibc's ``malloc`` returns freed
memory to the system only from the top of its heaps, so after a busy block the free chunks
below live objects stay in the process's RSS until they are reused: 13-18 MiB per node after
20 s at 3,000 tx/s offered (``mallinfo2``'s free bytes), about a tenth of its heap.
``malloc_trim(0)`` releases every whole free page inside the heaps too (``madvise``), so the
RSS follows what is in use.

The block writer calls ``HeapTrimmer.after_write`` on its worker thread after each write
transaction (``ctypes`` releases the GIL for the call, so the event loop runs meanwhile). A
call walks the allocator's free lists (0.3-0.6 ms with a node's heap), so it runs at most once
per ``interval_s`` (1 s): at 3,000 tx/s offered about one write in two or three, and never
more than a millisecond per second. Where the C library has no ``malloc_trim`` (musl, macOS) it does
nothing; ``available`` says which.

LMDB keeps the pages it allocated for a write transaction's dirty pages for the next one
(they are not free to ``malloc``), so they stay: about the largest write transaction's size.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable
from typing import Final

__all__ = ["TRIM_INTERVAL_S", "HeapTrimmer", "malloc_trim"]

# The shortest time between two releases.
TRIM_INTERVAL_S: Final = 1.0


def _load_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none. Looked up among the
    symbols the interpreter already loaded (its C library's), so no library search runs."""
    try:
        function = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int

    def trim(pad: int) -> int:
        return int(function(pad))

    return trim


malloc_trim: Final = _load_malloc_trim()


class HeapTrimmer:
    """Releases the C allocator's free pages after writes, at most once per ``interval_s``;
    safe to call from any thread."""

    def __init__(
        self,
        *,
        interval_s: float = TRIM_INTERVAL_S,
        release: Callable[[int], int] | None = malloc_trim,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_s < 0:
            raise ValueError("interval_s must not be negative")
        self._interval_s = interval_s
        self._release = release
        self._clock = clock
        self._lock = threading.Lock()
        self._last: float | None = None
        self.releases = 0

    @property
    def available(self) -> bool:
        """Whether this C library can release free memory (``malloc_trim``)."""
        return self._release is not None

    def after_write(self) -> bool:
        """Release the free pages if ``interval_s`` passed since the last release; True when
        this call released."""
        release = self._release
        if release is None:
            return False
        now = self._clock()
        with self._lock:
            if self._last is not None and now - self._last < self._interval_s:
                return False
            self._last = now
            self.releases += 1
        release(0)
        return True
