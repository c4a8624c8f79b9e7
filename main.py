from __future__ import annotations

from typing import TYPE_CHECKING

from relay.event import handle
from relay.text import as_mapping

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any


def build_status(event: Mapping[str, Any], context: Any) -> None:
    """1st gen background function (--entry-point build_status)."""
    data = event.get("data") if isinstance(event, dict) else None
    resource = getattr(context, "resource", None)
    handle(data, getattr(context, "timestamp", None), as_mapping(resource).get("name") or resource)


def build_status_cloudevent(cloud_event: Any) -> None:
    """2nd gen CloudEvent function (--entry-point build_status_cloudevent)."""
    message = as_mapping(as_mapping(getattr(cloud_event, "data", None)).get("message"))
    published = message.get("publishTime") or cloud_event.get("time")
    handle(message.get("data"), published, cloud_event.get("source"))
