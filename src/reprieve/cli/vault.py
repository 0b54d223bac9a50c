"""`reprieve vault`: create a vault, show it, and manage its keys."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from reprieve.cli.common import (
    emit,
    force_unlock_option,
    human_bytes,
    json_option,
    read_secret,
    secret_options,
    vault_option,
    with_vault,
)
from reprieve.vault.check import rebuild_index
from reprieve.vault.keys import DEFAULT_KDF_MEMORY_KIB, KeyWrapper
from reprieve.vault.locks import LockKind, VaultLock
from reprieve.vault.repository import Vault, backend_for


@click.group()
def vault() -> None:
    """Create vaults and manage their keys."""


@vault.command()
@vault_option
@secret_options
@json_option
@click.option("--region", default="", help="Region label recorded in the vault.")
@click.option(
    "--kdf-memory-kib",
    type=click.IntRange(1024),
    default=DEFAULT_KDF_MEMORY_KIB,
    show_default=True,
    help="Argon2id memory cost for the password.",
)
def init(
    vault_location: str,
    password_file: Path | None,
    key_file: Path | None,
    as_json: bool,
    region: str,
    kdf_memory_kib: int,
) -> None:
    """Create a new, empty vault."""
    secret = read_secret(password_file, key_file)
    created = Vault.create(backend_for(vault_location), secret, region, kdf_memory_kib)
    doc = {"vault": created.backend.location, "id": created.config.id, "region": region}
    emit(as_json, doc, lambda: click.echo(f"created vault {created.config.id} at {doc['vault']}"))


@vault.command()
@with_vault
@json_option
def show(vault: Vault, as_json: bool) -> None:
    """Show a vault's settings and sizes."""
    sizes = vault.stats()
    doc = {
        "vault": vault.backend.location,
        "id": vault.config.id,
        "region": vault.config.region,
        "created": vault.config.created,
        "format": vault.config.format,
        "points": len(vault.point_names()),
        "sizes": sizes,
        "bytes": sum(sizes.values()),
    }

    def human() -> None:
        for key in ("vault", "id", "region", "created", "points"):
            click.echo(f"{key:8} {doc[key]}")
        click.echo(f"{'size':8} {human_bytes(sum(sizes.values()))}")

    emit(as_json, doc, human)


@vault.group()
def key() -> None:
    """Add, list, and remove the passwords and key files that open a vault."""


@key.command("add")
@with_vault
@json_option
@click.option(
    "--new-password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The new password (default: REPRIEVE_NEW_PASSWORD).",
)
@click.option(
    "--new-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Add a key file instead of a password.",
)
@click.option("--kdf-memory-kib", type=click.IntRange(1024), default=DEFAULT_KDF_MEMORY_KIB)
def key_add(
    vault: Vault,
    as_json: bool,
    new_password_file: Path | None,
    new_key_file: Path | None,
    kdf_memory_kib: int,
) -> None:
    """Add a password or key file; data is not rewritten."""
    secret = read_secret(new_password_file, new_key_file, "REPRIEVE_NEW_PASSWORD", "new password")
    name = vault.add_key(secret, kdf_memory_kib)
    emit(
        as_json, {"added": name, "kind": secret.kind}, lambda: click.echo(f"added key {name[:12]}")
    )


@key.command("list")
@with_vault
@json_option
def key_list(vault: Vault, as_json: bool) -> None:
    """List the keys that open this vault."""
    rows = [
        {
            "id": w.name,
            "kind": w.kind,
            "created": w.created,
            "host": w.host,
            "current": w.name == vault.key_name,
        }
        if isinstance(w, KeyWrapper)
        else {"id": w, "kind": "damaged", "created": "", "host": "", "current": False}
        for w in Vault.key_wrappers(vault.backend)
    ]

    def human() -> None:
        table = Table("id", "kind", "created", "host", "current")
        for r in rows:
            table.add_row(
                str(r["id"])[:12],
                str(r["kind"]),
                str(r["created"]),
                str(r["host"]),
                "*" if r["current"] else "",
            )
        Console().print(table)

    emit(as_json, rows, human)


@key.command("remove")
@with_vault
@json_option
@click.argument("key_id")
def key_remove(
    vault: Vault,
    as_json: bool,
    key_id: str,
) -> None:
    """Remove a key (not the one used to open the vault)."""
    name = vault.remove_key(key_id)
    emit(as_json, {"removed": name}, lambda: click.echo(f"removed key {name[:12]}"))


@vault.command("rebuild-index")
@with_vault
@json_option
@force_unlock_option
def rebuild_index_cmd(
    vault: Vault,
    as_json: bool,
    force_unlock: bool,
) -> None:
    """Rebuild the index from the packs' headers (after index damage)."""
    with VaultLock(vault.backend, LockKind.EXCLUSIVE, "rebuild-index", force_unlock):
        doc = rebuild_index(vault)
    emit(
        as_json,
        doc,
        lambda: click.echo(
            f"indexed {doc['packs']} packs ({doc['unreadable_packs']} unreadable), "
            f"replacing {doc['index_files_replaced']} index files"
        ),
    )
