"""PostgreSQL commands: `backup postgres`, `restore postgres`, `wal …`, `standby …`."""

from __future__ import annotations

import re
import signal
from pathlib import Path
from types import FrameType
from typing import Any

import click

from reprieve.cli.common import (
    emit,
    human_bytes,
    json_option,
    open_vault,
    progress_for,
    record_action,
    secret_options,
    vault_option,
    with_vault,
)
from reprieve.errors import UsageError
from reprieve.policy.retention import parse_duration
from reprieve.vault.immutability import retain_until
from reprieve.vault.repository import Vault

resource_option = click.option("--resource", required=True, help="Name of the database resource.")
dsn_option = click.option(
    "--dsn",
    envvar="REPRIEVE_PG_DSN",
    metavar="CONNINFO",
    help="libpq connection string (default: the resource's connection in the applied policy).",
)
os_user_option = click.option(
    "--os-user",
    metavar="USER",
    help="OS user that runs the restored cluster (default: postgres when run as root).",
)


def resolve_dsn(resource: str, dsn: str | None) -> str:
    """--dsn, else the resource's connection in the policy the catalog holds."""
    if dsn:
        return dsn
    from reprieve.catalog.db import open_catalog
    from reprieve.catalog.policies import current

    with open_catalog() as catalog:
        found = current(catalog)
    spec = found[1].resources.get(resource) if found else None
    if spec is None or not spec.connection:
        raise UsageError(
            f"no connection for {resource!r}: pass --dsn, or apply a policy whose "
            "resource has a connection"
        )
    return spec.connection


def _os_user(given: str | None) -> str | None:
    from reprieve.sources.postgres import default_os_user

    return given or default_os_user()


# -- backup postgres -------------------------------------------------------------


@click.command("postgres")
@with_vault
@json_option
@resource_option
@dsn_option
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Tag the point.")
@click.option("--retain", metavar="DURATION", help="Lock the point this long (locked vaults).")
def backup_postgres(
    vault: Vault,
    as_json: bool,
    resource: str,
    dsn: str | None,
    tags: tuple[str, ...],
    retain: str | None,
) -> None:
    """Take a base backup (pg_basebackup) through the vault's chunker."""
    from datetime import UTC, datetime

    from reprieve.cli.backup import parse_tags
    from reprieve.engine.backup import check_resource_name
    from reprieve.sources.postgres import base_backup

    check_resource_name(resource)
    span = parse_duration(retain) if retain else None
    until = retain_until(vault, datetime.now(UTC), span)
    progress = progress_for(as_json, f"base backup {resource}")
    progress.start(f"base backup {resource}")
    try:
        result = base_backup(
            vault, resource, resolve_dsn(resource, dsn), parse_tags(tags), progress, until
        )
    finally:
        progress.finish()
    meta = result.point.stats["postgres"]
    doc = {
        "point": result.point.id,
        "resource": resource,
        "time": result.point.summary()["time"],
        "bytes": result.bytes,
        "bytes_added": result.bytes_added,
        "duration_s": round(result.duration_s, 3),
        **{k: meta[k] for k in ("start_lsn", "stop_lsn", "start_wal", "timeline")},
    }
    record_action(
        [vault],
        "backup",
        resource,
        {"point": result.point.id, "location": vault.backend.location, "kind": "postgres"},
        made=[(vault, result.point)],
    )
    emit(
        as_json,
        doc,
        lambda: click.echo(
            f"base backup {result.point.short_id} of {resource}: {human_bytes(result.bytes)} "
            f"({human_bytes(result.bytes_added)} added) in {result.duration_s:.1f}s, "
            f"WAL from {meta['start_wal']}"
        ),
    )


# -- restore postgres ------------------------------------------------------------


