"""Recovery points: the manifests that make data reachable.

``points/<name>`` (name = BLAKE3 of the file) is an envelope (associated
data ``b"point"``) around a JSON manifest::

    {"v": 1, "resource": "app-files", "kind": "files", "time": ISO-8601 UTC,
     "tags": {"tenant": "acme"}, "paths": ["/data"], "tree": hex root tree id,
     "host": "...", "parent": point name or null,
     "origin": for a copy, the source vault's id and point name ("vault/point"),
     "retain_until": ISO-8601 UTC before which the point may not be forgotten, or null,
     "stats": {"files": …, "dirs": …, "bytes": …, "bytes_read": …, "bytes_added": …}}

A point is written last, after the packs and index it needs, and is the only
thing that makes data reachable: deleting it is how `forget` works.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from reprieve.errors import DamageError
from reprieve.vault.crypto import Cipher, content_name

POINT_AAD = b"point"


@dataclass
class Point:
    resource: str
    kind: str
    time: datetime
    tree: bytes
    tags: dict[str, str] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)
    host: str = ""
    parent: str | None = None
    origin: str | None = None
    retain_until: datetime | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    id: str = ""

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def to_json(self) -> dict[str, Any]:
        return {
            "v": 1,
            "resource": self.resource,
            "kind": self.kind,
            "time": _iso(self.time),
            "tags": self.tags,
            "paths": self.paths,
            "tree": self.tree.hex(),
            "host": self.host,
            "parent": self.parent,
            "origin": self.origin,
            "retain_until": _iso(self.retain_until) if self.retain_until else None,
            "stats": self.stats,
        }

    def summary(self) -> dict[str, Any]:
        """The public view printed by `points list --json`."""
        return {
            "id": self.id,
            "resource": self.resource,
            "kind": self.kind,
            "time": _short(self.time),
            "tags": self.tags,
            "bytes": int(self.stats.get("bytes", 0)),
            "paths": self.paths,
            "host": self.host,
            "retain_until": _short(self.retain_until) if self.retain_until else None,
        }


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def _short(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def encode_point(cipher: Cipher, point: Point) -> tuple[str, bytes]:
    data = cipher.seal(json.dumps(point.to_json(), sort_keys=True).encode(), POINT_AAD)
    return content_name(data), data


def decode_point(cipher: Cipher, name: str, data: bytes) -> Point:
    if content_name(data) != name:
        raise DamageError(f"point {name[:12]} does not match its name")
    plain = cipher.open(data, POINT_AAD, f"point {name[:12]}")
    try:
        body = json.loads(plain)
        return Point(
            id=name,
            resource=body["resource"],
            kind=body["kind"],
            time=datetime.fromisoformat(body["time"]),
            tree=bytes.fromhex(body["tree"]),
            tags=dict(body["tags"]),
            paths=list(body["paths"]),
            host=body["host"],
            parent=body["parent"],
            origin=body.get("origin"),
            retain_until=(
                datetime.fromisoformat(body["retain_until"]) if body.get("retain_until") else None
            ),
            stats=dict(body["stats"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise DamageError(f"point {name[:12]} is unreadable") from exc
