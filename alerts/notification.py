"""What a sink is asked to say: one trigger or resolve, standing for one or many alerts."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from spendstream.records import Alert, alert_from_wire, alert_to_wire

__all__ = ["Action", "Notification"]

Action = Literal["trigger", "resolve"]


@dataclass(slots=True, frozen=True)
class Notification:
    """A trigger or a resolve for the incident ``key`` (PagerDuty's ``dedup_key``).

    ``alert`` is the first alert of the incident (what is shown); ``count`` is how many alerts
    were folded into it (a storm grouped into one page), ``scopes`` the scopes they came from.
    """

    action: Action
    key: str
    route: str
    alert: Alert
    count: int = 1
    scopes: tuple[str, ...] = ()
    group: dict[str, str] = field(default_factory=dict)
    opened_at: datetime | None = None

    @property
    def grouped(self) -> bool:
        return bool(self.group)

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "action": self.action,
            "key": self.key,
            "route": self.route,
            "alert": alert_to_wire(self.alert),
            "count": self.count,
            "scopes": list(self.scopes),
            "group": self.group,
            "opened_at": self.opened_at.isoformat() if self.opened_at else None,
        }
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Notification:
        data = json.loads(text)
        return cls(
            action=data["action"],
            key=data["key"],
            route=data["route"],
            alert=alert_from_wire(data["alert"]),
            count=int(data["count"]),
            scopes=tuple(data["scopes"]),
            group={str(k): str(v) for k, v in data["group"].items()},
            opened_at=datetime.fromisoformat(data["opened_at"]) if data["opened_at"] else None,
        )
