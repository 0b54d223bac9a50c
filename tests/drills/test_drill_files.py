"""Drills of a files resource: each scenario restores into a sandbox, verifies
the restored bytes against the manifest, measures RTO and RPO, tears down,
and records what it found, pass or fail."""

from __future__ import annotations

import http.server
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST_KDF, PASSWORD, ok, run_cli

from reprieve.catalog.db import open_catalog
from reprieve.drills import store

RESOURCE = "app-files"

POLICY = """
version: 1
vaults:
  primary: {{url: "{primary}"}}
  dr: {{url: "{dr}"}}
tiers:
  premium: {{rto: 15m, rpo: {rpo}, architecture: active-active, drills: monthly, plan: files}}
tenants:
  acme: {{tier: premium}}
resources:
  {resource}:
    kind: files
    tenant: acme
    paths: ["{data}"]
    verify:
      - {{name: ledger present, command: "test -s {ledger}"}}
plans:
  files:
    rules:
      - {{name: live, continuous: true, vault: primary, retention: 7d,
         copies: [{{vault: dr, retention: 7d}}]}}
"""


def _make_data(root: Path) -> Path:
    data = root / "data"
    (data / "docs").mkdir(parents=True)
    rng = random.Random(7)
    (data / "docs" / "big.bin").write_bytes(rng.randbytes(3_000_000))
    (data / "ledger.txt").write_text("opening balance 100\n" * 500)
    (data / "link").symlink_to("ledger.txt")
    with sqlite3.connect(data / "app.db") as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, amount REAL)")
        conn.executemany("INSERT INTO orders VALUES (?, ?)", [(i, i * 1.5) for i in range(5000)])
    conn.close()
    return data


class Site:
    def __init__(self, tmp_path: Path, rpo: str = "5m") -> None:
        self.root = tmp_path
        self.primary = tmp_path / "primary"
        self.dr = tmp_path / "dr"
        self.sandboxes = tmp_path / "sandboxes"
        self.env = {
            "REPRIEVE_HOME": str(tmp_path / "rhome"),
            "REPRIEVE_DRILL_DIR": str(self.sandboxes),
        }
        self.data = _make_data(tmp_path)
        for vault in (self.primary, self.dr):
            ok("vault", "init", "--vault", vault, *FAST_KDF)
        policy = tmp_path / "policy.yaml"
        policy.write_text(
            POLICY.format(
                primary=self.primary,
                dr=self.dr,
                rpo=rpo,
                resource=RESOURCE,
                data=self.data,
                ledger=self.rel("ledger.txt"),
            )
        )
        self.ok("policy", "apply", policy)

    def rel(self, name: str) -> str:
        """Where a source file lands inside the restored folder."""
        return str(self.data / name).lstrip("/")

    def ok(self, *args: str | Path) -> Any:
        return ok(*args, env=self.env)

    def cli(self, *args: str | Path) -> Any:
        return run_cli(*args, env=self.env)

    def backup(self, vault: Path | None = None) -> str:
        doc = self.ok(
            "backup",
            "files",
            self.data,
            "--vault",
            vault or self.primary,
            "--resource",
            RESOURCE,
            "--json",
        ).json()
        return str(doc["point"])

    def drill(self, *args: str) -> Any:
        return self.cli("drill", "run", "--resource", RESOURCE, "--json", *args)


def _sandboxes(site: Site) -> set[Path]:
    return set(site.sandboxes.glob("reprieve-drill-*"))


