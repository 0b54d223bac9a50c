"""The alert rules and the Grafana dashboard stay within the /metrics contract, and the alerts work.

`reprieve server` exports a fixed set of metrics (CONTRACT below); the exporter,
the alerts and the dashboard are written by different people, so a renamed metric would
otherwise only show up as an alert that never fires.

With promtool on PATH (scripts/install-test-tools.sh installs it) the rules are checked
and unit-tested by promtool itself. The structural checks run whether or not it is there.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
ALERTS = Path("deploy/prometheus/alerts.yaml")
ALERT_TESTS = Path("deploy/prometheus/alerts.test.yaml")
DASHBOARD = Path("deploy/grafana/reprieve.json")

# Metric -> its labels, as `reprieve server` exports them.
CONTRACT: dict[str, frozenset[str]] = {
    "reprieve_jobs_total": frozenset({"kind", "status", "tier", "tenant"}),
    "reprieve_job_duration_seconds": frozenset({"kind", "status", "tier", "tenant"}),
    "reprieve_last_success_timestamp_seconds": frozenset({"resource", "tenant", "tier", "kind"}),
    "reprieve_rpo_seconds": frozenset({"resource", "tenant", "tier", "region"}),
    "reprieve_rpo_target_seconds": frozenset({"resource", "tenant", "tier"}),
    "reprieve_rto_target_seconds": frozenset({"resource", "tenant", "tier"}),
    "reprieve_drill_last_timestamp_seconds": frozenset({"resource", "tenant", "tier"}),
    "reprieve_drill_passed": frozenset({"resource", "tenant", "tier"}),
    "reprieve_drill_rto_seconds": frozenset({"resource", "tenant", "tier"}),
    "reprieve_drill_rpo_seconds": frozenset({"resource", "tenant", "tier"}),
    "reprieve_drill_due_timestamp_seconds": frozenset({"resource", "tenant", "tier"}),
    "reprieve_rto_predicted_seconds": frozenset({"resource", "tenant", "tier"}),
    "reprieve_replication_lag_seconds": frozenset({"source", "target", "tier"}),
    "reprieve_replication_lag_target_seconds": frozenset({"source", "target", "tier"}),
    "reprieve_vault_bytes": frozenset({"vault", "storage_class"}),
    "reprieve_up": frozenset(),
}
HISTOGRAMS = frozenset({"reprieve_job_duration_seconds"})
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

# Alert name -> the labels its annotations must name, so a page says what is broken.
REQUIRED_ALERTS: dict[str, frozenset[str]] = {
    "ReprieveBackupFailing": frozenset({"resource", "tenant", "tier"}),
    "ReprieveRPOBreached": frozenset({"resource", "tenant", "tier"}),
    "ReprieveRPOAtRisk": frozenset({"resource", "tenant", "tier"}),
    "ReprieveReplicationLagHigh": frozenset({"source", "target", "tier"}),
    "ReprieveJobDurationTrendingUp": frozenset({"tenant", "tier"}),
    "ReprieveSchedulerDown": frozenset(),
    "ReprieveDrillFailed": frozenset({"resource", "tenant", "tier"}),
    "ReprieveDrillOverdue": frozenset({"resource", "tenant", "tier"}),
    "ReprieveDrillRTONearTarget": frozenset({"resource", "tenant", "tier"}),
    "ReprieveRTOPredictedOverTarget": frozenset({"resource", "tenant", "tier"}),
}
SEVERITIES = frozenset({"critical", "warning"})

PANEL_TITLES = (
    "Backup currency",
    "RPO per tier",
    "Replication lag per vault pair",
    "Job success rate by kind",
    "Storage growth per vault and storage class",
    "DR drills",
)
DATASOURCE_REFS = frozenset({"${datasource}", "$datasource", "${DS_PROMETHEUS}"})

# Grafana's built-in variables, given values promtool accepts; other variables are label
# regexes (tenant, tier) and stand in as `.*`.
GRAFANA_BUILTINS = {"__range": "1d", "__rate_interval": "5m", "__interval": "1m"}


def contract_family(name: str) -> str | None:
    """The contract metric a series name belongs to, None when it is not in the contract."""
    if name in CONTRACT:
        return name
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in HISTOGRAMS:
            return name.removesuffix(suffix)
    return None


def is_contract_metric(name: str) -> bool:
    return contract_family(name) is not None


_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_GRAFANA_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_COMMENT = re.compile(r"#[^\n]*")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
# Not after a word character, colon or dot, so `5m`, `1e3` and `0.8` yield nothing.
_IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?")
_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "atan2",
        "inf",
        "nan",
    }
)
_BRACKETS = {")": "(", "]": "[", "}": "{"}


def _without_strings(expr: str) -> str:
    return _COMMENT.sub("", _STRING.sub('""', expr))


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects: not functions, keywords, label names or values."""
    if "__name__" in expr:
        raise ValueError(f"select metrics by name, not through __name__: {expr!r}")
    text = _GRAFANA_VARIABLE.sub("", _without_strings(expr))
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _LABEL_LIST.sub("", text)
    names: set[str] = set()
    for match in _IDENTIFIER.finditer(text):
        word, call = match.group(1), match.group(2)
        if call is None and word.lower() not in _KEYWORDS:
            names.add(word)
    return names


