"""Runbooks end to end: plan, dry run, run, stop at a failure, resume, and the record.

Every run goes through a real `reprieve` process, against a real vault with a
real backup, a real HTTP server started here, and a real zone file.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import FAST_KDF, PASSWORD, Result, ok

from reprieve.catalog.db import open_catalog
from reprieve.drills.store import records
from reprieve.policy.loader import load_policy
from reprieve.runbooks.dns import ZoneFile
from reprieve.runbooks.loader import load_runbook

EXAMPLES = Path(__file__).parents[2] / "examples" / "runbooks"
# The `runbook` group, run as `reprieve` runs it (main's one-line errors and exit codes).
CLI = (
    "from reprieve.cli.main import cli, main\n"
    "from reprieve.cli.runbook import runbook\n"
    "cli.add_command(runbook)\n"
    "main()\n"
)
ZONE = """\
$ORIGIN example.com.
$TTL 3600
@   IN SOA ns1.example.com. hostmaster.example.com. (
        2024010101 ; serial
        3600 1800 604800 300 )
    IN NS ns1
ns1 IN A 10.0.0.53
orders 300 IN A 10.0.1.15
"""


def runbook_cli(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("REPRIEVE_")}
    full_env["REPRIEVE_PASSWORD"] = PASSWORD
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-c", CLI, "runbook", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        stdin=subprocess.DEVNULL,  # no terminal: approvals need --yes
        timeout=120,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def one_line(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, f"expected one line on stderr, got: {result.stderr!r}"
    return lines[0]


def write_runbook(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def reprieve_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """REPRIEVE_HOME in tmp_path, here and for the runs: the default catalog lives there."""
    home = tmp_path / "reprieve-home"
    monkeypatch.setenv("REPRIEVE_HOME", str(home))
    return {"REPRIEVE_HOME": str(home)}


def recorded(subject: str) -> list[dict[str, Any]]:
    with open_catalog() as catalog:
        return [dict(r.document) for r in records(catalog, subject)]


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server on a free port: /health, and the restored folder's files."""
    root = tmp_path / "restored"

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self) -> None:
            if self.path != "/health":
                super().do_GET()
                return
            body = b"status: ok\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()
    thread.join()


def test_failover_runbook_does_what_its_plan_said(
    tmp_path: Path, web: tuple[str, Path], reprieve_home: dict[str, str]
) -> None:
    base_url, restored = web
    source = tmp_path / "app"
    source.mkdir()
    (source / "index.html").write_text("<p>orders ok</p>\n")
    (source / "data.bin").write_bytes(random.Random(7).randbytes(300_000))
    vault = tmp_path / "west-vault"
    ok("vault", "init", "--vault", vault, *FAST_KDF)
    backup = ok("backup", "files", source, "--vault", vault, "--resource", "app-files", "--json")
    point = backup.json()["point"]
    zone = tmp_path / "db.example.com"
    zone.write_text(ZONE)
    under = source.absolute().relative_to(source.absolute().anchor)
    book = tmp_path / "failover.yaml"
    book.write_text(
        f"""\
name: failover-west
tier: premium
vaults:
  west: {{url: "{vault}", password_env: WEST_PASSWORD}}
steps:
  - name: restore app files
    restore: {{kind: files, resource: app-files, vault: west, target: "{restored}"}}
  - name: check the copy
    command: [test, -f, "{restored / under / "index.html"}"]
  - group: smoke tests
    steps:
      - name: health
        http_check: {{url: "{base_url}/health", body_contains: ok}}
      - name: app page
        http_check: {{url: "{base_url}/{under}/index.html", body_contains: orders ok}}
        retries: 2
        retry_delay: 1s
  - name: switch DNS
    dns:
      provider: zone-file
      zone_file: "{zone}"
      zone: example.com.
      record: orders.example.com
      value: 10.0.2.15
      ttl: 60
"""
    )
    env = {"WEST_PASSWORD": PASSWORD, **reprieve_home}
    names = ["restore app files", "check the copy", "health", "app page", "switch DNS"]

    planned = runbook_cli("plan", book, "--json", env=env).json()
    assert [s["name"] for s in planned["steps"]] == names
    assert planned["problems"] == 0
    assert planned["steps"][0]["details"]["point"] == point
    assert planned["steps"][4]["change"].startswith("10.0.1.15 → 10.0.2.15; SOA serial 2024010101")
    shown = runbook_cli("plan", book, env=env)
    assert shown.code == 0
    assert f"point {point[:12]} from" in shown.stdout
    assert [ln.split()[1] for ln in shown.stdout.splitlines() if ln[:6].strip()[:1].isdigit()] == [
        "restore", "check", "smoke", "health", "app", "switch",
    ]  # fmt: skip

    dry = runbook_cli("run", book, "--json", env=env)
    assert dry.code == 0, dry.stderr
    assert dry.json()["status"] == "dry-run"
    assert not restored.exists()
    assert zone.read_text() == ZONE

    done = runbook_cli("run", book, "--execute", "--json", env=env)
    assert done.code == 0, done.stderr
    doc = done.json()
    assert doc["status"] == "succeeded"
    assert [s["name"] for s in doc["steps"]] == names
    assert all(s["status"] == "done" for s in doc["steps"])
    assert doc["steps"][0]["evidence"]["point"] == point
    assert digests(restored / under) == digests(source)
    provider = ZoneFile(zone, "example.com")
    assert provider.current("orders.example.com", "A") == "10.0.2.15"
    serial = provider.serial()
    assert serial is not None and serial > 2024010101
    dns = doc["steps"][4]
    assert dns["evidence"]["previous"] == "10.0.1.15"
    assert "back to 10.0.1.15" in dns["undo"]

    again = runbook_cli("plan", book, "--json", env=env).json()["steps"]
    assert again[0]["problem"].startswith(f"would be refused: {restored} is not empty")
    assert again[4]["change"] is None and again[4]["now"] == "orders.example.com A is 10.0.2.15"

    [run] = recorded("failover-west")
    assert run["kind"] == "runbook" and run["scenario"] == "failover" and run["passed"]
    assert [s["name"] for s in run["steps"]] == names
    assert run["rto_s"] == pytest.approx(doc["rto_s"], abs=0.01)
    assert run["rto_target_s"] == 900 and run["rpo_target_s"] == 300
    assert [r["point"] for r in run["recovered"]] == [point]
    assert [(c["name"], c["passed"]) for c in run["checks"]] == [
        ("health", True),
        ("app page", True),
    ]
    assert run["drill"] == doc["drill"]


