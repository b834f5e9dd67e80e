"""The binary body of ``POST /txs``: a msgpack array of raw signed transactions.

People and scripts use the JSON form (``{"txs": [hex, ...]}``); programs that submit in bulk
(the load generator, the benchmark's submitter, a bank's gateway) send
``Content-Type: application/msgpack`` with the transactions' wire bytes as msgpack ``bin``
items: no hex doubling the bytes, no JSON parser on the node. The array is an envelope, not a
signed or hashed value, so it need not be canonical; each item is still a transaction's own
canonical bytes, checked as usual. Decoding is bounded (item count and item size) before
msgpack allocates anything.
"""

from __future__ import annotations

from typing import Final

import msgpack

__all__ = ["MSGPACK_CONTENT_TYPE", "SubmissionError", "decode_submission", "encode_submission"]

MSGPACK_CONTENT_TYPE: Final = "application/msgpack"


class SubmissionError(ValueError):
    """A binary submission body is malformed; the message names the problem."""


def encode_submission(transactions: list[bytes]) -> bytes:
    """The msgpack body for ``POST /txs`` carrying ``transactions`` (wire bytes)."""
    data: bytes = msgpack.packb(transactions, use_bin_type=True)
    return data


def decode_submission(body: bytes, *, count_max: int, item_bytes_max: int) -> list[bytes]:
    """The transactions of a msgpack ``POST /txs`` body: an array of at most ``count_max``
    non-empty ``bin`` items of at most ``item_bytes_max`` bytes each."""
    if not body:
        raise SubmissionError("request body is empty; expected a msgpack array of bin items")
    try:
        value = msgpack.unpackb(
            body,
            raw=False,
            use_list=True,
            max_array_len=count_max,
            max_bin_len=item_bytes_max,
            max_str_len=item_bytes_max,
            max_map_len=count_max,
            max_ext_len=0,
        )
    except msgpack.ExtraData:
        raise SubmissionError("bytes remain after the msgpack array") from None
    except (msgpack.FormatError, msgpack.StackError):
        raise SubmissionError("body is not valid msgpack") from None
    except ValueError as error:
        # msgpack raises ValueError (and subclasses) for oversized and malformed input.
        raise SubmissionError(
            f"body is not a msgpack array of at most {count_max} transactions of at most"
            f" {item_bytes_max} bytes: {error}"
        ) from None
    except Exception as error:  # msgpack raises a zoo of types; every one means malformed
        raise SubmissionError(f"body is not valid msgpack: {type(error).__name__}") from None
    if not isinstance(value, list):
        raise SubmissionError("body must be a msgpack array of bin items")
    for index, item in enumerate(value):
        if not isinstance(item, bytes):
            raise SubmissionError(f"item {index} is not a msgpack bin (raw transaction bytes)")
        if not item:
            raise SubmissionError(f"item {index} is empty")
    return value
