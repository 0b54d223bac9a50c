"""Immutable points: S3 Object Lock retention, legal holds, governance bypass,
and the same rules on a folder, enforced by reprieve. Real SeaweedFS."""

from __future__ import annotations

import contextlib
import hashlib
import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from conftest import FAST_KDF, PASSWORD, ok, run_cli
from support import digests, one_line, random_file, restored_at

from reprieve.vault.immutability import audit_records
from reprieve.vault.keys import Secret
from reprieve.vault.repository import Vault, backend_for


def bucket_client(env: dict[str, str]) -> Any:
    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])


@pytest.fixture
def locked_bucket(s3_env: dict[str, str], request: pytest.FixtureRequest) -> str:
    """A new bucket with S3 Object Lock enabled (and therefore versioned)."""
    name = "l-" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:20]
    bucket_client(s3_env).create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def init_locked(location: str, mode: str, *bounds: str) -> None:
    ok("vault", "init", "--vault", location, "--lock", mode, *bounds, *FAST_KDF)


def backup(location: str, data: Path, *extra: str) -> dict[str, Any]:
    result = ok("backup", "files", data, "--vault", location, "--resource", "app", "--json", *extra)
    doc: dict[str, Any] = result.json()
    return doc


def retention(client: Any, bucket: str, prefix: str) -> dict[str, datetime]:
    """Retain-until date of every locked object under ``prefix``, by vault name."""
    found: dict[str, datetime] = {}
    listing = client.list_object_versions(Bucket=bucket, Prefix=f"{prefix}/")
    for version in listing.get("Versions", []):
        head = client.head_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])
        if head.get("ObjectLockRetainUntilDate"):
            found[version["Key"].removeprefix(f"{prefix}/")] = head["ObjectLockRetainUntilDate"]
    return found


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def wait_until(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds() + 1.2))


def dataset(root: Path, seed: int, files: int = 6) -> Path:
    rng = random.Random(seed)
    for i in range(files):
        random_file(root / f"f{i}.bin", rng, rng.randint(100_000, 600_000))
    return root


def test_a_bucket_without_object_lock_cannot_hold_locked_points(
    s3_bucket: str, s3_env: dict[str, str], locked_bucket: str
) -> None:
    result = run_cli(
        "vault", "init", "--vault", f"s3://{s3_bucket}/v", "--lock", "compliance", *FAST_KDF
    )
    assert result.code == 2
    assert "has no S3 Object Lock" in one_line(result)

    client = bucket_client(s3_env)
    client.put_object_lock_configuration(
        Bucket=locked_bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}},
        },
    )
    result = run_cli(
        "vault", "init", "--vault", f"s3://{locked_bucket}/v", "--lock", "governance", *FAST_KDF
    )
    assert result.code == 2
    assert "default retention rule" in one_line(result)
    assert "Contents" not in client.list_objects_v2(Bucket=locked_bucket)


