"""The storage seam: a flat namespace of named, immutable objects.

Names are slash-separated (``packs/ab/ab12…``). Every object except
``locks/*`` and ``holds/*`` is written once and never rewritten; ``put`` of
an existing name with other bytes is a bug in the caller. Backends translate
their own failures into :mod:`reprieve.errors` at this boundary.

Storage that can lock objects (S3 Object Lock) does so when ``lock_mode`` is
set: ``put`` with a date, ``retain`` and ``hold`` lock, ``delete`` of a
locked object raises RefusedError. Storage that cannot (a folder) keeps
the same methods as no-ops, and reprieve enforces retention itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, Protocol


def whole_second(when: datetime) -> datetime:
    """``when`` rounded up to a whole second, the precision of retention dates."""
    return when.replace(microsecond=0) + (timedelta(seconds=1) if when.microsecond else timedelta())


class Backend(Protocol):
    location: str
    region: str
    lock_mode: str | None  # "GOVERNANCE" or "COMPLIANCE" on a locked vault
    storage_class: str  # for packs, where storage has classes ("" = default)
    bypass_governance: bool
    can_lock: bool  # whether storage itself enforces retention and holds

    def get(self, name: str) -> bytes:
        """The whole object; raises NotFoundError when absent."""
        ...

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset``; a negative offset counts from the end."""
        ...

    def put(
        self, name: str, data: bytes | bytearray | memoryview, retain_until: datetime | None = None
    ) -> None:
        """Store atomically: readers see the whole object or nothing."""
        ...

    def delete(self, name: str) -> None: ...

    def exists(self, name: str) -> bool: ...

    def size(self, name: str) -> int: ...

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        """(name, size) of every complete object under ``prefix``."""
        ...

    def remove_leftovers(self, older_than_s: float) -> int:
        """Remove debris of interrupted writes older than that; returns the count."""
        ...

    def retain(self, name: str, until: datetime) -> None:
        """Lock ``name`` until ``until`` at least; never shortens."""
        ...

    def locked_until(self, name: str) -> datetime | None:
        """Until when storage refuses to delete ``name`` (None: it would not)."""
        ...

    def hold(self, name: str, on: bool) -> None:
        """Set or clear a legal hold on ``name``."""
        ...

    def usage(self) -> dict[str, int]:
        """Bytes stored, by storage class."""
        ...

    def object_lock(self) -> dict[str, Any] | None:
        """The storage's Object Lock settings; None where it has none."""
        ...

    def first_version(self, name: str) -> bytes | None:
        """The first version written of ``name`` (where storage keeps versions)."""
        ...
