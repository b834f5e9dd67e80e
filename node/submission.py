"""The binary body of ``POST /txs``: a msgpack array of raw signed transactions.

People and scripts use the JSON form (``{"txs": [hex, ...]}``); programs that submit in bulk
(the load generator, the benchmark's submitter, a bank's gateway) send
``Content-Type: application/msgpack`` with the transactions' wire bytes as msgpack ``bin``
items: no hex doubling the bytes, no JSON parser on the node. The array is an envelope, not a
signed or hashed value, so it need not be canonical; each item is still a transaction's own
canonical bytes, checked as usual. Decoding is bounded (item count and item size) before
msgpack allocates anything.

Such a client may also ask for a msgpack answer (``Accept: application/msgpack``): the same
fields as the JSON answer, hashes as ``bin``, except that a batch's tail refused as one (the
node at its admission limit refuses everything after the first transaction that does not fit,
all with one reason and one ``retry_after_ms``) is one entry, ``refused_from`` and
``refusal``, instead of one per transaction. Under overload most of what a node answers is
such refusals: this way a refused transaction costs the node no hash, no record and no
encoding of its own, and the client no parsing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import msgpack

from consensus.crypto import hash_bytes
from node.jsonvalue import JsonType

__all__ = [
    "MSGPACK_CONTENT_TYPE",
    "Rejection",
    "SubmissionAnswer",
    "SubmissionError",
    "decode_answer",
    "decode_submission",
    "encode_answer",
    "encode_submission",
    "named_hash",
]

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


def named_hash(digest: bytes | None, retry: bool, data: bytes) -> str | None:
    """The hash a JSON answer names for a refusal of the transaction ``data``: the node's
    ``digest``, or for a refusal for load (which the node leaves unhashed, having refused the
    bytes unread) the transaction's own; None for bytes that are not a transaction."""
    if digest is not None:
        return digest.hex()
    return hash_bytes(data).hex() if retry else None


@dataclass(frozen=True, slots=True)
class Rejection:
    """One refused transaction of a batch (``hash`` is None where the node did not compute it:
    bytes that are not a transaction, or a refused tail)."""

    index: int
    hash: bytes | None
    code: str
    error: str
    retry: bool
    retry_after_ms: int

    def reason(self) -> dict[str, JsonType]:
        """Why, and when to come back: the map a refused tail shares."""
        return {
            "code": self.code,
            "error": self.error,
            "retry": self.retry,
            "retry_after_ms": self.retry_after_ms,
        }

    def document(self) -> dict[str, object]:
        """The msgpack map of this refusal."""
        return {"index": self.index, "hash": self.hash, **self.reason()}

    def json_document(self, data: bytes) -> dict[str, JsonType]:
        """The JSON map of this refusal of the transaction ``data`` (its hash as
        ``named_hash`` names it)."""
        return {
            "index": self.index,
            "hash": named_hash(self.hash, self.retry, data),
            **self.reason(),
        }


@dataclass(frozen=True, slots=True)
class SubmissionAnswer:
    """A node's answer to a batch of ``count`` transactions: how many it admitted, the
    refusals before ``refused_from`` one by one, and ``refusal`` for every transaction from
    ``refused_from`` on (both None when no tail was refused as one)."""

    count: int
    accepted: int
    rejected: tuple[Rejection, ...]
    refused_from: int | None = None
    refusal: Rejection | None = None

    def rejections(self) -> list[Rejection]:
        """Every refusal, one per refused transaction, in index order (the tail's carry the
        shared reason and no hash)."""
        listed = list(self.rejected)
        if self.refused_from is not None and self.refusal is not None:
            shared = self.refusal
            listed.extend(
                Rejection(
                    index,
                    None,
                    shared.code,
                    shared.error,
                    shared.retry,
                    shared.retry_after_ms,
                )
                for index in range(self.refused_from, self.count)
            )
        return listed


def encode_answer(answer: SubmissionAnswer) -> bytes:
    """The msgpack body of ``answer`` (what ``decode_answer`` reads)."""
    document: dict[str, object] = {
        "accepted": answer.accepted,
        "rejected": [rejection.document() for rejection in answer.rejected],
    }
    if answer.refused_from is not None and answer.refusal is not None:
        document["refused_from"] = answer.refused_from
        document["refusal"] = answer.refusal.reason()
    data: bytes = msgpack.packb(document, use_bin_type=True)
    return data


def decode_answer(data: bytes, count: int) -> SubmissionAnswer:
    """The answer in a msgpack ``POST /txs`` response to a batch of ``count`` transactions;
    ``SubmissionError`` names what is wrong with a malformed one."""
    try:
        document = msgpack.unpackb(data, raw=False, max_array_len=max(count, 1), max_ext_len=0)
    except Exception as error:  # msgpack raises a zoo of types; every one means malformed
        raise SubmissionError(f"answer is not valid msgpack: {type(error).__name__}") from None
    if not isinstance(document, dict):
        raise SubmissionError("answer must be a msgpack map")
    accepted = _int_field(document, "accepted", count)
    items = document.get("rejected")
    if not isinstance(items, list):
        raise SubmissionError("answer's rejected must be an array")
    rejected = tuple(_rejection(item, f"rejected[{n}]", count) for n, item in enumerate(items))
    indices = [rejection.index for rejection in rejected]
    if indices != sorted(set(indices)):
        raise SubmissionError("answer's rejected indices must increase")
    refused_from: int | None = None
    refusal: Rejection | None = None
    if "refused_from" in document:
        refused_from = _int_field(document, "refused_from", count - 1)
        if indices and indices[-1] >= refused_from:
            raise SubmissionError("answer's rejected overlaps its refused tail")
        shared = document.get("refusal")
        if not isinstance(shared, dict):
            raise SubmissionError("answer's refusal must be a map")
        refusal = _rejection({**shared, "index": refused_from, "hash": None}, "refusal", count)
    refused = len(rejected) + (0 if refused_from is None else count - refused_from)
    if accepted + refused != count:
        raise SubmissionError(
            f"answer accounts for {accepted + refused} transactions; the batch held {count}"
        )
    return SubmissionAnswer(count, accepted, rejected, refused_from, refusal)


def _int_field(document: dict[object, object], name: str, high: int, label: str = "") -> int:
    value = document.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise SubmissionError(f"answer's {label or name} must be an integer in 0..{high}")
    return value


def _rejection(item: object, where: str, count: int) -> Rejection:
    if not isinstance(item, dict):
        raise SubmissionError(f"answer's {where} must be a map")
    index = _int_field(item, "index", count - 1, f"{where}.index")
    digest = item.get("hash")
    if digest is not None and not isinstance(digest, bytes):
        raise SubmissionError(f"answer's {where}.hash must be bin or nil")
    code, error = item.get("code"), item.get("error")
    if not isinstance(code, str) or not isinstance(error, str):
        raise SubmissionError(f"answer's {where} must carry code and error strings")
    retry, retry_after_ms = item.get("retry"), item.get("retry_after_ms")
    if not isinstance(retry, bool):
        raise SubmissionError(f"answer's {where}.retry must be true or false")
    if isinstance(retry_after_ms, bool) or not isinstance(retry_after_ms, int):
        raise SubmissionError(f"answer's {where}.retry_after_ms must be an integer")
    return Rejection(index, digest, code, error, retry, max(0, retry_after_ms))