def brackets_balance(expr: str) -> bool:
    stack: list[str] = []
    for char in _without_strings(expr):
        if char in "([{":
            stack.append(char)
        elif char in _BRACKETS and (not stack or stack.pop() != _BRACKETS[char]):
            return False
    return not stack


def grafana_to_promql(expr: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return GRAFANA_BUILTINS.get(name, ".*")

    return _GRAFANA_VARIABLE.sub(value, expr)


_SELECTOR = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)\s*(\{[^{}]*\})?")


def selectors(expr: str) -> Iterator[tuple[str, str]]:
    """(metric, matchers) for every metric an expression selects; matchers may be empty."""
    names = promql_metric_names(expr)
    for match in _SELECTOR.finditer(expr):
        if match.group(1) in names:
            yield match.group(1), match.group(2) or ""


_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<expr>.*),\s*\w+\s*\)\s*$", re.DOTALL)
_QUERY_RESULT = re.compile(r"^\s*query_result\((?P<expr>.*)\)\s*$", re.DOTALL)


def variable_query_expr(query: str) -> str | None:
    """The PromQL inside a Grafana Prometheus variable query, None when it selects none."""
    for pattern in (_LABEL_VALUES, _QUERY_RESULT):
        match = pattern.match(query)
        if match:
            return match.group("expr")
    if re.fullmatch(r"\s*label_values\(\s*\w+\s*\)\s*|\s*label_names\(\s*\)\s*", query):
        return None
    raise ValueError(f"unrecognised variable query: {query!r}")


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (tenant, tier) (rate(reprieve_jobs_total{kind="backup"}[5m]))',
            {"reprieve_jobs_total"},
        ),
        ("absent(reprieve_up) or reprieve_up == 0", {"reprieve_up"}),
        ("a > ignoring (region) group_left (tier) 0.8 * b offset 1d", {"a", "b"}),
        ('time() - node_boot_time_seconds{job=~"a|b(c)"} > 1e3', {"node_boot_time_seconds"}),
        ('max(x{tenant=~"$tenant"}[$__range]) > bool Inf', {"x"}),
    ],
)
def test_metric_name_parser_finds_selectors_not_labels_functions_or_numbers(
    expr: str, names: set[str]
) -> None:
    assert promql_metric_names(expr) == names


def test_contract_allows_histogram_series_but_not_invented_suffixes() -> None:
    assert is_contract_metric("reprieve_job_duration_seconds_bucket")
    assert is_contract_metric("reprieve_jobs_total")
    assert not is_contract_metric("reprieve_jobs_total_count")
    assert not is_contract_metric("reprieve_rpo_target")


@dataclass(frozen=True)
class AlertRule:
    name: str
    expr: str
    for_: str
    labels: dict[str, str]
    annotations: dict[str, str]


def _mapping(value: object, where: str) -> dict[str, object]:
    assert isinstance(value, dict), f"{where}: expected a mapping, got {value!r}"
    return {str(key): item for key, item in value.items()}


def _sequence(value: object, where: str) -> list[object]:
    assert isinstance(value, list), f"{where}: expected a list, got {value!r}"
    return value


def _strings(value: object, where: str) -> dict[str, str]:
    mapping = _mapping(value, where)
    for key, item in mapping.items():
        assert isinstance(item, str), f"{where}.{key}: expected a string, got {item!r}"
    return {key: str(item) for key, item in mapping.items()}


@pytest.fixture(scope="module")
def yaml_module() -> ModuleType:
    module: ModuleType = pytest.importorskip("yaml", reason="PyYAML is needed to read the rules")
    return module


def load_yaml(yaml_module: ModuleType, path: Path) -> dict[str, object]:
    data: object = yaml_module.safe_load((ROOT / path).read_text(encoding="utf-8"))
    return _mapping(data, str(path))


