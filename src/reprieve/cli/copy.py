"""`reprieve copy`: copy recovery points to another vault (another region)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click

from reprieve.cli.common import (
    emit,
    human_bytes,
    json_option,
    preload_catalog,
    progress_for,
    read_secret,
    record_action,
    settle_heap,
)
from reprieve.cli.unlock import remember_unlock, start_unlocking
from reprieve.engine.copy import copy_points
from reprieve.errors import DamageError
from reprieve.policy.retention import parse_duration
from reprieve.vault.repository import Vault, backend_for


@click.command()
@click.argument("point_ids", nargs=-1, metavar="[POINT]...")
@click.option("--from", "source", required=True, metavar="LOCATION", help="Source vault.")
@click.option("--to", "destination", required=True, metavar="LOCATION", help="Target vault.")
@click.option("--resource", help="Copy every point of this resource (default: all points).")
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Source password (default: REPRIEVE_PASSWORD).",
)
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--to-password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Target password (default: REPRIEVE_TO_PASSWORD, else the source's).",
)
@click.option("--to-key-file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--retain",
    metavar="DURATION",
    help="Lock the copies this long from now (default: the source's date, or more).",
)
@json_option
def copy(
    point_ids: tuple[str, ...],
    source: str,
    destination: str,
    resource: str | None,
    password_file: Path | None,
    key_file: Path | None,
    to_password_file: Path | None,
    to_key_file: Path | None,
    retain: str | None,
    as_json: bool,
) -> None:
    """Copy points the target lacks; only missing data is sent, re-encrypted."""
    src_secret = read_secret(password_file, key_file)
    if to_password_file or to_key_file or os.environ.get("REPRIEVE_TO_PASSWORD") is not None:
        dst_secret = read_secret(
            to_password_file, to_key_file, "REPRIEVE_TO_PASSWORD", "to password"
        )
    else:
        dst_secret = src_secret
    # Both key derivations start now when hinted, and take turns meanwhile.
    start_unlocking(source, src_secret)
    start_unlocking(destination, dst_secret)
    # The two opens overlap their round trips.
    with ThreadPoolExecutor(1, thread_name_prefix="open-target") as pool:
        opening = pool.submit(lambda: Vault.open(backend_for(destination), dst_secret))
        src = Vault.open(backend_for(source), src_secret)  # its error is the one told
        # Loaded while the target unlocks (its key derivation follows the source's).
        _ = src.index
        dst = opening.result()
    remember_unlock(source, src)
    remember_unlock(destination, dst)
    settle_heap()
    result = copy_points(
        src,
        dst,
        resource,
        point_ids,
        progress_for(as_json, "copy"),
        parse_duration(retain) if retain else None,
        # The catalog records a copy at the end; nothing copied, nothing to record.
        moving=preload_catalog,
    )
    if result.copied:
        copies = [copy_id for _, copy_id in result.copied]
        record_action(
            [src, dst],
            "copy",
            resource or "points",
            {
                "from": src.backend.location,
                "to": dst.backend.location,
                "copied": copies,
                "count": len(copies),
            },
            made=[(dst, dst.load_point(copy_id)) for copy_id in copies],
        )
    if result.damaged:
        emit(as_json, result.to_json(), lambda: None)
        first, problem = result.damaged[0]
        raise DamageError(
            f"{len(result.damaged)} point(s) could not be copied (first {first[:12]}: {problem}); "
            f"{len(result.copied)} copied"
        )
    emit(
        as_json,
        result.to_json(),
        lambda: click.echo(
            f"copied {len(result.copied)} point(s) ({result.skipped} already there), "
            f"{human_bytes(result.bytes_transferred)} sent in {result.duration_s:.1f}s"
        ),
    )
