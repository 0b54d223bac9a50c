"""`reprieve vault`: create a vault, show it, and manage its keys."""

from __future__ import annotations

import os
from datetime import timedelta
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
    record_action,
    secret_options,
    vault_option,
    with_vault,
)
from reprieve.cli.unlock import remember_unlock
from reprieve.errors import UsageError
from reprieve.policy.retention import parse_duration
from reprieve.vault.check import rebuild_index
from reprieve.vault.immutability import LOCK_MODES, check_bucket_lockable, format_span
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
@click.option("--region", default="", help="Region recorded in the vault (default: the S3 region).")
@click.option(
    "--kdf-memory-kib",
    type=click.IntRange(1024),
    default=DEFAULT_KDF_MEMORY_KIB,
    show_default=True,
    help="Argon2id memory cost for the password.",
)
@click.option(
    "--lock",
    type=click.Choice(LOCK_MODES),
    help="Make points immutable: S3 Object Lock mode (a folder: enforced by reprieve).",
)
@click.option("--min-retention", metavar="DURATION", help="Shortest retention (default 1d).")
@click.option("--max-retention", metavar="DURATION", help="Longest retention (default: none).")
@click.option(
    "--storage-class", default="", help="S3 storage class for data packs, e.g. GLACIER_IR."
)
@click.option(
    "--ids-from",
    metavar="LOCATION",
    help="Share this vault's id key and chunker (a DR copy target): copies move stored "
    "bytes, and backups dedupe across the two. Its password: REPRIEVE_FROM_PASSWORD, "
    "--from-password-file, --from-key-file, else the new vault's.",
)
@click.option("--from-password-file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--from-key-file", type=click.Path(dir_okay=False, path_type=Path))
def init(
    vault_location: str,
    password_file: Path | None,
    key_file: Path | None,
    as_json: bool,
    region: str,
    kdf_memory_kib: int,
    lock: str | None,
    min_retention: str | None,
    max_retention: str | None,
    storage_class: str,
    ids_from: str | None,
    from_password_file: Path | None,
    from_key_file: Path | None,
) -> None:
    """Create a new, empty vault."""
    secret = read_secret(password_file, key_file)
    ids_of = None
    if ids_from is not None:
        ids_of = Vault.open(
            backend_for(ids_from),
            read_secret(from_password_file, from_key_file, "REPRIEVE_FROM_PASSWORD")
            if from_password_file or from_key_file or "REPRIEVE_FROM_PASSWORD" in os.environ
            else secret,
        )
    elif from_password_file or from_key_file:
        raise UsageError("--from-password-file and --from-key-file need --ids-from")
    backend = backend_for(vault_location)
    settings: dict[str, object] = {"storage_class": storage_class.upper()}
    if storage_class and not backend.can_lock:
        raise UsageError("--storage-class applies to S3 vaults only")
    if lock:
        low = int(parse_duration(min_retention or "1d").total_seconds())
        high = int(parse_duration(max_retention).total_seconds()) if max_retention else 0
        if low <= 0 or (high and high < low):
            raise UsageError("retention bounds need 0 < --min-retention <= --max-retention")
        check_bucket_lockable(backend)
        settings.update(lock=lock, min_retention_s=low, max_retention_s=high)
    elif min_retention or max_retention:
        raise UsageError("--min-retention and --max-retention need --lock")
    created = Vault.create(backend, secret, region, kdf_memory_kib, ids_of, **settings)
    remember_unlock(vault_location, created)
    config = created.config
    doc = {
        "vault": created.backend.location,
        "id": config.id,
        "region": config.region,
        "lock": config.lock or None,
        "ids_from": config.ids_from or None,
    }
    # Who made the vault, and with what lock, is the trail's first line for it.
    details: dict[str, object] = {k: v for k, v in doc.items() if k != "vault"}
    details.update(
        min_retention_s=config.min_retention_s or None,
        max_retention_s=config.max_retention_s or None,
    )
    record_action([created], "vault.init", created.backend.location, details)
    emit(as_json, doc, lambda: click.echo(f"created vault {config.id} at {doc['vault']}"))


@vault.command()
@with_vault
@json_option
def show(vault: Vault, as_json: bool) -> None:
    """Show a vault's settings and sizes."""
    sizes = vault.stats()
    config = vault.config
    doc = {
        "vault": vault.backend.location,
        "id": config.id,
        "region": config.region,
        "created": config.created,
        "format": config.format,
        "lock": config.lock or None,
        "lock_enforced_by": ("storage" if vault.backend.can_lock else "reprieve")
        if config.lock
        else None,
        "min_retention_s": config.min_retention_s or None,
        "max_retention_s": config.max_retention_s or None,
        "storage_class": config.storage_class or None,
        "ids_from": config.ids_from or None,
        "points": len(vault.point_names()),
        "sizes": sizes,
        "bytes_by_storage_class": vault.backend.usage(),
        "bytes": sum(sizes.values()),
    }

    def human() -> None:
        for key in ("vault", "id", "region", "created", "points"):
            click.echo(f"{key:8} {doc[key]}")
        if config.ids_from:
            click.echo(f"{'ids':8} shared with vault {config.ids_from}")
        if config.lock:
            high = config.max_retention_s
            bounds = (
                format_span(timedelta(seconds=config.min_retention_s))
                + " to "
                + (format_span(timedelta(seconds=high)) if high else "unbounded")
            )
            click.echo(f"{'lock':8} {config.lock} ({doc['lock_enforced_by']}), retention {bounds}")
        click.echo(f"{'size':8} {human_bytes(sum(sizes.values()))}")
        for cls, size in sorted(doc["bytes_by_storage_class"].items()):
            click.echo(f"{'':8} {cls}: {human_bytes(size)}")

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
    record_action([vault], "key.add", name, {"location": vault.backend.location})
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
    record_action([vault], "key.remove", name, {"location": vault.backend.location})
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
