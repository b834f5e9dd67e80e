"""LMDB's meta pages, read from a data file's bytes: the one place that knows their layout.

An LMDB 0.9 data file (64-bit) starts with two meta pages: a 16-byte page header (its flags at
byte 10), then ``MDB_meta``: magic and version (4 bytes each), the map's fixed address and size
(8 each), the free-page database's and the main database's ``MDB_db`` records (48 bytes each;
the first one's 4-byte pad holds the page size), the last page used and the transaction id (8
each). LMDB writes transaction t's meta to page t % 2. The store reads them to tell a damaged
file from LMDB's other open errors (``node.store.open_error``), and the page check walks the
file from them (``node.audit.lmdbcheck``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DATA_VERSION",
    "DB_RECORD",
    "MAGIC",
    "META_BYTES",
    "PAGE_HEADER_BYTES",
    "PAGE_META",
    "TRANSACTION_OFFSET",
    "MetaPage",
    "read_meta",
]

PAGE_HEADER_BYTES: Final = 16  # mp_pgno (8), mp_pad (2), mp_flags (2), mp_lower/mp_upper (2 + 2)
PAGE_META: Final = 0x08  # the page header flag of a meta page
MAGIC: Final = 0xBEEFC0DE
DATA_VERSION: Final = 1
DB_RECORD: Final = struct.Struct("<IHHQQQQQ")  # MDB_db: pad, flags, depth, counts, root
# mm_magic, mm_version, mm_address, mm_mapsize; then the two MDB_db records.
_RECORDS_OFFSET: Final = PAGE_HEADER_BYTES + 24
_LAST_PAGE_OFFSET: Final = _RECORDS_OFFSET + 2 * DB_RECORD.size
TRANSACTION_OFFSET: Final = _LAST_PAGE_OFFSET + 8
META_BYTES: Final = TRANSACTION_OFFSET + 8  # what ``read_meta`` needs of a meta page


@dataclass(frozen=True, slots=True)
class MetaPage:
    """The fields of one meta page (as found: nothing checked)."""

    flags: int
    magic: int
    version: int
    address: int
    page_size: int
    free_record: bytes  # the free-page database's MDB_db
    main_record: bytes  # the main database's MDB_db
    last_page: int
    transaction: int

    @property
    def is_meta(self) -> bool:
        """Whether the page says it is an LMDB meta page of the data version read here."""
        return bool(self.flags & PAGE_META) and self.magic == MAGIC and self.version == DATA_VERSION


def read_meta(page: bytes) -> MetaPage:
    """The meta page at the start of ``page`` (at least ``META_BYTES``)."""
    if len(page) < META_BYTES:
        raise ValueError(f"a meta page needs {META_BYTES} bytes, {len(page)} given")
    (flags,) = struct.unpack_from("<H", page, 10)
    magic, version, address = struct.unpack_from("<IIQ", page, PAGE_HEADER_BYTES)
    (page_size,) = struct.unpack_from("<I", page, _RECORDS_OFFSET)
    last_page, transaction = struct.unpack_from("<QQ", page, _LAST_PAGE_OFFSET)
    return MetaPage(
        flags=flags,
        magic=magic,
        version=version,
        address=address,
        page_size=page_size,
        free_record=bytes(page[_RECORDS_OFFSET : _RECORDS_OFFSET + DB_RECORD.size]),
        main_record=bytes(page[_RECORDS_OFFSET + DB_RECORD.size : _LAST_PAGE_OFFSET]),
        last_page=last_page,
        transaction=transaction,
    )
