"""deploy/: Prometheus configuration and alert rules, the Grafana dashboard and its provisioning, and
their services in docker-compose.yml.

Docker does not run here, so the compose file is checked for structure. Every metric and label the
rules and the dashboard query must exist in a real scrape of the API and the worker (tests.test_metrics's
busy desk). promtool (from Debian's `prometheus` package, put in .venv/bin by `make test`) checks the
configuration, the rules, the dashboard's PromQL and the rules' unit tests (alerts_test.yml).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.test_metrics import busy_desk

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "meridian.json"
# Prometheus adds these itself: `up` for every target, `job` and `instance` to every series.
SYNTHETIC_METRICS = {"up"}
TARGET_LABELS = {"job", "instance"}
GROUPING = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)"
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless"}
# What Grafana puts in for its variables; any valid value will do for parsing and checking.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$region": ".*"}


def load(path: Path):
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict]:
    return [rule for group in load(PROMETHEUS / "alerts.yml")["groups"] for rule in group["rules"]]


def dashboard_panels() -> list[dict]:
    return [panel for panel in json.loads(DASHBOARD.read_text())["panels"] if panel["type"] != "row"]


def dashboard_queries() -> list[str]:
    queries = []
    for panel in dashboard_panels():
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, stand_in in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, stand_in)
            queries.append(expr)
    return queries


def all_queries() -> list[str]:
    return [rule["expr"] for rule in alert_rules()] + dashboard_queries()


def selectors(expr: str) -> tuple[list[tuple[str, set[str]]], set[str]]:
    """The metrics an expression reads, each with the labels it matches on, and the labels it groups by."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    grouped = {label.strip() for clause in re.findall(GROUPING, expr) for label in clause.split(",")}
    expr = re.sub(GROUPING, " ", expr)
    found = []
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})?\s*(\()?", expr):
        name, matchers, call = m.groups()
        if call or name in KEYWORDS:
            continue  # a function or an aggregation, not a metric
        found.append((name, set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers or ""))))
    return found, grouped - {""}


def series_labels(*expositions: str) -> dict[str, set[str]]:
    """Every series name in these scrapes, with the label names seen on it."""
    names: dict[str, set[str]] = {}
    for text in expositions:
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            series = line.rsplit(" ", 1)[0]
            name = series.split("{", 1)[0]
            names.setdefault(name, set()).update(re.findall(r'(\w+)="', series))
    return names


def test_the_query_reader_finds_metrics_matchers_and_groupings():
    found, grouped = selectors(
        "histogram_quantile(0.95, sum by (le, route) ("
        'rate(meridian_api_request_seconds_bucket{route!="/x"}[5m])))'
        ' / on () group_left sum(up{job="a"}) > 0 and vector(1)'
    )
    assert found == [("meridian_api_request_seconds_bucket", {"route"}), ("up", {"job"})]
    assert grouped == {"le", "route"}


# --- against a real scrape ----------------------------------------------------------------------


async def test_every_metric_and_label_the_rules_and_the_dashboard_use_is_scraped(
    db, skipping_env, dev_env, shared_deps, database_url, closed_port
):
    async with busy_desk(db, skipping_env, dev_env, shared_deps, database_url, closed_port) as desk:
        scraped = series_labels(await desk.api_metrics(), await desk.worker_metrics())

    missing = []
    for expr in all_queries():
        found, grouped = selectors(expr)
        available = set(TARGET_LABELS)
        for name, matched in found:
            if name in SYNTHETIC_METRICS:
                available |= matched
                continue
            if name not in scraped:
                missing.append(f"metric {name} in: {expr}")
                continue
            available |= scraped[name]
            missing += [
                f"label {label} of {name} in: {expr}" for label in matched - scraped[name] - TARGET_LABELS
            ]
        missing += [f"grouping label {label} in: {expr}" for label in grouped - available]
    assert not missing, "\n".join(missing)


# --- Prometheus ---------------------------------------------------------------------------------


def test_prometheus_scrapes_the_api_and_the_worker_and_loads_the_rules():
    config = load(PROMETHEUS / "prometheus.yml")
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    assert targets["meridian-api"] == ["api:8000"]
    assert targets["meridian-worker"] == ["worker:9464"]
    assert config["rule_files"] == ["alerts.yml"]  # beside prometheus.yml, here and in the container