@pytest.fixture(scope="module")
def alert_rules(yaml_module: ModuleType) -> list[AlertRule]:
    rules: list[AlertRule] = []
    for group in _sequence(load_yaml(yaml_module, ALERTS).get("groups"), "groups"):
        group_map = _mapping(group, "group")
        for raw in _sequence(group_map.get("rules"), f"group {group_map.get('name')}"):
            rule = _mapping(raw, "rule")
            name = rule.get("alert")
            assert isinstance(name, str), f"only alerting rules belong here: {rule!r}"
            rules.append(
                AlertRule(
                    name=name,
                    expr=str(rule.get("expr", "")),
                    for_=str(rule.get("for", "")),
                    labels=_strings(rule.get("labels", {}), f"{name}.labels"),
                    annotations=_strings(rule.get("annotations", {}), f"{name}.annotations"),
                )
            )
    return rules


@pytest.fixture(scope="module")
def dashboard() -> dict[str, object]:
    data: object = json.loads((ROOT / DASHBOARD).read_text(encoding="utf-8"))
    return _mapping(data, str(DASHBOARD))


def walk_panels(panels: list[object]) -> Iterator[dict[str, object]]:
    """Every panel, including those folded inside rows."""
    for raw in panels:
        panel = _mapping(raw, "panel")
        yield panel
        yield from walk_panels(_sequence(panel.get("panels", []), "row panels"))


def dashboard_panels(dashboard: dict[str, object]) -> list[dict[str, object]]:
    return list(walk_panels(_sequence(dashboard.get("panels"), "panels")))


def dashboard_variables(dashboard: dict[str, object]) -> dict[str, dict[str, object]]:
    templating = _mapping(dashboard.get("templating"), "templating")
    variables = [_mapping(item, "variable") for item in _sequence(templating.get("list"), "list")]
    return {str(variable.get("name")): variable for variable in variables}


def dashboard_exprs(dashboard: dict[str, object]) -> dict[str, str]:
    """Every PromQL expression in the dashboard, keyed by where it is."""
    exprs: dict[str, str] = {}
    for panel in dashboard_panels(dashboard):
        for raw in _sequence(panel.get("targets", []), "targets"):
            target = _mapping(raw, "target")
            where = f"panel {panel.get('title')!r} target {target.get('refId')}"
            expr = target.get("expr")
            assert isinstance(expr, str) and expr.strip(), f"{where} has no PromQL"
            exprs[where] = expr
    for name, variable in dashboard_variables(dashboard).items():
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        assert isinstance(query, str), f"variable {name}: no query"
        inner = variable_query_expr(query)
        if inner is not None:
            exprs[f"variable {name}"] = inner
    return exprs


def test_alert_expressions_select_only_contract_metrics(alert_rules: list[AlertRule]) -> None:
    unknown = {
        rule.name: sorted(
            name for name in promql_metric_names(rule.expr) if not is_contract_metric(name)
        )
        for rule in alert_rules
    }
    assert {name: names for name, names in unknown.items() if names} == {}


def test_alerts_file_mentions_only_contract_metrics() -> None:
    # Plain text, so it needs no YAML parser and also covers the `query` templates in
    # annotations, which look up target gauges by name.
    text = (ROOT / ALERTS).read_text(encoding="utf-8")
    mentioned = set(re.findall(r"\breprieve_[a-z0-9_]+", text))
    assert mentioned, "the metric scan found nothing: the pattern is broken"
    assert sorted(name for name in mentioned if not is_contract_metric(name)) == []


def test_dashboard_queries_select_only_contract_metrics(dashboard: dict[str, object]) -> None:
    exprs = dashboard_exprs(dashboard)
    unknown = {
        where: sorted(name for name in promql_metric_names(expr) if not is_contract_metric(name))
        for where, expr in exprs.items()
    }
    assert {where: names for where, names in unknown.items() if names} == {}
    assert [where for where, expr in exprs.items() if not promql_metric_names(expr)] == []
    assert [where for where, expr in exprs.items() if not brackets_balance(expr)] == []


def test_dashboard_has_the_readiness_panels_with_unique_ids(dashboard: dict[str, object]) -> None:
    panels = dashboard_panels(dashboard)
    assert dashboard.get("title") == "reprieve — DR readiness"
    titles = [panel.get("title") for panel in panels]
    assert [title for title in PANEL_TITLES if title not in titles] == []
    ids = [panel.get("id") for panel in panels]
    assert all(isinstance(panel_id, int) for panel_id in ids), ids
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    for panel in panels:
        if panel.get("type") == "row":
            continue
        datasource = _mapping(panel.get("datasource"), f"panel {panel.get('title')!r} datasource")
        assert datasource.get("uid") in DATASOURCE_REFS, panel.get("title")