def test_failed_check_stops_the_run_and_says_how_to_resume(
    tmp_path: Path, reprieve_home: dict[str, str]
) -> None:
    marker = tmp_path / "later-step-ran"
    book = write_runbook(
        tmp_path / "book.yaml",
        {
            "name": "stops",
            "steps": [
                {"name": "first", "command": "echo first"},
                {
                    "name": "health",
                    "http_check": {"url": f"http://127.0.0.1:{closed_port()}/health"},
                    "retries": 1,
                    "retry_delay": "1s",
                },
                {"name": "touch marker", "command": ["touch", str(marker)]},
                {"name": "settle", "wait": "1s"},
            ],
        },
    )
    result = runbook_cli("run", book, "--execute", env=reprieve_home)
    assert result.code == 8
    line = one_line(result)
    assert "'health'" in line and "Connection refused" in line
    assert f"resume with: reprieve runbook run {book} --execute --from health" in line
    assert not marker.exists()
    assert "not run: touch marker, settle" in result.stdout
    assert f"resume: reprieve runbook run {book} --execute --from health" in result.stdout

    [run] = recorded("stops")
    assert [(s["name"], s["ok"]) for s in run["steps"]] == [("first", True), ("health", False)]
    [check] = run["checks"]
    assert check["evidence"]["attempts"] == 2 and not check["passed"]
    assert "not run: touch marker, settle" in run["failure"]


def test_command_exiting_3_stops_the_run_and_from_resumes_there(
    tmp_path: Path, reprieve_home: dict[str, str]
) -> None:
    flag = tmp_path / "flag"
    after = tmp_path / "after"
    book = write_runbook(
        tmp_path / "book.yaml",
        {
            "name": "gated",
            "steps": [
                {"name": "count", "command": f"echo x >> {tmp_path / 'count'}"},
                {"name": "gate", "command": f"echo checking; test -f {flag} || exit 3"},
                {"name": "after", "command": ["touch", str(after)]},
            ],
        },
    )
    first = runbook_cli("run", book, "--execute", "--json", env=reprieve_home)
    assert first.code == 8
    assert "'gate': exited with 3: checking" in one_line(first)
    doc = first.json()
    assert [s["status"] for s in doc["steps"]] == ["done", "failed", "not run"]
    assert doc["steps"][1]["evidence"]["exit_code"] == 3
    assert doc["steps"][1]["evidence"]["output"] == ["checking"]
    assert doc["resume"] == f"reprieve runbook run {book} --execute --from gate"
    assert not after.exists()

    flag.touch()
    again = runbook_cli("run", book, "--execute", "--from", "gate", "--json", env=reprieve_home)
    assert again.code == 0, again.stderr
    assert [s["status"] for s in again.json()["steps"]] == ["skipped", "done", "done"]
    assert after.exists()
    assert (tmp_path / "count").read_text() == "x\n"  # the step before --from ran once
    runs = recorded("gated")  # newest first
    assert [len(r["steps"]) for r in runs] == [2, 2]
    # The resumed run's time is not a whole recovery's: it says so.
    assert [r["resumed"] for r in runs] == [True, False]

    unknown = runbook_cli("run", book, "--execute", "--from", "nope", env=reprieve_home)
    assert unknown.code == 2
    assert "no step 'nope'" in one_line(unknown)


