"""The service's executor on real vaults: retention forgets only its rule's old
points (never the newest, never a held one), and copies catch up."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import FAST_KDF, PASSWORD, ok

from reprieve.catalog.db import open_catalog
from reprieve.policy.loader import parse_policy
from reprieve.scheduler.execute import VaultExecutor
from reprieve.scheduler.queue import JobView
from reprieve.vault.keys import Secret
from reprieve.vault.repository import Vault, backend_for

POLICY = """
version: 1
vaults:
  primary: {{url: "{primary}"}}
  dr: {{url: "{dr}"}}
tiers:
  basic: {{rto: 240m, rpo: 60m, architecture: pilot-light, drills: semi-annually, plan: p}}
tenants:
  acme: {{tier: basic}}
resources:
  app: {{kind: files, tenant: acme, paths: ["{data}"]}}
plans:
  p:
    rules:
      - {{name: r, schedule: "0 * * * *", vault: primary, retention: 2s,
         copies: [{{vault: dr, retention: 1d}}]}}
"""


def job(job_id: int, kind: str, vault: str, target: str | None = None) -> JobView:
    now = datetime.now(UTC)
    return JobView(
        id=job_id, kind=kind, plan="p", rule="r", resource="app" if kind != "retention" else None,
        tenant="acme", tier="basic", vault=vault, target=target, scheduled_for=now,
        start_by=now, finish_by=now, state="running", attempts=1, parent_id=None,
        claimed_by="test", started_at=now, finished_at=None, error=None, result=None,
    )  # fmt: skip


def test_retention_forgets_its_rules_old_points_and_copies_catch_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPRIEVE_PASSWORD", PASSWORD)
    primary, dr, data = tmp_path / "primary", tmp_path / "dr", tmp_path / "data"
    data.mkdir()
    ok("vault", "init", "--vault", primary, *FAST_KDF)
    ok("vault", "init", "--vault", dr, *FAST_KDF)
    manual = ok("backup", "files", data, "--vault", primary, "--resource", "app", "--json")
    text = POLICY.format(primary=primary, dr=dr, data=data)
    policy = parse_policy(text, "p.yaml")
    stop = threading.Event()
    with open_catalog(f"sqlite:///{tmp_path / 'c.db'}") as catalog:
        run = VaultExecutor(catalog)
        made = []
        for n in range(3):
            (data / f"f{n}.txt").write_text(f"version {n}\n")
            made.append(run(job(n + 1, "backup", "primary"), policy, stop)["point"])
        ok("points", "hold", made[0][:12], "--vault", primary, "--reason", "case 7")
        # One copy job carries every point the DR vault lacks, the manual one too.
        copied = run(job(9, "copy", "primary", "dr"), policy, stop)
        assert copied["points_copied"] == 4
        time.sleep(2.5)
        result = run(job(10, "retention", "primary"), policy, stop)

    # The rule's points are past 2s: all go but the held one and the newest;
    # the manual point carries no rule tag and is not the rule's to forget.
    assert result["forgotten"] == [made[1]]
    assert [k["point"] for k in result["kept"]] == [made[0]]
    assert "legal hold" in result["kept"][0]["reason"]
    vault = Vault.open(backend_for(str(primary)), Secret.passphrase(PASSWORD))
    left = {p.id for p in vault.points()}
    assert left == {manual.json()["point"], made[0], made[2]}
    restored = tmp_path / "restored"
    ok("restore", made[2][:12], "--vault", primary, "--target", restored)
    got = {p.name: p.read_text() for p in restored.rglob("f*.txt")}
    assert got == {f"f{n}.txt": f"version {n}\n" for n in range(3)}
