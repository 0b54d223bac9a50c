"""The catalog's schema: brought to the newest migration, and known to be there."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

from reprieve.catalog.db import HEAD, MIGRATIONS, open_catalog


def test_head_names_the_newest_migration_and_a_new_catalog_reaches_it(tmp_path: Path) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    with open_catalog(url) as catalog:
        assert catalog.revision() == HEAD
    with open_catalog(url) as again:  # already there: opened as it is
        assert again.revision() == HEAD
