"""A check of an LMDB file's page structure, in Python, before LMDB itself reads it.

Theory of operation
-------------------
LMDB has no checksums and trusts its pages: a damaged branch page sends it to the wrong page
(it says ``MDB_CORRUPTED``), but a damaged node header inside a leaf page (its offset, its key
or value size) makes it copy bytes from wherever the header points, past the page and past the
end of the file, which kills the process with SIGBUS: no error, no message. So an offline tool
that must answer for a damaged file (the audit, a restore) first walks the file here, with every
offset and size bounds-checked, and only then lets LMDB read it.

``check_lmdb_file`` reads the two meta pages (flags, magic, version, page size, transaction ids
that are consecutive and each on its own page), takes the one with the newer transaction id (as
LMDB does), and walks the free-page database and the main
database from their roots, and every named database the main one records: each page is inside
the file and below the meta's last page, says its own number, is a branch or leaf page (or the
overflow pages of one large value) whose node offsets, keys and values lie within it; branch
pages lead to pages one level down, leaves sit at the recorded depth; the keys of every page
are in ascending order and within the range the branch key above gives its page (a damaged
branch key leaves every record readable in a scan but sends a lookup to the wrong leaf, where
the key it looks for is "not found"); no page is reached twice;
a database's recorded page and entry counts are what the walk found; every page the free-page
database lists is a real page that no database uses. It returns the first problem found (a
sentence naming the page and the database) or None.

A node may be committing to the file meanwhile (an audit of a running node's home): a commit
writes only pages outside the tree its meta page names, then the meta page, so a walk that
sees the same newest transaction id before and after it read one unchanged tree. A walk that
saw a commit land is done again, up to ``_ATTEMPTS`` times; after that the file is left to
LMDB's own checks (None).

It reads the file with ``pread`` one page at a time: memory is the walk's stack and the set of
pages seen (8 bytes a page). It knows LMDB 0.9's 64-bit layout only (``lmdb.version()`` 0.9.x,
the format every store of this node has); a file in another layout is reported, not guessed.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from node.lmdbmeta import (
    DB_RECORD,
    META_BYTES,
    PAGE_HEADER_BYTES,
    PAGE_META,
    TRANSACTION_OFFSET,
    read_meta,
)

__all__ = ["check_lmdb_file"]

_HEADER_BYTES: Final = PAGE_HEADER_BYTES
_NODE_HEADER_BYTES: Final = 8  # mn_lo, mn_hi, mn_flags, mn_ksize (2 bytes each)
_DB_RECORD: Final = DB_RECORD
_NO_PAGE: Final = 0xFFFF_FFFF_FFFF_FFFF
_PAGE_BRANCH: Final = 0x01
_PAGE_LEAF: Final = 0x02
_PAGE_OVERFLOW: Final = 0x04
_PAGE_META: Final = PAGE_META
_NODE_BIGDATA: Final = 0x01
_NODE_SUBDATA: Final = 0x02
# A B-tree this deep would hold more pages than any file has: a deeper one is damaged.
_DEPTH_MAX: Final = 64
_PAGE_BYTES_ALLOWED: Final = (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
# Walks of a file a node commits to meanwhile (see the module docstring).
_ATTEMPTS: Final = 3
_FREE_NAME: Final = "(free pages)"


@dataclass(frozen=True, slots=True)
class _Database:
    """An ``MDB_db`` record: what the walk of one database must find."""

    name: str
    depth: int
    branch_pages: int
    leaf_pages: int
    overflow_pages: int
    entries: int
    root: int

    @classmethod
    def unpack(cls, name: str, raw: bytes) -> _Database:
        _, _, depth, branch, leaf, overflow, entries, root = _DB_RECORD.unpack(raw)
        return cls(name, depth, branch, leaf, overflow, entries, root)


class _Damaged(Exception):
    """The first problem found; its message says where."""


class _File:
    def __init__(self, fd: int, page_bytes: int, pages: int) -> None:
        self.fd = fd
        self.page_bytes = page_bytes
        self.pages = pages  # pages 0 .. pages - 1 may be used (the meta's last page + 1)

    def page(self, number: int, what: str) -> bytes:
        if not 2 <= number < self.pages:
            raise _Damaged(f"{what} points to page {number}, outside pages 2-{self.pages - 1}")
        data = os.pread(self.fd, self.page_bytes, number * self.page_bytes)
        if len(data) != self.page_bytes:
            raise _Damaged(f"{what}: page {number} is beyond the end of the file")
        return data

    def value(self, first: int, data_bytes: int) -> bytes:
        """A large value: ``data_bytes`` from after the header of overflow page ``first`` (its
        pages checked by ``_check_overflow``)."""
        return os.pread(self.fd, data_bytes, first * self.page_bytes + _HEADER_BYTES)


def check_lmdb_file(path: Path) -> str | None:
    """The first structural problem of the LMDB data file ``path`` (see the module docstring),
    or None when every page checks. ``OSError`` when the file cannot be read."""
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(_ATTEMPTS):
            before = _newest_transaction(fd)
            try:
                _check(fd, os.fstat(fd).st_size)
                problem = None
            except _Damaged as damaged:
                problem = str(damaged)
            if _newest_transaction(fd) == before:
                return problem
    finally:
        os.close(fd)
    return None


def _newest_transaction(fd: int) -> tuple[bytes, bytes]:
    """The raw transaction ids of both meta pages (they change when a commit lands)."""
    head = os.pread(fd, META_BYTES, 0)
    page_bytes = read_meta(head).page_size if len(head) == META_BYTES else 0
    return os.pread(fd, 8, TRANSACTION_OFFSET), os.pread(fd, 8, page_bytes + TRANSACTION_OFFSET)


def _check(fd: int, size: int) -> None:
    metas: list[tuple[int, int, int, _Database, _Database]] = []
    page_bytes = 0
    for index in (0, 1):
        # The page size is in meta page 0 (the free database's ``md_pad``): page 1 is there.
        page = os.pread(fd, META_BYTES, index * page_bytes)
        if len(page) < META_BYTES:
            raise _Damaged(f"meta page {index} is beyond the end of the file")
        meta = read_meta(page)
        if not meta.is_meta:
            raise _Damaged(f"meta page {index} is not an LMDB meta page")
        free = _Database.unpack(_FREE_NAME, meta.free_record)
        main = _Database.unpack("(main)", meta.main_record)
        last_page, transaction, page_size = meta.last_page, meta.transaction, meta.page_size
        if index == 0:
            if page_size not in _PAGE_BYTES_ALLOWED:
                raise _Damaged(f"meta page 0 records a page size of {page_size} bytes")
            page_bytes = page_size
        metas.append((transaction, index, last_page, free, main))
    # LMDB writes transaction t's meta to page t % 2, so the two are consecutive (both 0 in a
    # new file); another id is damage, and the newer-looking page may be the damaged one.
    for transaction, index, *_ in metas:
        if transaction % 2 != index and transaction != 0:
            raise _Damaged(f"meta page {index} records transaction {transaction}, not its own")
    if abs(metas[0][0] - metas[1][0]) > 1:
        raise _Damaged(
            f"the meta pages record transactions {metas[0][0]} and {metas[1][0]}, not two "
            "consecutive ones"
        )
    transaction, index, last_page, free, main = max(metas)
    pages = last_page + 1
    if pages * page_bytes > size:
        raise _Damaged(
            f"meta page {index} says the file holds {pages} pages; it has {size // page_bytes}"
        )
    file = _File(fd, page_bytes, pages)
    used: set[int] = set()
    freed: list[int] = []
    for _key, value in _walk(file, free, used):
        freed.extend(_free_list(value, free.name))
    for key, value in _walk(file, main, used, subdatabases=True):
        named = _Database.unpack(key.decode("utf-8", "replace"), value)
        for _ in _walk(file, named, used):
            pass
    for number in freed:
        if not 2 <= number < pages:
            raise _Damaged(f"the free-page database lists page {number}, outside the file")
        if number in used:
            raise _Damaged(f"the free-page database lists page {number}, which is in use")


def _integer_key(key: bytes) -> bytes:
    """A free-page database key (a transaction id, 8 bytes little-endian) as bytes that sort
    as LMDB orders it."""
    return key[::-1]


def _bytes_key(key: bytes) -> bytes:
    """A key of any other database: LMDB compares the bytes."""
    return key


def _free_list(value: bytes, where: str) -> Iterator[int]:
    """The page numbers of one free-page record: a count, then that many numbers. LMDB
    reserves a record's room before it knows how many pages it will hold, so a record may be
    longer than its count needs (the rest is unused) or, reserved and never filled, empty."""
    if len(value) % 8:
        raise _Damaged(f"{where}: a record of {len(value)} bytes is not a page list")
    if not value:
        return
    (count,) = struct.unpack_from("<Q", value, 0)
    if count > len(value) // 8 - 1:
        raise _Damaged(f"{where}: a page list says {count} pages in {len(value)} bytes")
    for offset in range(8, 8 + 8 * count, 8):
        yield struct.unpack_from("<Q", value, offset)[0]


def _walk(
    file: _File, db: _Database, used: set[int], *, subdatabases: bool = False
) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of ``db`` in page order, checking each page on the way and adding it
    to ``used``. A value held on overflow pages is not read (only its pages checked), except
    a named database's record in the main database (``subdatabases``)."""
    if db.root == _NO_PAGE:
        if db.depth or db.entries or db.branch_pages or db.leaf_pages or db.overflow_pages:
            raise _Damaged(f"database {db.name} has no root page but records pages or entries")
        return
    if not 1 <= db.depth <= _DEPTH_MAX:
        raise _Damaged(f"database {db.name} records a depth of {db.depth}")
    counts = {"branch": 0, "leaf": 0, "overflow": 0, "entries": 0}
    # The free-page database's keys are transaction ids (MDB_INTEGERKEY, native 8 bytes); every
    # other database's compare as bytes (LMDB's default).
    order = _integer_key if db.name == _FREE_NAME else _bytes_key
    # (page, level, keys from, keys below: None when unbounded)
    stack: list[tuple[int, int, bytes | None, bytes | None]] = [(db.root, 1, None, None)]
    while stack:
        number, level, bound_low, bound_high = stack.pop()
        what = f"database {db.name}, page {number}"
        if number in used:
            raise _Damaged(f"{what} is reached twice")
        page = file.page(number, f"database {db.name}")
        used.add(number)
        own, _pad, flags, lower, upper = struct.unpack_from("<QHHHH", page, 0)
        if own != number:
            raise _Damaged(f"{what} says it is page {own}")
        kind = flags & (_PAGE_BRANCH | _PAGE_LEAF | _PAGE_OVERFLOW | _PAGE_META)
        if kind not in (_PAGE_BRANCH, _PAGE_LEAF):
            raise _Damaged(f"{what} is not a branch or leaf page (flags {flags:#x})")
        if not (_HEADER_BYTES <= lower <= upper <= file.page_bytes and lower % 2 == 0):
            raise _Damaged(f"{what} has its free space at {lower}-{upper}")
        nodes = (lower - _HEADER_BYTES) // 2
        is_leaf = kind == _PAGE_LEAF
        if is_leaf != (level == db.depth):
            raise _Damaged(f"{what} is a {'leaf' if is_leaf else 'branch'} at level {level}")
        if nodes == 0 and not (is_leaf and number == db.root):
            raise _Damaged(f"{what} holds no node")
        counts["leaf" if is_leaf else "branch"] += 1
        children: list[tuple[int, int, bytes | None, bytes | None]] = []
        previous: bytes | None = None
        for slot in range(nodes):
            (offset,) = struct.unpack_from("<H", page, _HEADER_BYTES + 2 * slot)
            if not upper <= offset <= file.page_bytes - _NODE_HEADER_BYTES:
                raise _Damaged(f"{what}: node {slot} is at {offset}, outside {upper}-end")
            low_word, high_word, node_flags, key_bytes = struct.unpack_from("<HHHH", page, offset)
            key_start = offset + _NODE_HEADER_BYTES
            key = page[key_start : key_start + key_bytes]
            if key_start + key_bytes > file.page_bytes:
                raise _Damaged(f"{what}: node {slot}'s key runs past the page")
            if is_leaf or slot > 0:  # a branch page's first key is empty: it has no bound
                if previous is not None and not order(previous) < order(key):
                    raise _Damaged(f"{what}: node {slot}'s key is not above the one before")
                if (bound_low is not None and order(key) < order(bound_low)) or (
                    bound_high is not None and not order(key) < order(bound_high)
                ):
                    raise _Damaged(f"{what}: node {slot}'s key is outside its page's range")
                previous = key
            if not is_leaf:
                child = low_word | high_word << 16 | node_flags << 32
                children.append((child, level + 1, key if slot > 0 else bound_low, bound_high))
                continue
            data_bytes = low_word | high_word << 16
            data_start = key_start + key_bytes
            if node_flags & ~(_NODE_BIGDATA | _NODE_SUBDATA):
                raise _Damaged(f"{what}: node {slot} has flags {node_flags:#x}")
            if node_flags & _NODE_SUBDATA and not subdatabases:
                raise _Damaged(f"{what}: node {slot} names a database inside a database")
            if node_flags & _NODE_BIGDATA:
                if data_start + 8 > file.page_bytes:
                    raise _Damaged(f"{what}: node {slot}'s overflow page number runs past it")
                (first,) = struct.unpack_from("<Q", page, data_start)
                counts["overflow"] += _check_overflow(file, first, data_bytes, what, used)
                # The free-page lists are read whole (a long one is a large value); other
                # large values only have their pages checked.
                value = file.value(first, data_bytes) if order is _integer_key else b""
            else:
                if data_start + data_bytes > file.page_bytes:
                    raise _Damaged(f"{what}: node {slot}'s value runs past the page")
                value = page[data_start : data_start + data_bytes]
                if node_flags & _NODE_SUBDATA and len(value) != _DB_RECORD.size:
                    raise _Damaged(f"{what}: node {slot}'s database record is {len(value)} bytes")
            counts["entries"] += 1
            yield key, value
        # A child's keys end where the next child's begin.
        for index in range(len(children) - 1):
            child, child_level, child_low, _ = children[index]
            children[index] = (child, child_level, child_low, children[index + 1][2])
        # Depth first, in key order (a stack: push the last child first).
        stack.extend(reversed(children))
    found = (counts["branch"], counts["leaf"], counts["overflow"], counts["entries"])
    recorded = (db.branch_pages, db.leaf_pages, db.overflow_pages, db.entries)
    if found != recorded:
        raise _Damaged(
            f"database {db.name} records {recorded[0]} branch, {recorded[1]} leaf and "
            f"{recorded[2]} overflow pages and {recorded[3]} entries; its pages hold "
            f"{found[0]}, {found[1]}, {found[2]} and {found[3]}"
        )


def _check_overflow(file: _File, first: int, data_bytes: int, what: str, used: set[int]) -> int:
    """Check the overflow pages from ``first`` holding a value of ``data_bytes``; their count."""
    page = file.page(first, what)
    own, _pad, flags, pages_raw = struct.unpack_from("<QHHI", page, 0)
    pages = int(pages_raw)
    where = f"{what}: overflow page {first}"
    if own != first or not flags & _PAGE_OVERFLOW:
        raise _Damaged(f"{where} is not an overflow page")
    # A value written over a larger one keeps the larger one's pages when they are enough, so
    # a value may span more pages than it needs, never fewer.
    needed = -(-(_HEADER_BYTES + data_bytes) // file.page_bytes)
    if pages < needed or first + pages > file.pages:
        raise _Damaged(f"{where} spans {pages} pages; its value needs {needed}")
    for number in range(first, first + pages):
        if number in used:
            raise _Damaged(f"{where}: page {number} is reached twice")
        used.add(number)
    return pages