def test_files_loss_drill_verifies_every_byte_and_is_recorded(tmp_path: Path) -> None:
    site = Site(tmp_path)
    point = site.backup()

    result = site.drill()

    assert result.code == 0, result.stderr
    doc = result.json()
    assert doc["passed"] is True
    assert doc["scenario"] == "namespace-or-files-loss"
    assert doc["rto_target_s"] == 900 and doc["rpo_target_s"] == 300
    assert 0 < doc["rto_s"] < 900
    (part,) = doc["recovered"]
    assert part["point"] == point and part["vault"] == str(site.primary)
    # The RPO is the age of the newest point when the drill began.
    assert 0 <= doc["rpo_s"] < 60
    checks = {c["name"]: c for c in doc["checks"]}
    digests = checks["content digests"]
    assert digests["passed"] and digests["evidence"]["files"] == 3
    assert digests["evidence"]["links"] == 1
    assert digests["evidence"]["bytes"] == sum(
        p.stat().st_size for p in site.data.rglob("*") if p.is_file() and not p.is_symlink()
    )
    assert checks[f"sqlite integrity: {site.rel('app.db')}"]["passed"]
    assert checks["ledger present"]["passed"]
    assert [s["name"] for s in doc["steps"]] == ["choose point", "restore", "verify"]
    assert "removed" in doc["teardown"]
    assert _sandboxes(site) == set()

    listed = site.ok("drill", "list", "--json").json()
    assert [d["drill"] for d in listed] == [doc["drill"]]
    assert listed[0]["passed"] is True
    shown = site.ok("drill", "show", doc["drill"][:12], "--json").json()
    assert shown == doc
    events = site.ok("audit", "list", "--json").json()
    assert any(e["action"] == "drill" and e["subject"] == RESOURCE for e in events)
    (standing,) = site.ok("status", "--json").json()
    assert standing["drill_passed"] is True and standing["drill_overdue"] is False
    assert abs(standing["drill_rto_s"] - doc["rto_s"]) < 0.06
    assert standing["predicted_rto_s"] is not None
    assert standing["predicted_rto_state"] == "ok"
    (row,) = site.ok("status").stdout.splitlines()[1:]
    assert row.startswith(RESOURCE) and " passed " in row


