"""The `reprieve` command: one group, one module per command group.

Errors are raised, never printed deep inside: this module's :func:`main` is
the single place that turns them into one line on stderr and an exit code
(see reprieve.errors). ``--debug`` (or REPRIEVE_DEBUG=1) shows tracebacks.
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import os
import signal
import sys
import traceback
from types import FrameType
from typing import NoReturn

import click

from reprieve import __version__
from reprieve.cli.lazy import LazyGroup
from reprieve.errors import Interrupted, ReprieveError

COMMANDS = {
    "audit": "reprieve.cli.audit:audit",
    "backup": "reprieve.cli.backup:backup",
    "catalog": "reprieve.cli.catalog:catalog_group",
    "check": "reprieve.cli.check:check",
    "copy": "reprieve.cli.copy:copy",
    "drill": "reprieve.cli.drill:drill",
    "forget": "reprieve.cli.forget:forget",
    "jobs": "reprieve.cli.service:jobs",
    "lifecycle": "reprieve.cli.lifecycle:lifecycle",
    "points": "reprieve.cli.points:points",
    "policy": "reprieve.cli.policy:policy",
    "prune": "reprieve.cli.forget:prune",
    "restore": "reprieve.cli.restore:restore",
    "run": "reprieve.cli.service:run",
    "runbook": "reprieve.cli.runbook:runbook",
    "server": "reprieve.cli.service:server",
    "standby": "reprieve.cli.postgres:standby",
    "status": "reprieve.cli.service:status",
    "vault": "reprieve.cli.vault:vault",
    "wal": "reprieve.cli.postgres:wal",
}


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="reprieve")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
def cli(debug: bool) -> None:
    """reprieve: encrypted, deduplicated, verified recovery points."""


def _tune_malloc() -> None:
    """One malloc arena, and large buffers reused rather than unmapped.

    Every worker thread otherwise gets an arena of its own that keeps the
    large buffers it freed: with packs and read blocks of 16 MiB, that alone
    added about 90 MiB of resident memory to a backup (measured on 1 GiB).
    Left to itself, glibc also hands most buffers of a MiB or more back to
    the kernel when they are freed, and the next ones are faulted in again
    page by page: half the page faults of a 2 GiB backup, about 0.2 s of CPU.

    Up to 128 MiB comes from the one arena, so the 64 MiB an Argon2 key
    derivation fills is reused by the next (a copy unlocks two vaults) and by
    the buffers after it, instead of being mapped afresh: a second arena
    (whose heaps hold at most 64 MiB) could not take it. Python allocates
    holding the GIL, so the lock of a single arena is seldom contended. A
    copy of 1 GiB between two S3 services took 81,000 to 98,000 page faults
    instead of 116,000 to 161,000; an S3 backup of 2 GiB 80,000 to 85,000
    instead of 95,000 to 101,000, with no more CPU.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, 1)  # M_ARENA_MAX
        libc.mallopt(-3, 128 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def _debug(debug: bool) -> None:
    """With --debug, the traceback of the error being handled; the exit code stays."""
    if debug:
        traceback.print_exc()


def _fail(message: str, code: int) -> None:
    # An error that lists several problems (a policy file) prints one line each.
    for line in message.splitlines() or [""]:
        click.echo(f"reprieve: {line}", err=True)
    sys.exit(code)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise Interrupted


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or os.environ.get("REPRIEVE_DEBUG") == "1"
    # --debug is accepted anywhere on the line, not only before the command.
    args = [a for a in args if a != "--debug"]
    _tune_malloc()
    # A backup allocates container objects by the hundred thousand and frees
    # nearly all of them by reference count. Collecting every 20,000 rather
    # than 700 (and freezing what is loaded, common.settle_heap) saved about
    # 4% of a copy's CPU.
    gc.set_threshold(20_000, 10, 10)
    # Trees are walked recursively; paths (PATH_MAX 4096) cannot nest deeper.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 12_000))
    signal.signal(signal.SIGINT, _interrupt)
    try:
        code = cli.main(args=args, prog_name="reprieve", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt, Interrupted):
        _fail("interrupted; the vault is consistent, rerun to finish", 130)
    except click.MissingParameter as exc:
        _debug(debug)
        if exc.param is not None and exc.param.name == "vault_location":
            _fail("no vault given; pass --vault LOCATION or set REPRIEVE_VAULT", 2)
        _fail(exc.format_message(), 2)
    except click.ClickException as exc:
        _debug(debug)
        _fail(exc.format_message(), 2)
    except ReprieveError as exc:
        _debug(debug)
        _fail(str(exc), exc.exit_code)
    except MemoryError:
        _fail("out of memory", 1)
    except Exception as exc:
        _debug(debug)
        _fail(f"internal error: {exc!r}; rerun with --debug and report it", 1)
    _exit(code if isinstance(code, int) else 0)


def _exit(code: int) -> NoReturn:
    """End a finished command without tearing the interpreter down.

    Exit handlers run and output is flushed as usual; only the freeing of
    every module and object is skipped, which took 0.1 s after a backup.
    Under a profiler or tracer (cProfile, coverage), which report after the
    program returns, the exit is the usual one.
    """
    if sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        sys.exit(code)  # a closed pipe: let Python report it as usual
    atexit._run_exitfuncs()  # what the interpreter would run on its way out
    os._exit(code)
