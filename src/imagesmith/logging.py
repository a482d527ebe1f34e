"""Log lines are events with ids bound: `generation.claimed generation_id=… worker_id=…`.

`IMAGESMITH_LOG_FORMAT=json` writes each as one JSON object for log shippers:
`{"ts", "level", "logger", "event", "message", …}` with every `key=value` of the line as its
own field (so `generation_id` can be searched on), and the traceback as `exc_info`."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

FIELD = re.compile(r"(?<!\S)([a-z_][a-z0-9_]*)=(\S+)")
RESERVED = {"ts", "level", "logger", "event", "message", "exc_info"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        head = message.split(" ", 1)[0]
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": head if "=" not in head else "",
            "message": message,
        }
        for name, value in FIELD.findall(message):
            if name not in RESERVED:
                line.setdefault(name, value)
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    if fmt == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
        return
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
