"""What every command shares: the vault and secret options, output, progress."""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib
import json
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from reprieve.cli.unlock import remember_unlock, start_unlocking
from reprieve.errors import UsageError
from reprieve.vault.keys import Secret
from reprieve.vault.points import Point
from reprieve.vault.repository import Vault, backend_for

F = TypeVar("F", bound=Callable[..., Any])


def vault_option(func: F) -> F:
    return click.option(
        "--vault",
        "vault_location",
        envvar="REPRIEVE_VAULT",
        required=True,
        metavar="LOCATION",
        help="Vault folder or s3://bucket/prefix (or set REPRIEVE_VAULT).",
    )(func)


def catalog_option(func: F) -> F:
    return click.option(
        "--catalog-url",
        envvar="REPRIEVE_CATALOG_URL",
        metavar="URL",
        help="Catalog database (default: SQLite under REPRIEVE_HOME, ~/.reprieve).",
    )(func)


def json_option(func: F) -> F:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON document and nothing else."
    )(func)


def secret_options(func: F) -> F:
    func = click.option(
        "--password-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Read the password from this file (default: REPRIEVE_PASSWORD).",
    )(func)
    return click.option(
        "--key-file",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="REPRIEVE_KEY_FILE",
        help="Unlock with a key file instead of a password.",
    )(func)


def force_unlock_option(func: F) -> F:
    return click.option(
        "--force-unlock",
        is_flag=True,
        help="Remove every lock first (only when the process holding it is gone).",
    )(func)


def read_secret(
    password_file: Path | None,
    key_file: Path | None,
    env: str = "REPRIEVE_PASSWORD",
    what: str = "password",
) -> Secret:
    if key_file is not None:
        try:
            return Secret.keyfile(key_file.read_bytes())
        except OSError as exc:
            raise UsageError(f"cannot read key file {key_file}: {exc.strerror}") from exc
    if password_file is not None:
        try:
            text = password_file.read_text().rstrip("\r\n")
        except OSError as exc:
            raise UsageError(f"cannot read {what} file {password_file}: {exc.strerror}") from exc
        return Secret.passphrase(text)
    from_env = os.environ.get(env)
    if from_env is None:
        raise UsageError(f"no {what} given; set {env} or pass --{what.replace(' ', '-')}-file")
    return Secret.passphrase(from_env)


def open_vault(
    location: str, password_file: Path | None, key_file: Path | None, preload: bool = False
) -> Vault:
    """The vault at ``location``, unlocked; with ``preload``, the catalog is
    imported meanwhile, from when the key derivation starts (see
    :func:`preload_catalog` and :mod:`reprieve.cli.unlock`)."""
    secret = read_secret(password_file, key_file)
    ahead = start_unlocking(location, secret)
    if preload and ahead:
        preload_catalog()
    backend = backend_for(location)
    if preload and not ahead:
        preload_catalog()
    vault = Vault.open(backend, secret)
    remember_unlock(location, vault)
    settle_heap()
    return vault


def settle_heap() -> None:
    """Exempt what is loaded so far (modules, clients, the index) from the
    garbage collector: it lives as long as the command, and walking it again
    at every collection is wasted."""
    gc.freeze()


def preload_catalog() -> None:
    """Import the catalog in the background for a long command that records
    its action at the end (SQLAlchemy takes about 0.3 s to import; at the end
    the storage would wait for it).

    A backup starts it with the key derivation: that releases the GIL and
    needs nothing else, so the import has it (nearly) to itself. Started
    once the work is under way, the import holds the GIL for up to the
    switch interval every time a walking or reading thread gives it up for a
    system call: an unchanged re-backup of 20,000 files walked in 0.85 s
    instead of 0.6. A copy starts it once data moves (``copy_points``'s
    ``moving``), when its threads wait on whole packs' transfers: during its
    start-up the import held up the storage clients' imports, and a copy with
    nothing to send never needs it (0.76 s instead of 0.93, median of five).
    A failure here is left for the import in :func:`record_action` to report.
    """

    def load() -> None:
        with contextlib.suppress(Exception):
            importlib.import_module("reprieve.catalog.trail")

    threading.Thread(target=load, name="preload-catalog", daemon=True).start()


def with_vault(func: Callable[..., None], preload: bool = False) -> Callable[..., None]:
    """Add --vault, --password-file and --key-file; the command gets ``vault`` opened."""

    @functools.wraps(func)
    def command(
        *args: Any,
        vault_location: str,
        password_file: Path | None,
        key_file: Path | None,
        **kwargs: Any,
    ) -> None:
        vault = open_vault(vault_location, password_file, key_file, preload)
        func(*args, vault=vault, **kwargs)

    return vault_option(secret_options(command))


def with_vault_recording(func: Callable[..., None]) -> Callable[..., None]:
    """:func:`with_vault` for a long command that records its action at the
    end: the catalog is imported while the vault is unlocked."""
    return with_vault(func, preload=True)


def record_action(
    vaults: Sequence[Vault],
    action: str,
    subject: str,
    details: dict[str, Any],
    made: Sequence[tuple[Vault, Point]] = (),
    forgot: Sequence[tuple[Vault, Sequence[str]]] = (),
) -> None:
    """Put the action in the audit trail (catalog and vaults); warn, never fail,
    when the catalog cannot take it: the action itself is already done."""
    from reprieve.catalog.trail import note

    warning = note(None, vaults, action, subject, details, made, forgot)
    if warning is not None:
        click.echo(f"reprieve: warning: {warning}", err=True)


def emit(as_json: bool, document: Any, human: Callable[[], None]) -> None:
    """Print ``document`` as JSON, or call ``human`` to print for a person."""
    if as_json:
        click.echo(json.dumps(document, indent=2, sort_keys=True, default=str))
    else:
        human()


def progress_for(as_json: bool, label: str) -> Any:
    """A rich progress bar on a terminal; a silent counter otherwise."""
    from reprieve.engine.progress import NullProgress

    if as_json or not sys.stderr.isatty():
        return NullProgress()
    from reprieve.cli.progress import RichProgress

    return RichProgress(label)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
