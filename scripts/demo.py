"""The quick-start story: two tenants, a disaster, and a verified recovery.

Runs the real `reprieve` command on embedded defaults (a local vault in a
temporary folder) and prints what happened as a table:

1. sample data for two tenants (acme: premium, globex: standard);
2. a first backup of each into one local vault ("east"), then a change and
   an incremental backup that reads only what changed; a copy of every
   point to a second vault ("west", as a second region would hold it);
3. a disaster: acme's folder is deleted, globex's files are encrypted by
   "ransomware" (overwritten with random bytes);
4. the east vault is lost too; restore of the newest points from the copy
   in the west vault, verified byte for byte against what was backed up;
   `check --read-data` over the west vault.

Usage: python scripts/demo.py [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

PASSWORD = "demo-password-change-me"
console = Console(width=None if sys.stdout.isatty() else 110)


def reprieve(*args: str | Path) -> Any:
    env = {**os.environ, "REPRIEVE_PASSWORD": PASSWORD}
    proc = subprocess.run(
        [sys.executable, "-m", "reprieve", *map(str, args), "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        raise SystemExit(f"demo: reprieve {args[0]} failed ({proc.returncode}): {proc.stderr}")
    return json.loads(proc.stdout)


def make_tenant(root: Path, name: str, seed: int) -> None:
    rng = random.Random(seed)
    for i in range(40):
        rows = "\n".join(
            f"{name},{i},{j},{rng.randint(1, 10**6)},{rng.choice(['paid', 'open', 'void'])}"
            for j in range(2000)
        )
        target = root / "ledger" / f"2026-{i % 12 + 1:02d}" / f"orders-{i:03d}.csv"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(rows + "\n")
    media = root / "media"
    media.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        (media / f"scan-{i}.bin").write_bytes(rng.randbytes(2 * 1024 * 1024))
    (root / "config.yaml").write_text(f"tenant: {name}\nreplicas: 3\n")


def digest_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--keep", action="store_true", help="Keep the demo folder.")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="reprieve-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    vault = work / "vault-east"
    west = work / "vault-west"
    tenants = {"acme": ("premium", 1), "globex": ("standard", 2)}
    rows: dict[str, dict[str, Any]] = {}
    try:
        console.rule("[bold]reprieve demo")
        reprieve("vault", "init", "--vault", vault, "--region", "us-east-1")
        console.print(f"vault created at {vault}")
        for name, (tier, seed) in tenants.items():
            data = work / "prod" / name
            make_tenant(data, name, seed)
            first = reprieve(
                "backup", "files", data, "--vault", vault, "--resource", f"{name}-files",
                "--tag", f"tenant={name}", "--tag", f"tier={tier}",
            )  # fmt: skip
            (data / "ledger" / "2026-01" / "orders-000.csv").write_text(f"{name},late,1,2,open\n")
            second = reprieve(
                "backup", "files", data, "--vault", vault, "--resource", f"{name}-files",
                "--tag", f"tenant={name}", "--tag", f"tier={tier}",
            )  # fmt: skip
            rows[name] = {
                "tier": tier,
                "files": second["files"],
                "bytes": second["bytes"],
                "first_s": first["duration_s"],
                "incr_read": second["bytes_read"],
                "point": second["point"],
                "digest": digest_tree(data),
            }
            console.print(
                f"{name}: {second['files']} files backed up; the incremental backup read "
                f"{second['bytes_read']} bytes of {second['bytes']}"
            )

        # The DR vault shares the first one's blob ids (its data key is its own).
        reprieve("vault", "init", "--vault", west, "--region", "us-west-2", "--ids-from", vault)
        copied = reprieve("copy", "--from", vault, "--to", west)
        west_points = {c["source"]: c["destination"] for c in copied["copied"]}
        console.print(
            f"copied {copied['points_copied']} points to the west region "
            f"({copied['bytes_transferred']} bytes sent, replication lag "
            f"{copied['replication_lag_s']:.0f} s)"
        )

        console.rule("[red]disaster")
        shutil.rmtree(work / "prod" / "acme")
        for path in (work / "prod" / "globex").rglob("*.csv"):
            path.write_bytes(os.urandom(path.stat().st_size))
        shutil.rmtree(vault)
        console.print(
            "acme's data deleted; globex's ledger encrypted by ransomware; "
            "the east vault is lost with its region"
        )

        console.rule("[green]recovery")
        for name, row in rows.items():
            target = work / "restore" / name
            started = time.monotonic()
            point = west_points[row["point"]]
            reprieve("restore", point, "--vault", west, "--target", target)
            row["restore_s"] = time.monotonic() - started
            restored = target / (work / "prod" / name).relative_to("/")
            row["verified"] = digest_tree(restored) == row["digest"]
        check = reprieve("check", "--vault", west, "--read-data")
        points = reprieve("points", "list", "--vault", west)

        table = Table(title="reprieve demo: recovery summary")
        for col in ("tenant", "tier", "points", "files", "MiB", "first backup", "incr. read",
                    "restore", "verified"):  # fmt: skip
            table.add_column(col)
        for name, row in rows.items():
            table.add_row(
                name,
                row["tier"],
                str(sum(1 for p in points if p["resource"] == f"{name}-files")),
                str(row["files"]),
                f"{row['bytes'] / 2**20:.1f}",
                f"{row['first_s']:.2f}s",
                f"{row['incr_read']} B",
                f"{row['restore_s']:.2f}s",
                "[green]yes" if row["verified"] else "[red]NO",
            )
        console.print(table)
        verdict = "passed" if check["ok"] else "FAILED"
        console.print(f"check --read-data: {verdict} ({check['blobs_read']} blobs re-hashed)")
        if not (check["ok"] and all(r["verified"] for r in rows.values())):
            raise SystemExit("demo: recovery was not verified")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
