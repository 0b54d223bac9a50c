"""`catalog rebuild`: a lost catalog comes back from the vault alone."""

from __future__ import annotations

from pathlib import Path

from conftest import FAST_KDF, ok


def test_a_new_catalog_recovers_points_resources_and_audit_history(tmp_path: Path) -> None:
    vault = tmp_path / "vault"
    data = tmp_path / "data"
    data.mkdir()
    (data / "ledger.csv").write_text("1,10\n")
    ok("vault", "init", "--vault", vault, *FAST_KDF)
    first = ok("backup", "files", data, "--vault", vault, "--resource", "ledger", "--json").json()
    ok("backup", "files", data, "--vault", vault, "--resource", "uploads", "--json")
    ok("points", "hold", first["point"][:12], "--vault", vault, "--reason", "litigation 114")
    old = ok("audit", "list", "--json").json()
    assert [e["action"] for e in old] == ["vault.init", "backup", "backup", "hold"]

    # The primary region's catalog is gone: the DR side starts from nothing.
    elsewhere = {"REPRIEVE_CATALOG_URL": f"sqlite:///{tmp_path / 'dr-catalog.db'}"}
    summary = ok("catalog", "rebuild", "--vault", vault, "--json", env=elsewhere).json()
    assert (summary["points"], summary["resources"]) == (2, ["ledger", "uploads"])
    assert summary["audit_recovered"] == 4
    events = ok("audit", "list", "--json", env=elsewhere).json()
    recovered = ["vault.init", "backup", "backup", "hold"]
    assert [e["action"] for e in events] == [*recovered, "catalog.rebuild"]
    assert [e["details"]["recovered"]["hash"] for e in events[:4]] == [e["hash"] for e in old]
    assert events[3]["details"]["reason"] == "litigation 114"
    ok("audit", "verify", env=elsewhere)

    # Run again: nothing is added twice.
    again = ok("catalog", "rebuild", "--vault", vault, "--json", env=elsewhere).json()
    assert again["audit_recovered"] == 0
    events = ok("audit", "list", "--json", env=elsewhere).json()
    assert [e["action"] for e in events][-2:] == ["catalog.rebuild", "catalog.rebuild"]

    # The rebuilt catalog knows the points: status sees the newest backup.
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"""
version: 1
vaults:
  primary: {{url: "{vault}"}}
tenants:
  acme: {{tier: basic}}
resources:
  ledger: {{kind: files, tenant: acme, paths: ["{data}"]}}
  uploads: {{kind: files, tenant: acme, paths: ["{data}"]}}
plans:
  hourly:
    select: {{tenant: acme}}
    rules:
      - {{name: hourly, schedule: "0 * * * *", vault: primary, retention: 30d}}
"""
    )
    ok("policy", "apply", policy, env=elsewhere)
    rows = ok("status", "--json", env=elsewhere).json()
    assert {r["resource"]: r["state"] for r in rows} == {"ledger": "ok", "uploads": "ok"}
    assert all(r["last_backup"] is not None and r["rpo_s"] < 600 for r in rows)