def test_every_alert_says_how_bad_it_is_and_where_its_runbook_is():
    operations = (ROOT / "docs" / "operations.md").read_text()
    headings = {line.lstrip("#").strip().lower() for line in operations.splitlines() if line.startswith("#")}
    rules = alert_rules()
    assert len({r["alert"] for r in rules}) == len(rules)
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]
        page, anchor = rule["annotations"]["runbook"].split("#")
        assert page == "docs/operations.md" and anchor == rule["alert"].lower()
        assert anchor in headings, f"docs/operations.md has no section for {rule['alert']}"


def promtool() -> str:
    """`make test` unpacks promtool from Debian's `prometheus` package into .venv/bin."""
    beside_python = Path(sys.executable).parent / "promtool"
    found = str(beside_python) if beside_python.exists() else shutil.which("promtool")
    assert found, "promtool is missing: run `make test` (or apt-get install prometheus)"
    return found


def run_promtool(*args: str, cwd: Path) -> None:
    done = subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_accepts_the_configuration_and_the_rules():
    run_promtool("check", "config", "prometheus.yml", cwd=PROMETHEUS)
    run_promtool("check", "rules", "alerts.yml", cwd=PROMETHEUS)


def test_the_alerts_fire_and_clear_as_their_unit_tests_expect():
    run_promtool("test", "rules", "alerts_test.yml", cwd=PROMETHEUS)


def test_promtool_parses_every_query_of_the_dashboard(tmp_path):
    rules = [{"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(dashboard_queries())]
    (tmp_path / "dashboard.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})
    )
    run_promtool("check", "rules", "dashboard.yml", cwd=tmp_path)


# --- Grafana ------------------------------------------------------------------------------------


def test_the_dashboard_reads_the_provisioned_data_source_and_lays_out_on_the_grid():
    (datasource,) = load(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "meridian"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    occupied: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
    for panel in dashboard_panels():
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource["uid"] and target["expr"].strip()
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    used = {
        m
        for expr in (t["expr"] for p in dashboard_panels() for t in p["targets"])
        for m in re.findall(r"\$(\w+)", expr)
    }
    assert used - {"__rate_interval"} <= variables


def test_grafana_finds_the_dashboard_where_compose_mounts_it():
    (provider,) = load(GRAFANA / "provisioning" / "dashboards" / "meridian.yml")["providers"]
    mounts = dict(volume.split(":")[:2] for volume in compose()["services"]["grafana"]["volumes"])
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"


# --- docker-compose -----------------------------------------------------------------------------


def compose() -> dict:
    return load(ROOT / "docker-compose.yml")


def test_compose_runs_prometheus_and_grafana_on_the_deploy_files():
    services = compose()["services"]
    named_volumes = set(compose()["volumes"])
    for name in ("prometheus", "grafana"):
        service = services[name]
        assert ":" in service["image"] and not service["image"].endswith(":latest"), "pin the image"
        for volume in service["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in named_volumes, f"{name} uses undeclared volume {source}"
    assert "9090:9090" in services["prometheus"]["ports"]
    assert "3000:3000" in services["grafana"]["ports"]
    # rule_files is relative: alerts.yml must sit beside prometheus.yml in the container.
    mounts = dict(volume.split(":")[:2] for volume in services["prometheus"]["volumes"])
    assert (
        Path(mounts["./deploy/prometheus/prometheus.yml"]).parent
        == Path(mounts["./deploy/prometheus/alerts.yml"]).parent
    )
    assert (
        f"--config.file={mounts['./deploy/prometheus/prometheus.yml']}" in services["prometheus"]["command"]
    )


def test_the_scrape_targets_are_the_compose_services_and_their_ports():
    services = compose()["services"]
    assert services["api"]["command"][-2:] == ["--port", "8000"]
    worker_address = compose()["x-meridian"]["environment"]["MERIDIAN_WORKER_METRICS_ADDRESS"]
    assert worker_address.endswith(":9464")
    (datasource,) = load(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert datasource["url"] == "http://prometheus:9090"
