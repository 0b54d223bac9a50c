"""Every error reprieve raises on purpose, and the exit code each one maps to.

The tree::

    ReprieveError                     exit 1  failure
    ├── StorageError                  exit 1  backend I/O failed (permission, network)
    │   └── DiskFullError             exit 1  no space left on the vault's device
    ├── DatabaseError                 exit 1  a protected database refused or is unreachable
    ├── UsageError                    exit 2  bad arguments or configuration
    │   ├── PolicyError                       a policy file's problems, one line each
    │   └── CronError                         a schedule that cannot be parsed
    ├── DamageError                   exit 3  damaged or tampered vault objects
    │   └── DamageFound               exit 3  `check` found damage (carries the report)
    ├── WrongKeyError                 exit 4  wrong password or key file
    ├── NotFoundError                 exit 5  missing vault, point, or resource
    │   ├── VaultNotFound
    │   └── PointNotFound
    ├── LockedError                   exit 6  the vault is locked by another operation
    ├── RefusedError                  exit 7  refused by retention or immutability
    └── DrillFailed                   exit 8  a drill or runbook ran and did not pass

    Interrupted (a BaseException)     exit 130  Ctrl-C or SIGTERM

Each class carries its exit code and a message template; the CLI's single
top-level handler prints ``str(error)`` as one line on stderr and exits with
``error.exit_code``. Third-party errors (OS errors, decryption failures) are
translated at the boundary into these, raised ``from`` the original.
"""

from __future__ import annotations

from typing import ClassVar


class ReprieveError(Exception):
    """Base of every deliberate reprieve error."""

    exit_code: ClassVar[int] = 1
    template: ClassVar[str] = "{detail}"

    def __init__(self, detail: str = "") -> None:
        self.detail = detail
        super().__init__(self.template.format(detail=detail))


class StorageError(ReprieveError):
    template = "storage error: {detail}"


class DiskFullError(StorageError):
    template = "no space left on device: {detail}; free space or use another vault, then rerun"


class DatabaseError(ReprieveError):
    template = "{detail}"


class UsageError(ReprieveError):
    exit_code = 2
    template = "{detail}"


class DamageError(ReprieveError):
    exit_code = 3
    template = "damaged vault object: {detail}; run `reprieve check --read-data`"


class DamageFound(DamageError):
    template = "{detail}"


class WrongKeyError(ReprieveError):
    exit_code = 4
    template = "{detail}"


class NotFoundError(ReprieveError):
    exit_code = 5
    template = "{detail}"


class VaultNotFound(NotFoundError):
    template = "no vault at {detail}; create one with `reprieve vault init --vault {detail}`"


class PointNotFound(NotFoundError):
    template = "no recovery point {detail} in this vault; see `reprieve points list`"


class LockedError(ReprieveError):
    exit_code = 6
    template = "{detail}"


class RefusedError(ReprieveError):
    exit_code = 7
    template = "{detail}"


class DrillFailed(ReprieveError):
    """A drill or runbook ran to its end and did not pass (or stopped at a failed step)."""

    exit_code = 8
    template = "{detail}"


class Interrupted(BaseException):
    """Ctrl-C (or SIGTERM where a command asks for it), raised in place of
    KeyboardInterrupt.

    click prints a blank line for a KeyboardInterrupt before we can print
    ours; a BaseException of our own passes through click untouched, and,
    like KeyboardInterrupt, is not swallowed by ``except Exception``.
    """
