"""The event types a receiver can subscribe to, and how callers may spell them."""

from __future__ import annotations

from collections.abc import Iterable

from imagesmith.errors import ValidationFailed
from imagesmith.models import GenerationStatus

STARTED = "generation.started"
COMPLETED = "generation.completed"
FAILED = "generation.failed"
CANCELLED = "generation.cancelled"
PROGRESS = "generation.progress"  # throttled, sent once, only to those who ask for it

DEFAULT_EVENTS = (STARTED, COMPLETED, FAILED, CANCELLED)
ALL_EVENTS = (*DEFAULT_EVENTS, PROGRESS)

FINAL = {
    GenerationStatus.SUCCESS: COMPLETED,
    GenerationStatus.FAILED: FAILED,
    GenerationStatus.CANCELLED: CANCELLED,
}


class InvalidWebhook(ValidationFailed):
    code = "INVALID_WEBHOOK"


def parse_events(values: Iterable[str] | None, field: str = "events") -> list[str] | None:
    """Event types as given (`generation.completed`, or just `completed`), de-duplicated in the
    canonical order; None stays None (the default set)."""
    if values is None:
        return None
    wanted: set[str] = set()
    for value in values:
        name = value if not isinstance(value, str) or "." in value else f"generation.{value}"
        if name not in ALL_EVENTS:
            raise InvalidWebhook(
                f"{field}: unknown event {str(value)[:64]!r}; use any of " + ", ".join(ALL_EVENTS)
            )
        wanted.add(name)
    if not wanted:
        raise InvalidWebhook(f"{field}: name at least one event (or leave it out for the default)")
    return [name for name in ALL_EVENTS if name in wanted]


def wants(events: list[str] | None, event_type: str) -> bool:
    return event_type in (events if events is not None else DEFAULT_EVENTS)