def test_a_damaged_point_fails_the_drill_and_names_why(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.backup()
    pack = max((site.primary / "packs").rglob("*"), key=lambda p: p.stat().st_size)
    raw = bytearray(pack.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    pack.write_bytes(bytes(raw))

    result = site.drill()

    assert result.code == 8
    doc = result.json()
    assert doc["passed"] is False
    assert "could not be restored intact" in doc["failure"]
    assert doc["steps"][-1]["name"] == "restore" and doc["steps"][-1]["ok"] is False
    assert result.stderr.count("\n") == 1 and "failed" in result.stderr
    recorded = site.ok("drill", "list", "--json").json()
    assert recorded[0]["passed"] is False
    # Nothing was recovered, and status says so: the resource's last drill failed.
    (standing,) = site.ok("status", "--json").json()
    assert standing["drill_passed"] is False and standing["drill_rto_s"] is None


def test_a_failed_check_fails_the_drill(tmp_path: Path) -> None:
    site = Site(tmp_path)
    (site.data / "ledger.txt").write_text("")  # the declared check wants it non-empty
    site.backup()

    result = site.drill()

    assert result.code == 8
    doc = result.json()
    failed = [c for c in doc["checks"] if not c["passed"]]
    assert [c["name"] for c in failed] == ["ledger present"]
    assert doc["reasons"] == ["check ledger present failed: exit 1"]


def test_an_rpo_over_the_tier_target_fails_the_drill(tmp_path: Path) -> None:
    site = Site(tmp_path, rpo="1s")
    site.backup()
    time.sleep(1.5)

    doc = site.drill().json()

    assert doc["passed"] is False and doc["rpo_met"] is False
    assert all(c["passed"] for c in doc["checks"])
    assert doc["rpo_s"] > 1
    assert any(r.startswith("RPO") for r in doc["reasons"])


def test_data_corruption_drill_finds_the_newest_good_point(tmp_path: Path) -> None:
    site = Site(tmp_path)
    good = site.backup()
    time.sleep(1.1)
    db = site.data / "app.db"
    raw = bytearray(db.read_bytes())
    raw[4096 * 3 : 4096 * 4] = os.urandom(4096)  # damage a whole table page
    db.write_bytes(bytes(raw))
    bad = site.backup()

    doc = site.drill("--scenario", "data-corruption").json()

    assert doc["passed"] is True, doc["reasons"]
    assert doc["recovered"][0]["point"] == good
    located = next(c for c in doc["checks"] if c["name"] == "corruption located")
    assert [f["point"] for f in located["evidence"]["failing_points"]] == [bad]
    # The disaster is declared when the damage was first seen: at the bad point.
    bad_time = located["evidence"]["failing_points"][0]["time"]
    assert doc["declared_at"][:19] == bad_time[:19]

    given = site.drill("--at", bad_time).json()
    assert given["recovered"][0]["point"] == good


def test_region_failure_drill_restores_from_the_dr_vault_alone(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.backup()
    site.ok("copy", "--from", site.primary, "--to", site.dr, "--resource", RESOURCE)
    site.primary.rename(tmp_path / "primary-gone")  # the primary region is down

    result = site.drill("--scenario", "region-failure")

    assert result.code == 0, result.stderr
    doc = result.json()
    assert doc["recovered"][0]["vault"] == str(site.dr)
    dr_only = next(c for c in doc["checks"] if c["name"] == "DR vault only")
    assert dr_only["passed"] and dr_only["evidence"]["primary"] == [str(site.primary)]


def test_report_is_self_contained_and_its_digest_is_in_the_audit_trail(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.backup()
    drill_id = site.drill().json()["drill"]
    html = tmp_path / "report.html"

    written = site.ok("drill", "report", drill_id, "--html", html, "--json").json()

    page = html.read_text()
    assert drill_id in page and "PASSED" in page
    report = json.loads(html.with_suffix(".json").read_text())
    assert report["drill"]["drill"] == drill_id
    events = site.ok("audit", "list", "--json").json()
    noted = [e for e in events if e["action"] == "drill-report"]
    assert noted[-1]["details"]["sha256"] == written["sha256"]
    assert noted[-1]["details"]["json_sha256"] == written["json_sha256"]
    site.ok("drill", "report", drill_id, "--verify", html)
    site.ok("drill", "report", drill_id, "--verify", html.with_suffix(".json"))

    html.write_text(page.replace("PASSED", "PASSED!"))
    edited = site.cli("drill", "report", drill_id, "--verify", html)
    assert edited.code == 3 and "it was edited" in edited.stderr

    # The catalog's copy of the drill is held to the digest its audit event chained.
    with sqlite3.connect(tmp_path / "rhome" / "catalog.db") as conn:
        (text,) = conn.execute("SELECT document FROM drills").fetchone()
        conn.execute("UPDATE drills SET document = ?", (text.replace("true", "false", 1),))
    conn.close()
    forged = site.cli("drill", "show", drill_id)
    assert forged.code == 3 and "it was edited" in forged.stderr


def test_a_drill_without_a_policy_needs_only_the_vault_and_tier(tmp_path: Path) -> None:
    vault = tmp_path / "v"
    ok("vault", "init", "--vault", vault, *FAST_KDF)
    data = _make_data(tmp_path)
    ok("backup", "files", data, "--vault", vault, "--resource", "loose")

    doc = ok(
        "drill", "run", "--resource", "loose", "--vault", vault, "--tier", "basic", "--json"
    ).json()

    assert doc["passed"] is True and doc["rto_target_s"] == 240 * 60
    missing = run_cli("drill", "run", "--resource", "loose", "--vault", vault)
    assert missing.code == 2 and "--tier" in missing.stderr


def _wait(check: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_a_killed_drill_is_torn_down(tmp_path: Path, sig: signal.Signals) -> None:
    site = Site(tmp_path)
    policy = (tmp_path / "policy.yaml").read_text()
    (tmp_path / "policy.yaml").write_text(
        policy.replace('command: "test -s', 'command: "sleep 60; test -s')
    )
    site.ok("policy", "apply", tmp_path / "policy.yaml")
    site.backup()
    env = {**os.environ, "REPRIEVE_PASSWORD": PASSWORD, **site.env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "reprieve", "drill", "run", "--resource", RESOURCE],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:

        def in_verify() -> bool:
            return any((box / RESOURCE).is_dir() for box in _sandboxes(site))

        _wait(in_verify, "the drill to restore into its sandbox")
        (sandbox,) = _sandboxes(site)
        time.sleep(0.3)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    _wait(lambda: not sandbox.exists(), "the sandbox to be torn down")
    if sig is not signal.SIGKILL:
        assert proc.returncode == 130
        assert "reprieve: interrupted" in stderr.decode()
        (recorded,) = site.ok("drill", "list", "--json").json()
        assert recorded["passed"] is False
    with open_catalog(f"sqlite:///{tmp_path / 'rhome' / 'catalog.db'}") as catalog:
        rows = store.records(catalog)
    assert len(rows) == (0 if sig is signal.SIGKILL else 1)


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        found = self.path == "/health"
        body = b"ok: ledger reachable" if found else b"no such page"
        self.send_response(200 if found else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_http_checks_pass_on_the_expected_answer_and_fail_on_another(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        site = Site(tmp_path)
        url = f"http://127.0.0.1:{server.server_address[1]}"
        policy = tmp_path / "policy.yaml"
        policy.write_text(
            policy.read_text().replace(
                '      - {name: ledger present, command: "test -s',
                f'      - {{name: app health, http: "{url}/health", body_contains: ledger}}\n'
                f'      - {{name: status page, http: "{url}/status", timeout: 1s}}\n'
                '      - {name: ledger present, command: "test -s',
            )
        )
        site.ok("policy", "apply", policy)
        site.backup()

        result = site.drill()
    finally:
        server.shutdown()
        server.server_close()

    assert result.code == 8
    checks = {c["name"]: c for c in result.json()["checks"]}
    assert checks["app health"]["passed"] and checks["app health"]["evidence"]["status"] == 200
    assert not checks["status page"]["passed"]
    assert checks["status page"]["evidence"]["status"] == 404
    assert checks["ledger present"]["passed"]


def test_a_tenant_drill_recovers_every_resource_as_one_exercise(tmp_path: Path) -> None:
    site = Site(tmp_path)
    policy = tmp_path / "policy.yaml"
    docs = site.data / "docs"
    policy.write_text(
        policy.read_text().replace(
            "plans:\n",
            f'  app-docs: {{kind: files, tenant: acme, paths: ["{docs}"]}}\n'
            "  acme-cluster: {kind: kubernetes, tenant: acme}\nplans:\n",
        )
    )
    site.ok("policy", "apply", policy)
    site.backup()
    site.ok("backup", "files", docs, "--vault", site.primary, "--resource", "app-docs")

    result = site.cli("drill", "run", "--tenant", "acme", "--json")

    assert result.code == 0, result.stdout
    doc = result.json()
    assert doc["subject"] == "tenant:acme" and doc["tenant"] == "acme"
    # The kubernetes resource has no drill yet: the exercise covers the other two.
    assert sorted(r["resource"] for r in doc["recovered"]) == ["app-docs", RESOURCE]
    assert doc["resources"] == {"app-docs": "files", RESOURCE: "files"}
    spans = [r["span_s"] for r in doc["recovered"]]
    # One after the other, inside one RTO (each figure is rounded to the millisecond).
    assert doc["rto_s"] >= sum(spans) - 0.001 * len(spans)
    by_resource = {c["resource"] for c in doc["checks"] if c["name"] == "content digests"}
    assert by_resource == {"app-docs", RESOURCE}
    rows = {r["resource"]: r for r in site.ok("status", "--json").json()}
    assert rows["app-docs"]["drill_passed"] and rows[RESOURCE]["drill_passed"]
    assert "drill_passed" not in rows["acme-cluster"]
    assert [d["subject"] for d in site.ok("drill", "list", "--resource", "app-docs",
                                          "--json").json()] == ["tenant:acme"]  # fmt: skip


def test_a_wrong_password_or_a_missing_vault_exits_with_its_own_code(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.backup()

    wrong = run_cli("drill", "run", "--resource", RESOURCE, password="not it", env=site.env)
    missing = site.cli("drill", "run", "--resource", RESOURCE, "--from-vault", tmp_path / "nope")

    assert wrong.code == 4 and wrong.stderr.splitlines()[-1].startswith("reprieve: wrong password")
    assert missing.code == 5 and "no vault at" in missing.stderr.splitlines()[-1]
    # Both are on record as failed drills: the recovery could not have happened.
    recorded = site.ok("drill", "list", "--json").json()
    assert [d["passed"] for d in recorded] == [False, False]