def test_retention_covers_every_object_a_point_needs_and_grows_when_packs_are_reused(
    locked_bucket: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    vault = f"s3://{locked_bucket}/prod"
    init_locked(vault, "compliance", "--min-retention", "1m", "--max-retention", "1h")
    data = dataset(tmp_path / "data", 1)
    first = backup(vault, data, "--retain", "2m")
    client = bucket_client(s3_env)
    packs_of_first = {n for n in retention(client, locked_bucket, "prod") if n.startswith("packs/")}
    (data / "new.txt").write_text("one more file\n")
    second = backup(vault, data, "--retain", "10m")  # reuses the first's data pack

    dates = retention(client, locked_bucket, "prod")
    assert dates[f"points/{first['point']}"] == when(first["retain_until"])
    assert dates[f"points/{second['point']}"] == when(second["retain_until"])
    later, earlier = when(second["retain_until"]), when(first["retain_until"])
    packs = {n: d for n, d in dates.items() if n.startswith("packs/")}
    assert all(d >= earlier for d in packs.values())
    # The first point's data pack is needed again: its date moved to the second's.
    assert [n for n in packs_of_first if packs[n] >= later]
    # The first's root folder listing is not: its pack keeps the first's date.
    assert [n for n in packs_of_first if packs[n] < later]
    assert all(d >= later for n, d in packs.items() if n not in packs_of_first)
    needed = [n for n in dates if n.startswith(("index/", "keys/")) or n == "config"]
    assert any(n.startswith("index/") for n in needed)
    for name in needed:
        assert dates[name] >= later, name

    # Compliance: nobody shortens or removes it, not even with a bypass.
    pack = next(iter(packs))
    version = client.list_object_versions(Bucket=locked_bucket, Prefix=f"prod/{pack}")
    version_id = version["Versions"][0]["VersionId"]
    with pytest.raises(ClientError):
        client.put_object_retention(
            Bucket=locked_bucket,
            Key=f"prod/{pack}",
            VersionId=version_id,
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": datetime.now(UTC)},
        )
    with pytest.raises(ClientError):
        client.delete_object(
            Bucket=locked_bucket,
            Key=f"prod/{pack}",
            VersionId=version_id,
            BypassGovernanceRetention=True,
        )
    refused = run_cli("forget", first["point"], "--vault", vault, "--bypass-governance")
    assert refused.code == 7
    assert "compliance" in one_line(refused)

    # Out of bounds, or on a vault that is not locked: one line, exit 2.
    for retain, word in (("30s", "below"), ("2h", "above")):
        result = run_cli(
            "backup", "files", data, "--vault", vault, "--resource", "app", "--retain", retain
        )
        assert result.code == 2
        assert word in one_line(result)
    plain = tmp_path / "plain"
    ok("vault", "init", "--vault", plain, *FAST_KDF)
    result = run_cli(
        "backup", "files", data, "--vault", plain, "--resource", "app", "--retain", "1d"
    )
    assert result.code == 2
    assert "not locked" in one_line(result)

    shown = ok("vault", "show", "--vault", vault, "--json").json()
    assert shown["lock"] == "compliance"
    assert shown["lock_enforced_by"] == "storage"
    assert (shown["min_retention_s"], shown["max_retention_s"]) == (60, 3600)
    assert shown["region"] == "us-east-1"
    assert shown["bytes_by_storage_class"]["STANDARD"] >= shown["sizes"]["packs"]


def test_forget_and_prune_keep_locked_data_until_its_date_then_free_it(
    locked_bucket: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    vault = f"s3://{locked_bucket}/v"
    init_locked(vault, "compliance", "--min-retention", "3s")
    old = dataset(tmp_path / "old", 2)
    new = dataset(tmp_path / "new", 3)
    first = backup(vault, old, "--retain", "6s")
    second = backup(vault, new, "--retain", "10m")

    refused = run_cli("forget", first["point"], "--vault", vault)
    assert refused.code == 7
    assert "retained until" in one_line(refused)
    kept = ok("forget", "--keep-last", "1", "--vault", vault, "--json").json()
    assert kept["resources"][0]["remove"] == []
    reasons = {k["id"]: k["reasons"] for k in kept["resources"][0]["keep"]}
    assert reasons[first["point"]][0].startswith("retained until")

    wait_until(when(first["retain_until"]))
    client = bucket_client(s3_env)
    packs_before = {o["Key"] for o in client.list_objects_v2(Bucket=locked_bucket)["Contents"]}
    done = ok("forget", "--keep-last", "1", "--prune", "--vault", vault, "--json").json()
    assert done["resources"][0]["remove"] == [first["point"]]
    assert done["prune"]["packs_deleted"] >= 1
    assert done["prune"]["packs_locked"] == 0
    after = {o["Key"] for o in client.list_objects_v2(Bucket=locked_bucket)["Contents"]}
    gone = packs_before - after
    assert f"v/points/{first['point']}" in gone
    assert any(k.startswith("v/packs/") for k in gone)
    # Deleting means every version: nothing of the forgotten data is left behind.
    versions = client.list_object_versions(Bucket=locked_bucket).get("Versions", [])
    assert not {v["Key"] for v in versions} & gone

    target = tmp_path / "restore"
    ok("restore", second["point"], "--vault", vault, "--target", target)
    assert digests(restored_at(target, new)) == digests(new)
    ok("check", "--read-data", "--vault", vault)


def test_governance_retention_gives_way_only_to_an_explicit_bypass_with_an_audit_line(
    locked_bucket: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    vault = f"s3://{locked_bucket}/v"
    init_locked(vault, "governance", "--min-retention", "1h")
    kept_data = dataset(tmp_path / "kept", 8)
    other = backup(vault, kept_data)
    data = dataset(tmp_path / "data", 4)
    point = backup(vault, data)  # the vault's minimum
    assert when(point["retain_until"]) > datetime.now(UTC)

    refused = run_cli("forget", point["point"], "--vault", vault)
    assert refused.code == 7
    bypassed = ok("forget", point["point"], "--vault", vault, "--bypass-governance")
    assert "audit: governance retention bypassed" in bypassed.stderr
    assert ok("points", "list", "--vault", vault, "--json").json()[0]["id"] == other["point"]

    # Its packs are still locked: prune keeps them and says until when.
    kept = ok("prune", "--vault", vault, "--json").json()
    assert kept["packs_deleted"] == 0
    assert kept["packs_locked"] >= 1
    assert when(kept["locked_until"]) >= when(point["retain_until"])
    freed = ok("prune", "--vault", vault, "--json", "--bypass-governance").json()
    assert freed["packs_deleted"] >= 1

    # The bypass freed only the forgotten point's data: the other point is
    # still fully locked, so deleting whatever can be deleted does not hurt it.
    client = bucket_client(s3_env)
    listing = client.list_object_versions(Bucket=locked_bucket, Prefix="v/")
    for version in listing.get("Versions", []):
        with contextlib.suppress(ClientError):
            client.delete_object(
                Bucket=locked_bucket, Key=version["Key"], VersionId=version["VersionId"]
            )
    target = tmp_path / "restore"
    ok("restore", other["point"], "--vault", vault, "--target", target)
    assert digests(restored_at(target, kept_data)) == digests(kept_data)
    opened = Vault.open(backend_for(vault), Secret.passphrase(PASSWORD))
    bypasses = [r for r in audit_records(opened) if r["action"] == "bypass-governance"]
    assert len(bypasses) == 2  # one record per bypass


def test_a_legal_hold_blocks_forget_until_released(
    locked_bucket: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    vault = f"s3://{locked_bucket}/v"
    init_locked(vault, "compliance", "--min-retention", "2s")
    point = backup(vault, dataset(tmp_path / "data", 5), "--retain", "3s")["point"]
    ok("points", "hold", point[:12], "--vault", vault, "--reason", "litigation 2026-114")
    listed = ok("points", "list", "--vault", vault, "--json").json()
    assert listed[0]["hold"] == "litigation 2026-114"
    shown = ok("points", "show", point, "--vault", vault, "--json").json()
    assert shown["hold"]["reason"] == "litigation 2026-114"

    wait_until(when(listed[0]["retain_until"]))  # retention is over; the hold is not
    refused = run_cli("forget", point, "--vault", vault)
    assert refused.code == 7
    assert "legal hold: litigation 2026-114" in one_line(refused)
    assert (
        ok("forget", "--keep-last", "0", "--keep-within", "1s", "--vault", vault, "--json").json()[
            "resources"
        ][0]["remove"]
        == []
    )

    client = bucket_client(s3_env)  # S3 itself holds the point too
    key = f"v/points/{point}"
    version = client.list_object_versions(Bucket=locked_bucket, Prefix=key)["Versions"][0]
    assert (
        client.get_object_legal_hold(Bucket=locked_bucket, Key=key, VersionId=version["VersionId"])[
            "LegalHold"
        ]["Status"]
        == "ON"
    )
    with pytest.raises(ClientError):
        client.delete_object(Bucket=locked_bucket, Key=key, VersionId=version["VersionId"])

    ok("points", "release", point, "--vault", vault)
    assert run_cli("points", "release", point, "--vault", vault).code == 5
    ok("forget", point, "--vault", vault, "--prune")
    assert ok("points", "list", "--vault", vault, "--json").json() == []
    assert "Contents" not in client.list_objects_v2(Bucket=locked_bucket, Prefix="v/packs/")


def test_a_locked_folder_vault_enforces_the_same_rules_itself(tmp_path: Path) -> None:
    vault = str(tmp_path / "vault")
    init_locked(vault, "governance", "--min-retention", "1d", "--max-retention", "30d")
    shown = ok("vault", "show", "--vault", vault, "--json").json()
    assert (shown["lock"], shown["lock_enforced_by"]) == ("governance", "reprieve")
    point = backup(vault, dataset(tmp_path / "data", 6), "--retain", "7d")
    assert when(point["retain_until"]) > datetime.now(UTC)

    refused = run_cli("forget", point["point"], "--vault", vault)
    assert refused.code == 7
    too_long = run_cli(
        "backup",
        "files",
        tmp_path / "data",
        "--vault",
        vault,
        "--resource",
        "app",
        "--retain",
        "60d",
    )
    assert too_long.code == 2
    ok("points", "hold", point["point"], "--vault", vault, "--reason", "audit 7")
    held = run_cli("forget", point["point"], "--vault", vault, "--bypass-governance")
    assert held.code == 7  # a bypass never lifts a legal hold
    ok("points", "release", point["point"], "--vault", vault)
    bypassed = ok("forget", point["point"], "--vault", vault, "--bypass-governance", "--prune")
    assert "audit:" in bypassed.stderr
    assert list((tmp_path / "vault" / "audit").iterdir())
    assert ok("points", "list", "--vault", vault, "--json").json() == []


def test_copies_are_locked_in_the_target_with_their_own_retention(
    locked_bucket: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    source = f"s3://{locked_bucket}/east"
    target = f"s3://{locked_bucket}/west"
    init_locked(source, "compliance", "--min-retention", "1m")
    init_locked(target, "governance", "--min-retention", "5m")
    point = backup(source, dataset(tmp_path / "data", 7), "--retain", "2m")
    # The source's 2 minutes are below the target's minimum: raised to 5.
    ok("copy", "--from", source, "--to", target)
    copied = ok("points", "list", "--vault", target, "--json").json()[0]
    # Counted from the copy, not from the source point's time.
    assert 300 <= (when(copied["retain_until"]) - when(point["time"])).total_seconds() <= 330
    west = retention(bucket_client(s3_env), locked_bucket, "west")
    assert west[f"points/{copied['id']}"] == when(copied["retain_until"])
    packs = [d for n, d in west.items() if n.startswith("packs/")]
    assert packs and all(d >= when(copied["retain_until"]) for d in packs)
