"""Structured logging: one event name plus fields, as JSON lines or readable text.

Call sites write ``log.info("block_committed", extra={"height": 7, "txs": 120})``. The message
is the event name; every ``extra`` field is emitted as a field. ``configure_logging`` installs
one handler on the ``suanpan`` logger (a file per node in the testnet, stderr otherwise).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Final

__all__ = ["JsonFormatter", "TextFormatter", "configure_logging"]

# Attributes every LogRecord has; anything else came from ``extra`` and is an event field.
_STANDARD: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {key: value for key, value in vars(record).items() if key not in _STANDARD}


def _plain(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``event`` and the fields."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in _fields(record).items():
            # Some layers pass their fields as one ``fields`` mapping: flatten it.
            if key == "fields" and isinstance(value, dict):
                document.update({str(k): _plain(v) for k, v in value.items()})
            else:
                document[key] = _plain(value)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``time level logger event key=value ...`` for people reading a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        fields = " ".join(f"{key}={_plain(value)}" for key, value in _fields(record).items())
        line = f"{stamp} {record.levelname.lower():7} {record.name} {record.getMessage()} {fields}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line.rstrip()


def configure_logging(level: str, log_format: str, path: Path | None) -> None:
    """Send ``suanpan.*`` logs at ``level`` and above to ``path`` (or stderr) in ``log_format``."""
    logger = logging.getLogger("suanpan")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    if path is None:
        handler_: logging.Handler = logging.StreamHandler(sys.stderr)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler_ = logging.FileHandler(path, encoding="utf-8")
    handler_.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logger.addHandler(handler_)
    logger.setLevel(level.upper())
    logger.propagate = False