def test_dashboard_filters_every_query_it_can_by_tenant_and_tier(
    dashboard: dict[str, object],
) -> None:
    variables = dashboard_variables(dashboard)
    assert {"tenant", "tier"} <= variables.keys()
    for name in ("tenant", "tier"):
        assert variables[name].get("type") == "query"
        assert variables[name].get("multi") is True
        assert variables[name].get("includeAll") is True
    # The datasource is chosen on the dashboard (or at import), never hard-coded.
    datasources = [v for v in variables.values() if v.get("type") == "datasource"]
    assert datasources or _sequence(dashboard.get("__inputs", []), "__inputs")
    unfiltered: list[str] = []
    for where, expr in dashboard_exprs(dashboard).items():
        if where.startswith("variable "):
            continue
        for metric, matchers in selectors(expr):
            family = contract_family(metric)
            assert family is not None, metric
            for label in sorted({"tenant", "tier"} & CONTRACT[family]):
                if f'{label}=~"${label}"' not in matchers:
                    unfiltered.append(f"{where}: {metric} not filtered by ${label}")
    assert unfiltered == []


def test_required_alerts_have_for_severity_and_labelled_annotations(
    alert_rules: list[AlertRule],
) -> None:
    by_name = {rule.name: rule for rule in alert_rules}
    assert sorted(set(REQUIRED_ALERTS) - by_name.keys()) == []
    assert len(by_name) == len(alert_rules), "alert names must be unique"
    for rule in alert_rules:
        assert re.fullmatch(r"(\d+(ms|s|m|h|d|w|y))+", rule.for_), f"{rule.name}: for={rule.for_!r}"
        assert rule.labels.get("severity") in SEVERITIES, rule.name
        assert rule.expr.strip() and brackets_balance(rule.expr), f"{rule.name}: {rule.expr!r}"
        for key in ("summary", "description"):
            text = rule.annotations.get(key, "")
            assert text.strip(), f"{rule.name} has no {key}"
            assert text.count("{{") == text.count("}}"), f"{rule.name}.{key}: {text!r}"
        named = set(re.findall(r"\$labels\.(\w+)", " ".join(rule.annotations.values())))
        missing = REQUIRED_ALERTS.get(rule.name, frozenset()) - named
        assert not missing, f"{rule.name} annotations do not name {sorted(missing)}"


def test_every_alert_has_a_firing_and_a_quiet_unit_test(
    yaml_module: ModuleType, alert_rules: list[AlertRule]
) -> None:
    suite = load_yaml(yaml_module, ALERT_TESTS)
    assert _sequence(suite.get("rule_files"), "rule_files") == [ALERTS.name]
    fires: set[str] = set()
    quiet: set[str] = set()
    for raw_test in _sequence(suite.get("tests"), "tests"):
        test = _mapping(raw_test, "test")
        for raw_case in _sequence(test.get("alert_rule_test", []), "alert_rule_test"):
            case = _mapping(raw_case, "alert_rule_test case")
            name = str(case.get("alertname"))
            expected = _sequence(case.get("exp_alerts", []), f"{name} exp_alerts")
            (fires if expected else quiet).add(name)
            for raw_alert in expected:
                alert = _mapping(raw_alert, f"{name} exp_alert")
                annotations = _strings(alert.get("exp_annotations"), f"{name} exp_annotations")
                assert {"summary", "description"} <= annotations.keys(), name
    names = {rule.name for rule in alert_rules}
    assert sorted(names - fires) == [], "alerts never shown to fire"
    assert sorted(names - quiet) == [], "alerts never shown to stay quiet"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not on PATH (scripts/install-test-tools.sh installs it)")
    return path


def run_promtool(promtool: str, *args: str | Path) -> None:
    proc = subprocess.run(
        [promtool, *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, (
        f"promtool {' '.join(map(str, args))} exited {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )


def test_promtool_accepts_the_rules(promtool: str) -> None:
    run_promtool(promtool, "check", "rules", ALERTS)


@pytest.mark.slow
def test_promtool_unit_tests_fire_and_stay_quiet_as_written(promtool: str) -> None:
    run_promtool(promtool, "test", "rules", ALERT_TESTS)


def test_dashboard_queries_parse_as_promql(
    promtool: str, dashboard: dict[str, object], tmp_path: Path
) -> None:
    # The dashboard's queries as recording rules: promtool parses each one, with the
    # Grafana variables replaced by values Prometheus would receive.
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for number, expr in enumerate(dashboard_exprs(dashboard).values()):
        lines.append(f"      - record: dashboard:query_{number}")
        lines.append(f"        expr: {json.dumps(grafana_to_promql(expr))}")
    rules = tmp_path / "dashboard-queries.yaml"
    rules.write_text("\n".join(lines) + "\n", encoding="utf-8")
    run_promtool(promtool, "check", "rules", rules)
