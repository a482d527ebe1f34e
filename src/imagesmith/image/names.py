"""How clients name images and flows: the alias grammar, ids, and the new-flow sentinel."""

from __future__ import annotations

import re

ALIAS_RE = re.compile(r"^@[A-Za-z0-9_-]{1,100}\Z")
RESERVED_ALIASES = frozenset({"@last", "@first", "@upload"})
UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z"
)
NEW_FLOW = "new"  # flow_id sentinel: the caller omitted flowId, so a new flow id is issued


def check_alias(value: str | None, field_name: str) -> str | None:
    """The alias, or ValueError naming the rule (pydantic validators turn it into a 400)."""
    if value is None:
        return None
    if not ALIAS_RE.match(value):
        raise ValueError(
            f"{field_name} '{value}' must start with '@' followed by 1-100 letters, "
            "digits, '_' or '-'"
        )
    if value in RESERVED_ALIASES:
        raise ValueError(
            f"{field_name} '{value}' is reserved (@last, @first and @upload are computed)"
        )
    return value


def check_uuid(value: str | None, field_name: str) -> str | None:
    if value is not None and not UUID_RE.match(value):
        raise ValueError(f"{field_name} must be a UUID or null, got '{value}'")
    return value.lower() if value else value
