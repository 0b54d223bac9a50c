"""The storage seam: a flat namespace of named, immutable objects.

Names are slash-separated (``packs/ab/ab12…``). Every object except
``config`` and ``locks/*`` is written once and never rewritten; ``put`` of an
existing name with other bytes is a bug in the caller. Backends translate
their own failures into :mod:`reprieve.errors` at this boundary.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol


class Backend(Protocol):
    location: str

    def get(self, name: str) -> bytes:
        """The whole object; raises NotFoundError when absent."""
        ...

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset``; a negative offset counts from the end."""
        ...

    def put(self, name: str, data: bytes | memoryview) -> None:
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
