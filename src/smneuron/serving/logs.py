"""Log setup for ``serve``: JSON lines (or text) to stdout; called only by entry points."""

from __future__ import annotations

import json
import logging
import sys
import time

# LogRecord attributes that are not user ``extra`` fields.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, pid and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["trace"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = {k: v for k, v in vars(record).items() if k not in _STANDARD and k[0] != "_"}
        return text + (" " + json.dumps(extra, default=str) if extra else "")


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Route every logger (ours, gunicorn's, werkzeug's) to stdout in one format."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    # getLevelNamesMapping() is 3.11+; the Neuron DLCs run 3.10.
    known = isinstance(logging.getLevelName(level.upper()), int)
    root.setLevel(level.upper() if known else "INFO")
    # Keep third-party chatter down; our own loggers follow the chosen level.
    for noisy in ("urllib3", "filelock", "transformers"):
        logging.getLogger(noisy).setLevel(max(root.level, logging.WARNING))