def test_group_runs_its_steps_in_parallel(tmp_path: Path, reprieve_home: dict[str, str]) -> None:
    book = write_runbook(
        tmp_path / "book.yaml",
        {
            "name": "parallel",
            "steps": [
                {
                    "group": "both",
                    "steps": [
                        {"name": "wait a second", "wait": "1s"},
                        {"name": "sleep a second", "command": ["sleep", "1"]},
                    ],
                }
            ],
        },
    )
    result = runbook_cli("run", book, "--execute", "--json", env=reprieve_home)
    assert result.code == 0, result.stderr
    [run] = recorded("parallel")
    a, b = run["steps"]
    assert a["duration_s"] >= 1.0 and b["duration_s"] >= 1.0
    assert a["at_s"] < b["at_s"] + b["duration_s"] and b["at_s"] < a["at_s"] + a["duration_s"]


def test_approval_needs_a_terminal_or_yes(tmp_path: Path, reprieve_home: dict[str, str]) -> None:
    book = write_runbook(
        tmp_path / "book.yaml",
        {"name": "asks", "steps": [{"name": "go", "approval": {"prompt": "Switch DNS?"}}]},
    )
    refused = runbook_cli("run", book, "--execute", env=reprieve_home)
    assert refused.code == 8
    assert "no terminal to ask on" in one_line(refused)
    approved = runbook_cli("run", book, "--execute", "--yes", "--json", env=reprieve_home)
    assert approved.code == 0, approved.stderr
    assert approved.json()["steps"][0]["evidence"] == {"approved": True, "by": "--yes"}


def test_step_timeout_kills_the_command(tmp_path: Path, reprieve_home: dict[str, str]) -> None:
    book = write_runbook(
        tmp_path / "book.yaml",
        {"name": "slow", "steps": [{"name": "hang", "command": ["sleep", "60"], "timeout": "1s"}]},
    )
    began = time.monotonic()
    result = runbook_cli("run", book, "--execute", "--json", env=reprieve_home)
    assert result.code == 8
    assert time.monotonic() - began < 20
    assert result.json()["steps"][0]["detail"] == "timed out after 1.0s"


def test_interrupt_stops_the_command_and_says_where_to_resume(
    tmp_path: Path, reprieve_home: dict[str, str]
) -> None:
    pid_file = tmp_path / "pid"
    book = write_runbook(
        tmp_path / "book.yaml",
        {
            "name": "interrupted",
            "steps": [
                {"name": "long", "command": f"echo $$ > {pid_file}; exec sleep 60"},
                {"name": "after", "command": "true"},
            ],
        },
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPRIEVE_")}
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, "runbook", "run", str(book), "--execute", "--json"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, **reprieve_home},
    )
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    child = int(pid_file.read_text())
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 8, err
    assert "interrupted at step 1 'long'" in err
    doc = json.loads(out)
    assert [s["status"] for s in doc["steps"]] == ["failed", "not run"]
    assert doc["resume"] == f"reprieve runbook run {book} --execute --from long"
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # the command went with the run
    [run] = recorded("interrupted")
    assert run["failure"] == "interrupted at 'long'; not run: after"


def test_catalog_fault_warns_and_keeps_the_outcome(tmp_path: Path) -> None:
    book = write_runbook(
        tmp_path / "book.yaml", {"name": "quick", "steps": [{"name": "one", "command": "true"}]}
    )
    env = {"REPRIEVE_CATALOG_URL": f"sqlite:///{tmp_path}/no/such/folder/catalog.db"}
    result = runbook_cli("run", book, "--execute", env=env)
    assert result.code == 0
    assert "runbook quick completed" in result.stdout
    assert one_line(result).startswith("reprieve: warning: the run was not recorded")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("name: x\nsteps:\n  - name: check\n    http_check: {status: 200}\n",
         ":4: steps[0].http_check: missing required key 'url'"),
        ("name: x\nsteps:\n  - name: pause\n    wait: 30\n",
         ":4: steps[0].wait: expected a duration such as 15m, 12h or 35d, not 30"),
        ("name: x\nsteps:\n  - name: dns\n    dnss: {}\n",
         ":4: steps[0].dnss: unknown key 'dnss' (allowed: name, timeout,"),
        ("name: x\nsteps:\n  - name: a\n    command: [true\n",
         ":5: YAML syntax error:"),
    ],
)  # fmt: skip
def test_malformed_runbook_is_one_line_and_exit_2(tmp_path: Path, text: str, problem: str) -> None:
    book = tmp_path / "bad.yaml"
    book.write_text(text)
    result = runbook_cli("plan", book)
    assert result.code == 2
    assert one_line(result).startswith(f"reprieve: {book}{problem}")
    assert result.stdout == ""


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_runbooks_are_valid_for_the_example_policy(path: Path) -> None:
    book = load_runbook(path)
    policy = load_policy(EXAMPLES.parent / "policy.yaml").policy
    urls = {spec.url for spec in policy.vaults.values()}
    steps = [s for item in book.steps for s in getattr(item, "steps", [item])]
    restores = [s.restore for s in steps if s.restore is not None]
    assert restores, "a failover or failback restores something"
    for restore in restores:
        assert restore.resource in policy.resources
        vault = restore.vault
        url = book.vaults[vault].url if isinstance(vault, str) else vault.url
        assert url in urls