@click.command("postgres")
@with_vault
@json_option
@resource_option
@click.option(
    "--target",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="New data folder.",
)
@click.option(
    "--to-time", metavar="TIME", help="Recover to this time, e.g. '2026-11-22 11:30:00+00'."
)
@click.option("--to-lsn", metavar="LSN", help="Recover to this WAL position, e.g. 0/5000060.")
@click.option("--to-xid", metavar="XID", help="Recover to the commit of this transaction.")
@click.option("--latest", is_flag=True, help="Recover everything the vault holds.")
@click.option("--start", is_flag=True, help="Leave the recovered cluster running.")
@click.option("--port", type=int, help="Port for the recovered cluster (default: a free one).")
@click.option(
    "--listen", default="127.0.0.1", show_default=True, help="listen_addresses with --start."
)
@os_user_option
def restore_postgres(
    vault: Vault,
    as_json: bool,
    resource: str,
    target: Path,
    to_time: str | None,
    to_lsn: str | None,
    to_xid: str | None,
    latest: bool,
    start: bool,
    port: int | None,
    listen: str,
    os_user: str | None,
) -> None:
    """Point-in-time recovery into a new data folder; reports the achieved RTO and RPO."""
    from reprieve.sources.pg_recover import Target, restore_postgres

    given = [(k, v) for k, v in (("time", to_time), ("lsn", to_lsn), ("xid", to_xid)) if v]
    if len(given) + int(latest) != 1:
        raise UsageError("give exactly one of --to-time, --to-lsn, --to-xid, --latest")
    to = Target(*given[0]) if given else Target("latest")
    to.settings()  # a malformed time, LSN or xid is a usage error before any work
    progress = progress_for(as_json, f"restore {resource}")
    report = restore_postgres(
        vault, resource, target, to, port, start, _os_user(os_user), listen, progress
    )
    doc = report.to_json()
    record_action(
        [vault],
        "restore",
        resource,
        {"base": report.base, "target": doc["target"], "recovered_to": doc["recovered_to"]},
    )

    def human() -> None:
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in report.phases.items())
        gap = "" if report.rpo_gap_s is None else f", {report.rpo_gap_s:.1f}s before the request"
        where = f"; running on port {report.port}" if report.running else ""
        click.echo(
            f"recovered {resource} to {doc['recovered_to'] or report.recovered_lsn}{gap} "
            f"in {report.duration_s:.1f}s ({phases}){where}"
        )

    emit(as_json, doc, human)


# -- wal -------------------------------------------------------------------------


@click.group()
def wal() -> None:
    """Move write-ahead log between PostgreSQL and the vault."""


