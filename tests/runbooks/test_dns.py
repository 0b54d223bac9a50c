"""The zone-file and hosts-file DNS providers: what they read, and what they leave behind."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reprieve.runbooks.dns import DnsError, HostsFile, Route53, ZoneFile, next_serial, parse_zone

ZONE = """\
$ORIGIN example.com.
$TTL 3600
@   IN SOA ns1.example.com. hostmaster.example.com. (
        2024010101 ; serial (YYYYMMDDnn)
        3600 1800 604800 300 )
    IN NS ns1
ns1 IN A 10.0.0.53
orders 300 IN A 10.0.1.15
www     IN CNAME orders
"""


def owners(path: Path, rtype: str) -> dict[str, list[str]]:
    """Every record of ``rtype`` as the zone file means it: owner -> values."""
    found: dict[str, list[str]] = {}
    for r in parse_zone(path.read_text(), "example.com", path):
        if r.rtype == rtype:
            found.setdefault(r.owner, []).append(" ".join(t.text for t in r.rdata))
    return found


@pytest.fixture
def zone(tmp_path: Path) -> Path:
    (tmp_path / "bind").mkdir()
    path = tmp_path / "bind" / "db.example.com"
    path.write_text(ZONE)
    return path


def test_zone_file_replaces_the_record_in_place_and_raises_the_serial(zone: Path) -> None:
    provider = ZoneFile(zone, "example.com.")
    assert provider.current("orders.example.com", "A") == "10.0.1.15"
    assert provider.serial() == 2024010101

    provider.set("orders.example.com", "A", "10.0.2.15", 60)

    text = zone.read_text()
    assert "orders\t60\tIN\tA\t10.0.2.15" in text.splitlines()  # its owner written as before
    assert "10.0.1.15" not in text
    assert provider.current("orders.example.com", "A") == "10.0.2.15"
    today = int(datetime.now(UTC).strftime("%Y%m%d")) * 100
    assert provider.serial() == today
    # Nothing else moved: the other records mean what they meant.
    assert owners(zone, "NS") == {"example.com": ["ns1"]}
    assert owners(zone, "CNAME") == {"www.example.com": ["orders"]}
    assert owners(zone, "A") == {
        "ns1.example.com": ["10.0.0.53"],
        "orders.example.com": ["10.0.2.15"],
    }


def test_zone_file_appends_an_absolute_record_when_there_is_none(zone: Path) -> None:
    provider = ZoneFile(zone, "example.com")
    assert provider.current("api.example.com", "A") is None
    provider.set("api.example.com", "A", "10.0.2.20", 120)
    assert zone.read_text().splitlines()[-1] == "api.example.com.\t120\tIN\tA\t10.0.2.20"
    assert provider.current("api.example.com", "A") == "10.0.2.20"


def test_zone_file_keeps_owners_that_later_lines_inherit(tmp_path: Path) -> None:
    path = tmp_path / "zone"
    path.write_text(
        "$ORIGIN example.com.\n"
        "orders IN A 10.0.1.15\n"
        "       IN A 10.0.1.16\n"
        "api    IN A 10.0.9.9\n"
        "orders IN A 10.0.1.17\n"
        '       IN TXT "keep me"\n'
    )
    ZoneFile(path, None).set("orders.example.com", "A", "10.0.2.15", 60)
    assert owners(path, "A") == {
        "orders.example.com": ["10.0.2.15"],
        "api.example.com": ["10.0.9.9"],
    }
    # The TXT line had no owner of its own: removing the A line above it must not
    # hand it to api.
    assert owners(path, "TXT") == {"orders.example.com": ['"keep me"']}


def test_zone_file_writes_a_cname_target_as_an_absolute_name(zone: Path) -> None:
    provider = ZoneFile(zone, "example.com")
    provider.set("www.example.com", "CNAME", "lb.us-west-2.example.net", 60)
    assert owners(zone, "CNAME") == {"www.example.com": ["lb.us-west-2.example.net."]}
    assert provider.current("www.example.com", "CNAME") == "lb.us-west-2.example.net"


def test_zone_file_refuses_what_it_cannot_do_cleanly(zone: Path, tmp_path: Path) -> None:
    before = zone.read_text()
    provider = ZoneFile(zone, "example.com")
    with pytest.raises(DnsError, match="a CNAME cannot join"):
        provider.set("orders.example.com", "CNAME", "elsewhere.example.net", 60)
    with pytest.raises(DnsError, match="is a CNAME"):
        provider.set("www.example.com", "A", "10.0.2.15", 60)
    with pytest.raises(DnsError, match=r"not in zone example\.com"):
        provider.set("orders.example.org", "A", "10.0.2.15", 60)
    assert zone.read_text() == before

    relative = tmp_path / "relative"
    relative.write_text("orders IN A 10.0.1.15\n")
    with pytest.raises(DnsError, match="no \\$ORIGIN; give the step a zone"):
        ZoneFile(relative, None).current("orders.example.com", "A")
    assert ZoneFile(relative, "example.com").current("orders.example.com", "A") == "10.0.1.15"
    with pytest.raises(DnsError, match="does not exist"):
        ZoneFile(tmp_path / "absent", "example.com").current("orders.example.com", "A")


def test_rewrite_keeps_the_mode_and_leaves_no_temporary_file(zone: Path) -> None:
    zone.chmod(0o640)
    ZoneFile(zone, "example.com").set("orders.example.com", "A", "10.0.2.15", 60)
    assert zone.stat().st_mode & 0o777 == 0o640
    assert sorted(os.listdir(zone.parent)) == [zone.name]


def test_two_steps_editing_one_file_at_once_both_land(zone: Path) -> None:
    provider = ZoneFile(zone, "example.com")
    names = [f"host{i}.example.com" for i in range(8)]
    threads = [
        threading.Thread(target=provider.set, args=(n, "A", f"10.0.3.{i}", 60))
        for i, n in enumerate(names)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [provider.current(n, "A") for n in names] == [f"10.0.3.{i}" for i in range(8)]


def test_serial_becomes_today_when_it_is_a_date_else_goes_up_by_one() -> None:
    day = datetime(2026, 5, 1, tzinfo=UTC)
    assert next_serial(2024010101, day) == 2026050100
    assert next_serial(2026050107, day) == 2026050108  # already today: count on
    assert next_serial(42, day) == 43
    assert next_serial(4294967295, day) == 0  # serial arithmetic wraps (RFC 1982)


def test_hosts_file_moves_the_name_and_keeps_other_names_and_families(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text(
        "127.0.0.1\tlocalhost\n"
        "10.0.1.15\torders.example.com orders  # east\n"
        "::1\tlocalhost orders.example.com\n"
    )
    hosts = HostsFile(path)
    assert hosts.current("orders.example.com", "A") == "10.0.1.15"
    assert hosts.current("ORDERS.example.com.", "AAAA") == "::1"

    hosts.set("orders.example.com", "A", "10.0.2.15", 60)

    assert path.read_text().splitlines() == [
        "127.0.0.1\tlocalhost",
        "10.0.2.15\torders.example.com",
        "10.0.1.15\torders\t# east",
        "::1\tlocalhost orders.example.com",
    ]
    assert hosts.current("orders.example.com", "A") == "10.0.2.15"


def test_hosts_file_appends_a_name_it_does_not_have(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text("127.0.0.1 localhost")  # no newline at the end
    hosts = HostsFile(path)
    assert hosts.current("orders.example.com", "A") is None
    hosts.set("orders.example.com", "A", "10.0.2.15", 60)
    assert path.read_text() == "127.0.0.1 localhost\n10.0.2.15\torders.example.com\n"


def rrsets(*found: dict[str, Any]) -> dict[str, Any]:
    return {"ResourceRecordSets": list(found), "IsTruncated": False, "MaxItems": "1"}


def a_record(name: str, value: str, ttl: int, **extra: Any) -> dict[str, Any]:
    return {"Name": name, "Type": "A", "TTL": ttl, "ResourceRecords": [{"Value": value}], **extra}


def test_route53_sends_what_the_api_model_accepts() -> None:
    """Route 53 cannot run here: botocore's Stubber checks each request against the
    service's published model, and answers as the API documents."""
    import boto3
    from botocore.stub import Stubber

    client = boto3.client(
        "route53", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    asked = {
        "HostedZoneId": "Z0EXAMPLE",
        "StartRecordName": "orders.example.com.",
        "StartRecordType": "A",
        "MaxItems": "1",
    }
    upsert = {
        "HostedZoneId": "Z0EXAMPLE",
        "ChangeBatch": {
            "Comment": "reprieve runbook",
            "Changes": [
                {
                    "Action": "UPSERT",
                    "ResourceRecordSet": a_record("orders.example.com.", "10.0.2.15", 60),
                }
            ],
        },
    }
    now = datetime.now(UTC)
    pending = {"ChangeInfo": {"Id": "/change/C1", "Status": "PENDING", "SubmittedAt": now}}
    synced = {"ChangeInfo": {"Id": "/change/C1", "Status": "INSYNC", "SubmittedAt": now}}
    provider = Route53("Z0EXAMPLE", client=client)
    with Stubber(client) as stub:
        stub.add_response(
            "list_resource_record_sets",
            rrsets(a_record("orders.example.com.", "10.0.1.15", 300)),
            asked,
        )
        stub.add_response("change_resource_record_sets", pending, upsert)
        stub.add_response("get_change", synced, {"Id": "/change/C1"})
        stub.add_response(
            "list_resource_record_sets",
            rrsets(a_record("orders.example.com.", "10.0.2.15", 60)),
            asked,
        )
        assert provider.current("orders.example.com", "A") == "10.0.1.15"
        provider.set("orders.example.com", "A", "10.0.2.15", 60)
        assert provider.current("orders.example.com", "A") == "10.0.2.15"
        stub.assert_no_pending_responses()

    with Stubber(client) as stub:
        # The listing starts at the name: what comes back may be the next name.
        stub.add_response(
            "list_resource_record_sets",
            rrsets(a_record("payments.example.com.", "10.0.7.7", 60)),
            asked,
        )
        weighted = a_record("orders.example.com.", "10.0.1.15", 60, SetIdentifier="e", Weight=1)
        stub.add_response("list_resource_record_sets", rrsets(weighted), asked)
        assert provider.current("orders.example.com", "A") is None
        with pytest.raises(DnsError, match="simple records only"):
            provider.current("orders.example.com", "A")
