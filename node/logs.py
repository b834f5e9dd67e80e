"""Structured logging: one event name plus fields, as JSON lines or readable text.

Call sites write ``log.info("block_committed", extra={"height": 7, "txs": 120})``. The message
is the event name; every ``extra`` field is emitted as a field. ``configure_logging`` installs
one handler on the ``suanpan`` logger (a file per node in the testnet, stderr otherwise).

A log file on a full disk (``LogFileHandler``) costs the node its log, never its run: each
record the file cannot take goes to stderr instead, one ``log_file_write_failed`` event says
so when the file first fails, and the file is tried again with every record; once one lands,
a ``log_file_write_resumed`` event in the file counts the records that went to stderr.

Rotation: the file is opened for appending, so ``logrotate``'s ``copytruncate`` works as it is;
``reopen_log_file`` (a running node calls it on SIGHUP) closes the file and opens the configured
path again, so a rotation that moves the file (``logrotate``'s default, with ``kill -HUP`` after
it) has the node write to a new file at the configured path.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import sys
import time
from pathlib import Path
from typing import Final

__all__ = [
    "JsonFormatter",
    "LogFileHandler",
    "TextFormatter",
    "configure_logging",
    "log_file_handler",
    "reopen_log_file",
]

# Attributes every LogRecord has; anything else came from ``extra`` and is an event field.
_STANDARD: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


# How far back from its end a resumed log file is searched for the last whole line (a record is
# far shorter).
_TAIL_BYTES: Final = 64 * 1024


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


class LogFileHandler(logging.FileHandler):
    """Appends records to a file; a record the file cannot take (a full disk, a file size
    limit) goes to stderr instead of into ``logging``'s error report, which would print a
    traceback for every record (see the module's docstring)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8")
        # Records written to stderr since the file last failed (0: the file takes them).
        self.records_to_stderr = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # a record that does not format is logging's to report
            self.handleError(record)
            return
        try:
            if self.stream is None:
                self.stream = self._open()
                if self.records_to_stderr:
                    self._write(self._resumed_line())
                    self.records_to_stderr = 0
            self._write(line)
        except OSError as error:
            self._failed(error)
            _to_stderr(line)

    def reopen(self) -> None:
        """Close the file; the next record opens the configured path again (after a rotation
        moved the file away, a new one)."""
        self.acquire()
        try:
            self._let_go()
        finally:
            self.release()

    def _let_go(self) -> None:
        """Close the file, if open (on a disk that refuses the write, what its buffer holds is
        dropped with it); ``emit`` opens it again for the next record."""
        stream, self.stream = self.stream, None
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()

    def _write(self, line: str) -> None:
        stream = self.stream
        assert stream is not None, "opened by emit"
        stream.write(line + self.terminator)
        stream.flush()

    def _failed(self, error: OSError) -> None:
        """The file refused a write: close it (what its buffer holds is dropped, so nothing
        is written twice) and open it again for the next record."""
        self._let_go()
        if not self.records_to_stderr:
            _to_stderr(
                self._event_line(
                    logging.ERROR,
                    "log_file_write_failed",
                    path=self.baseFilename,
                    error=str(error),
                    then="records go to stderr until the file takes them again",
                )
            )
        self.records_to_stderr += 1

    def _resumed_line(self) -> str:
        """The event that starts the file again; the part of a line a failed write left at
        its end is cut first (the whole record went to stderr), so the file holds whole
        lines."""
        with open(self.baseFilename, "r+b") as file:
            status = os.fstat(file.fileno())
            start = max(0, status.st_size - _TAIL_BYTES)
            file.seek(start)
            # Only a regular file has an end to read to (a device may never end).
            tail = file.read(_TAIL_BYTES) if stat.S_ISREG(status.st_mode) else b""
            if tail and not tail.endswith(b"\n"):
                end = tail.rfind(b"\n")
                if end >= 0 or start == 0:
                    file.truncate(start + end + 1)
        return self._event_line(
            logging.WARNING,
            "log_file_write_resumed",
            path=self.baseFilename,
            records_to_stderr=self.records_to_stderr,
        )

    def _event_line(self, level: int, event: str, **fields: object) -> str:
        record = logging.LogRecord("suanpan.logs", level, __file__, 0, event, None, None)
        record.__dict__.update(fields)
        return self.format(record)


def _to_stderr(line: str) -> None:
    """Write ``line`` to stderr, which may be a file on the same full disk."""
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


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
        handler_ = LogFileHandler(path)
    handler_.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logger.addHandler(handler_)
    logger.setLevel(level.upper())
    logger.propagate = False


def log_file_handler() -> LogFileHandler | None:
    """The log file ``configure_logging`` installed, or None when the logs go to stderr."""
    for handler in logging.getLogger("suanpan").handlers:
        if isinstance(handler, LogFileHandler):
            return handler
    return None


def reopen_log_file() -> str | None:
    """Close the log file and open its configured path again (after a rotation moved it): the
    last record of the old file says so (``log_file_reopening``), the first of the new one
    (``log_file_reopened``). Returns the path, or None when the logs go to stderr."""
    handler = log_file_handler()
    if handler is None:
        return None
    log = logging.getLogger("suanpan.logs")
    log.info("log_file_reopening", extra={"path": handler.baseFilename})
    handler.reopen()
    log.info("log_file_reopened", extra={"path": handler.baseFilename})
    return handler.baseFilename