def _spool_options(func: Any) -> Any:
    func = click.option(
        "--spool-max",
        default="1GiB",
        show_default=True,
        metavar="SIZE",
        help="Bound on spooled WAL; past it, files are dropped, never the database's disk.",
    )(func)
    return click.option(
        "--spool",
        type=click.Path(file_okay=False, path_type=Path),
        help="Spool folder (default: REPRIEVE_HOME/spool/RESOURCE).",
    )(func)


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]i?B?|B)?\s*", text, re.IGNORECASE)
    if not m:
        raise UsageError(f"{text!r} is not a size like 512MiB or 2GiB")
    unit = (m[2] or "B").upper()[:1]
    return int(m[1]) * {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[unit]


@wal.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@vault_option
@secret_options
@resource_option
@_spool_options
def push(
    path: Path,
    vault_location: str,
    password_file: Path | None,
    key_file: Path | None,
    resource: str,
    spool: Path | None,
    spool_max: str,
) -> None:
    """archive_command: store one WAL file (%p); spool it if the vault is unavailable."""
    from reprieve.sources.pg_wal import Spool, default_spool
    from reprieve.sources.pg_wal import push as push_wal
    from reprieve.vault.logs import LogStore

    bound = Spool(spool or default_spool(resource), parse_size(spool_max))
    result = push_wal(
        lambda: LogStore(open_vault(vault_location, password_file, key_file), resource),
        path,
        bound,
    )
    if result.warning:
        click.echo(f"reprieve: warning: {result.warning}", err=True)


@wal.command()
@click.argument("name")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@with_vault
@resource_option
def fetch(vault: Vault, name: str, path: Path, resource: str) -> None:
    """restore_command: write WAL file NAME (%f) from the vault to PATH (%p)."""
    from reprieve.sources.pg_wal import write_atomic
    from reprieve.vault.logs import SEGMENT, LogStore

    store = LogStore(vault, resource)
    data = store.segment(name) if SEGMENT.fullmatch(name) else store.get(name)
    write_atomic(path, data)


@wal.command()
@with_vault
@resource_option
@_spool_options
@click.option("--follow", is_flag=True, help="Keep shipping as files arrive (until stopped).")
def ship(vault: Vault, resource: str, spool: Path | None, spool_max: str, follow: bool) -> None:
    """Send spooled WAL (from `wal push` or the helper) to the vault, oldest first."""
    import time

    from reprieve.sources.pg_wal import Spool, default_spool, ship_spool
    from reprieve.vault.logs import LogStore

    store = LogStore(vault, resource)
    folder = Spool(spool or default_spool(resource), parse_size(spool_max))
    while True:
        shipped = ship_spool(store, folder)
        if shipped and not follow:
            click.echo(f"shipped {len(shipped)} WAL file(s) of {resource}")
        if not follow:
            return
        time.sleep(0.2)


@wal.command()
@resource_option
@_spool_options
@os_user_option
def setup(resource: str, spool: Path | None, spool_max: str, os_user: str | None) -> None:
    """Prepare archiving for a database that runs as another OS user; print its settings."""
    from reprieve.sources.pg_feeder import helper_python, install_helper
    from reprieve.sources.pg_wal import default_spool

    folder = (spool or default_spool(resource)).absolute()
    helper = install_helper(folder, _os_user(os_user))
    limit = parse_size(spool_max)
    click.echo(
        f"# postgresql.conf for {resource}; then run: reprieve wal ship --follow "
        f"--resource {resource} --spool {folder} --vault …"
    )
    click.echo("archive_mode = on")
    click.echo(f"archive_command = '{helper_python()} {helper} push %p {folder} {limit}'")


@wal.command("list")
@with_vault
@json_option
@resource_option
def list_wal(vault: Vault, as_json: bool, resource: str) -> None:
    """List the WAL files the vault holds for a resource."""
    from reprieve.vault.logs import LogStore

    listing = LogStore(vault, resource).listing()
    rows = [
        {"name": n, "bytes": size, "partial": False} for n, size in sorted(listing.segments.items())
    ]
    rows += [
        {"name": s, "bytes": listing.partial_end(s), "partial": True}
        for s in sorted(listing.pieces)
        if s not in listing.segments
    ]
    rows += [{"name": n, "bytes": None, "partial": False} for n in sorted(listing.histories)]
    rows.sort(key=lambda r: str(r["name"]))

    def human() -> None:
        for row in rows:
            mark = " (streaming)" if row["partial"] else ""
            click.echo(f"{row['name']}{mark}")

    emit(as_json, rows, human)


@wal.command()
@with_vault
@resource_option
@dsn_option
@click.option("--synchronous", is_flag=True, help="Acknowledge commits once streamed (zero RPO).")
@click.option("--slot", help="Replication slot (default: reprieve_RESOURCE).")
@click.option(
    "--spool",
    type=click.Path(file_okay=False, path_type=Path),
    help="Local folder for pg_receivewal (default: REPRIEVE_HOME/spool/RESOURCE-stream).",
)
def stream(
    vault: Vault,
    resource: str,
    dsn: str | None,
    synchronous: bool,
    slot: str | None,
    spool: Path | None,
) -> None:
    """Stream WAL with pg_receivewal and ship it to the vault as it arrives (until stopped)."""
    from reprieve.sources.pg_wal import Streamer, default_spool

    streamer = Streamer(
        vault,
        resource,
        resolve_dsn(resource, dsn),
        spool or default_spool(f"{resource}-stream"),
        synchronous,
        slot,
    )

    def stop(signum: int, frame: FrameType | None) -> None:
        streamer.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    streamer.run()
    if streamer.error:
        click.echo(f"reprieve: warning: last streaming error: {streamer.error}", err=True)


# -- standby -----------------------------------------------------------------------


@click.group()
def standby() -> None:
    """A warm standby that replays WAL from a (DR) vault."""


@standby.command("start")
@vault_option
@secret_options
@json_option
@resource_option
@click.option("--target", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--port", type=int, required=True, help="Port of the standby cluster.")
@os_user_option
def standby_start(
    vault_location: str,
    password_file: Path | None,
    key_file: Path | None,
    as_json: bool,
    resource: str,
    target: Path,
    port: int,
    os_user: str | None,
) -> None:
    """Restore the newest base backup as a standby and keep it fed from the vault."""
    from reprieve.sources.pg_standby import start_standby

    vault = open_vault(vault_location, password_file, key_file)
    doc = start_standby(
        vault,
        vault_location,
        password_file,
        key_file,
        resource,
        target.absolute(),
        port,
        _os_user(os_user),
    )
    emit(
        as_json,
        doc,
        lambda: click.echo(
            f"standby of {resource} replaying from {vault_location} on port {port} "
            f"(follower pid {doc['follower_pid']})"
        ),
    )


@standby.command("follow", hidden=True)
@with_vault
@resource_option
def standby_follow(vault: Vault, resource: str) -> None:
    """Feed a standby's inbox from the vault until it is promoted or stopped."""
    from reprieve.sources.pg_standby import follow

    follow(vault, resource)


@standby.command("promote")
@json_option
@resource_option
def standby_promote(as_json: bool, resource: str) -> None:
    """Turn the standby into a primary."""
    from reprieve.sources.pg_standby import promote

    doc = promote(resource)
    record_action([], "standby promote", resource, doc)
    emit(
        as_json,
        doc,
        lambda: click.echo(
            f"standby of {resource} promoted in {doc['promote_s']:.1f}s; "
            f"accepting writes on port {doc['port']}"
        ),
    )


@standby.command("list")
@json_option
def standby_list(as_json: bool) -> None:
    """Standbys on this machine and their replay lag."""
    from reprieve.sources.pg_standby import standbys

    rows = standbys()

    def human() -> None:
        if not rows:
            click.echo("no standbys")
        for row in rows:
            lag = row.get("lag_s")
            click.echo(
                f"{row['resource']}: {row['state']}, port {row['port']}, "
                f"replay lag {'?' if lag is None else f'{lag:.1f}s'}"
            )

    emit(as_json, rows, human)
