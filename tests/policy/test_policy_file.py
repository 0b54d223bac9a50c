"""Policy files: the example is valid, and every kind of mistake is named with its line.

Each malformed policy gives one line per problem, ``FILE:LINE: where: what``,
exits 2 through the CLI, and leaves the catalog as it was.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ok, run_cli

from reprieve.policy.loader import PolicyError, parse_policy
from reprieve.policy.model import FOREVER

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policy.yaml"

GOOD = """\
version: 1
vaults:
  primary: {url: /srv/vault}
  dr: {url: /srv/dr}
tenants:
  acme: {tier: premium}
resources:
  ledger:
    kind: postgres
    tenant: acme
    data_class: financial
plans:
  fast:
    select: {tenant: acme}
    rules:
      - name: five
        schedule: "*/5 * * * *"
        vault: primary
        retention: 7y
        copies:
          - {vault: dr, retention: 7y}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "p.yaml")
    return caught.value.problems


def test_the_example_policy_is_valid_and_carries_the_seed_tiers() -> None:
    policy = parse_policy(EXAMPLE.read_text(), str(EXAMPLE))

    rpo = {name: tier.rpo.total_seconds() for name, tier in policy.tiers.items()}
    rto = {name: tier.rto.total_seconds() for name, tier in policy.tiers.items()}
    assert rpo == {"premium": 300, "standard": 900, "basic": 3600}
    assert rto == {"premium": 900, "standard": 3600, "basic": 14400}
    assert policy.compliance["audit"].retention == FOREVER
    # Tags select the financial plan; the tier's default plan covers the rest.
    assert policy.plans_for("acme-ledger") == ["financial-records"]
    assert policy.plans_for("acme-uploads") == ["premium"]


def test_defaults_fill_in_tiers_and_compliance_classes_the_file_leaves_out() -> None:
    policy = parse_policy(GOOD)

    assert set(policy.tiers) == {"premium", "standard", "basic"}
    assert policy.compliance["financial"].retention.days == 7 * 365


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "  acme: {tier: premium}",
            "  acme: {tier: premium, colour: red}",
            "p.yaml:6: tenants.acme.colour: unknown key 'colour' (allowed: tier)",
        ),
        (
            "    kind: postgres",
            "    kind: oracle",
            "p.yaml:9: resources.ledger.kind: Input should be 'files'",
        ),
        (
            "        retention: 7y\n",
            "        retention: 7 years\n",
            "p.yaml:19: plans.fast.rules[0].retention: invalid duration '7 years'",
        ),
        (
            '        schedule: "*/5 * * * *"',
            '        schedule: "*/5 * * *"',
            "p.yaml:16: plans.fast.rules[0]: schedule '*/5 * * *':",
        ),
        (
            "        vault: primary\n",
            "        vault: primry\n",
            "p.yaml:18: plans.fast.rules[0].vault: no vault named 'primry'",
        ),
        (
            '        schedule: "*/5 * * * *"',
            '        schedule: "0 * * * *"',
            "p.yaml:17: plans.fast.rules[0].schedule: '0 * * * *' leaves up to 1h between "
            "backups of ledger, slower than tier premium's RPO of 5m",
        ),
        (
            "          - {vault: dr, retention: 7y}",
            "          - {vault: dr, retention: 90d}",
            "p.yaml:21: plans.fast.rules[0].copies[0].retention: keeps ledger for 90d, below "
            "the financial compliance floor of 7y",
        ),
        (
            "    select: {tenant: acme}",
            "    select: {tenant: globex}",
            "p.yaml:8: resources.ledger: no plan protects it",
        ),
        (
            "  acme: {tier: premium}",
            "  acme: {tier: platinum}",
            "p.yaml:6: tenants.acme.tier: no tier named 'platinum'",
        ),
        (
            "  primary: {url: /srv/vault}",
            "  primary: {url: /srv/vault}\n  primary: {url: /x}",
            "p.yaml:4: vaults.primary: key given twice",
        ),
        ("vaults:", "vaults: [", "p.yaml:4: YAML syntax error:"),
        (
            "  primary: {url: /srv/vault}",
            "  primary: {}",
            "p.yaml:3: vaults.primary: missing required key 'url'",
        ),
    ],
    ids=[
        "unknown-key",
        "wrong-enum",
        "bad-duration",
        "bad-cron",
        "missing-vault",
        "slower-than-rpo",
        "below-floor",
        "no-plan",
        "unknown-tier",
        "duplicate-key",
        "bad-yaml",
        "missing-key",
    ],
)
def test_each_mistake_is_one_line_with_its_location(old: str, new: str, expected: str) -> None:
    text = GOOD.replace(old, new, 1)
    assert text != GOOD

    found = problems(text)

    assert any(line.startswith(expected) for line in found), found
    assert all(line.startswith("p.yaml:") and "\n" not in line for line in found)


def test_several_mistakes_are_all_reported_in_file_order() -> None:
    text = GOOD.replace("vault: primary", "vault: nowhere").replace("{vault: dr", "{vault: gone")

    found = problems(text)

    assert found == [
        "p.yaml:18: plans.fast.rules[0].vault: no vault named 'nowhere'",
        "p.yaml:21: plans.fast.rules[0].copies[0].vault: no vault named 'gone'",
    ]


def test_a_malformed_policy_exits_2_and_changes_nothing(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(GOOD)
    bad.write_text(GOOD.replace("retention: 7y\n", "retention: 30d\n"))
    ok("policy", "apply", good)

    result = run_cli("policy", "apply", bad)

    assert result.code == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"reprieve: {bad}:19: plans.fast.rules[0].retention: keeps ledger for 30d, "
        "below the financial compliance floor of 7y"
    ]
    shown = ok("policy", "show", "--json").json()
    assert shown["version"] == 1
    assert shown["source"] == str(good)
    assert run_cli("policy", "validate", bad).code == 2
    assert run_cli("policy", "validate", tmp_path / "missing.yaml").code == 2


def test_a_database_with_continuous_wal_meets_its_rpo_with_hourly_base_backups() -> None:
    hourly = GOOD.replace('schedule: "*/5 * * * *"', 'schedule: "0 * * * *"')
    assert problems(hourly)  # base backups alone: an hour is slower than 5 minutes

    streamed = hourly.replace(
        "    data_class: financial", "    data_class: financial\n    wal_mode: stream"
    )
    assert parse_policy(streamed, "p.yaml").resources["ledger"].wal_mode == "stream"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("    synchronous: true", "synchronous needs wal_mode: stream"),
        ("    wal_mode: archive\n    synchronous: true", "synchronous needs wal_mode: stream"),
        ("    wal_mode: tape", "Input should be 'archive' or 'stream'"),
    ],
)
def test_wal_settings_are_checked(extra: str, expected: str) -> None:
    text = GOOD.replace("    data_class: financial", f"    data_class: financial\n{extra}")
    assert any(expected in line for line in problems(text)), problems(text)
