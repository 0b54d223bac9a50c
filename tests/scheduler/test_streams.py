"""The server's WAL streaming: a stream-mode database's WAL reaches its rule's
vault continuously, and the rule's copy vault seconds later."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import FAST_KDF, PASSWORD, ok
from pgwork import RESOURCE, protected, wait_until

from reprieve.policy.loader import parse_policy
from reprieve.scheduler import streams
from reprieve.scheduler.execute import VaultKeys
from reprieve.scheduler.streams import StreamSupervisor, stream_specs

POLICY = """
version: 1
vaults:
  primary: {{url: "{primary}"}}
  dr: {{url: "{dr}"}}
tiers:
  premium: {{rto: 15m, rpo: 5m, architecture: warm-standby, drills: monthly, plan: db}}
tenants:
  acme: {{tier: premium}}
resources:
  {resource}: {{kind: postgres, tenant: acme, connection: "{dsn}", wal_mode: stream}}
  files: {{kind: files, tenant: acme, paths: [/srv]}}
plans:
  db:
    rules:
      - {{name: nightly, schedule: "0 1 * * *", vault: dr, retention: 7d}}
      - {{name: wal, continuous: true, vault: primary, retention: 7d,
         copies: [{{vault: dr, retention: 7d}}]}}
"""


def _names(vault: Path) -> set[str]:
    folder = vault / "logs" / RESOURCE
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def test_stream_mode_wal_reaches_the_vault_and_its_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPRIEVE_PASSWORD", PASSWORD)
    monkeypatch.setattr(streams, "PASS_EVERY_S", 0.2)
    monkeypatch.setattr(streams, "COPY_EVERY_S", 0.5)
    dr = tmp_path / "dr"
    ok("vault", "init", "--vault", dr, *FAST_KDF)
    with protected(tmp_path) as p:
        text = POLICY.format(primary=p.vault, dr=dr, resource=RESOURCE, dsn=p.pg.dsn)
        policy = parse_policy(text, "p.yaml")
        (spec,) = stream_specs(policy).values()
        assert (spec.vault, spec.copies) == ("primary", ("dr",))  # the continuous rule

        stopped = threading.Event()
        supervisor = StreamSupervisor(
            lambda: (datetime.now(UTC), policy), VaultKeys().open, stopped, tmp_path / "spool"
        )
        runner = threading.Thread(target=supervisor.run)
        runner.start()
        try:
            wait_until(p.streamer_connected, what="the server's streamer")
            p.sql("CREATE TABLE t (id int)")
            (name,) = p.sql("SELECT pg_walfile_name(pg_switch_wal())")[0]
            wait_until(lambda: name in _names(p.vault), what=f"{name} in the primary vault")
            wait_until(lambda: name in _names(dr), what=f"{name} copied to the DR vault")
            assert (dr / "logs" / RESOURCE / name).read_bytes() != (
                p.vault / "logs" / RESOURCE / name
            ).read_bytes()  # re-encrypted under the DR vault's key
        finally:
            stopped.set()
            runner.join(60)
        assert not runner.is_alive()
        assert not p.streamer_connected()
