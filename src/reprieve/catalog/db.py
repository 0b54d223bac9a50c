"""Opening the catalog: where it is, bringing its schema up to date, sessions.

SQLite under ``REPRIEVE_HOME`` (default ``~/.reprieve``) unless
``--catalog-url`` or ``REPRIEVE_CATALOG_URL`` names another database, such
as PostgreSQL (``postgresql://user@host/db``, driven by psycopg 3). Every
open brings the schema to the newest migration (Alembic, loaded only when
one is missing), so a new release's
schema arrives with its first command; migrations are transactional, and a
second process migrating at the same moment waits for the first.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from reprieve.errors import StorageError, UsageError
from reprieve.home import home

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest migration's revision (a test holds it to the migrations folder):
# a catalog already there is opened without loading Alembic at all.
HEAD = "0003"


def catalog_url(explicit: str | None = None) -> URL:
    text = explicit or os.environ.get("REPRIEVE_CATALOG_URL")
    if not text:
        folder = home()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {folder} for the catalog: {exc}") from exc
        return make_url(f"sqlite:///{folder / 'catalog.db'}")
    try:
        url = make_url(text)
    except ArgumentError as exc:
        raise UsageError(f"bad catalog URL {text!r}: use sqlite:///PATH or postgresql://…") from exc
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise UsageError(
            f"unsupported catalog database {url.drivername!r}: use SQLite or PostgreSQL"
        )
    return url


class Catalog:
    def __init__(self, url: URL) -> None:
        self.url = url
        self.shown = url.render_as_string(hide_password=True)
        self.engine: Engine = create_engine(url)
        if url.get_backend_name() == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def migrate(self) -> None:
        try:
            if self.revision() == HEAD:
                return
            from alembic import command
            from alembic.config import Config

            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            with self.engine.begin() as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except SQLAlchemyError as exc:
            raise StorageError(
                f"cannot open the catalog at {self.shown}: {_first_line(exc)}"
            ) from exc

    def revision(self) -> str | None:
        """The schema's migration revision; None for a new, empty database."""
        with self.engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return None
            found = connection.execute(text("SELECT version_num FROM alembic_version")).first()
        return str(found[0]) if found else None

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any error."""
        try:
            with self._sessions.begin() as session:
                yield session
        except SQLAlchemyError as exc:
            raise StorageError(f"catalog at {self.shown}: {_first_line(exc)}") from exc

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_catalog(explicit: str | None = None) -> Catalog:
    """The catalog, migrated; use it as a context manager to release it."""
    catalog = Catalog(catalog_url(explicit))
    try:
        catalog.migrate()
    except BaseException:
        catalog.close()
        raise
    return catalog


def as_utc(at: datetime) -> datetime:
    """A catalog time as aware UTC: SQLite hands back naive times, stored as UTC."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _first_line(exc: SQLAlchemyError) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def _sqlite_pragmas(connection: object, _record: object) -> None:
    cursor = connection.cursor()  # type: ignore[attr-defined]
    # Readers do not block the writer, and a busy catalog is waited for.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()
