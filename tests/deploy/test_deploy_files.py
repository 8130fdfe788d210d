"""Offline checks of ``deploy/``: every file parses; Prometheus' own tool accepts the scrape
config and the alert rules (and their unit tests pass); the gateway configs of compose and the
Kubernetes ConfigMap load with the real loader; the manifests agree with those configs (ports,
probe paths, drain time) and with each other (labels, names, secret keys); and the dashboard and
alert rules query only metrics and labels a real gateway exposes.

Docker, compose and Kubernetes are not run: these read the files as those tools would.
"""

from __future__ import annotations

import configparser
import inspect
import json
import pathlib
import re
import shutil
from typing import Any

import pytest
import yaml

from gateway.config.load import ConfigError, parse_text
from gateway.config.schema import Config, Listen
from gateway.limits.limiter import Limiter
from gateway.server import Server
from tests.deploy import tools

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "gateway.json"
YAML_FILES = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
JSON_FILES = sorted(DEPLOY.rglob("*.json"))
FLUSH_SECONDS = inspect.signature(Limiter.stop).parameters["flush_seconds"].default
TOKEN = "0123456789abcdef0123456789abcdef"


def rel(path: pathlib.Path) -> str:
    return str(path.relative_to(ROOT))


def documents(path: pathlib.Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def k8s_objects() -> dict[str, list[dict[str, Any]]]:
    """Every Kubernetes object of ``deploy/k8s`` by kind."""
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in documents(path):
            out.setdefault(doc["kind"], []).append(doc)
    return out


def one(kind: str) -> dict[str, Any]:
    objects = k8s_objects()[kind]
    assert len(objects) == 1, f"expected one {kind}"
    return objects[0]


def gateway_container() -> dict[str, Any]:
    containers = one("Deployment")["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "gateway")


def k8s_env() -> dict[str, str]:
    """The container's environment as the kubelet would set it from the Secret."""
    secrets = {s["metadata"]["name"]: s["stringData"] for s in k8s_objects()["Secret"]}
    env = {}
    for item in gateway_container()["env"]:
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        env[item["name"]] = secrets[ref["name"]][ref["key"]] if ref else item["value"]
    return env


def configmap_config(env: dict[str, str] | None = None) -> Config:
    text = one("ConfigMap")["data"]["gateway.yaml"]
    return parse_text(text, "deploy/k8s/configmap.yaml", env=k8s_env() if env is None else env)


def compose() -> dict[str, Any]:
    [doc] = documents(DEPLOY / "compose.yaml")
    return dict(doc)


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment after compose's interpolation, with a token for required ones."""
    env = {}
    for name, value in service["environment"].items():
        text = str(value)
        env[name] = TOKEN if text.startswith("${" + name + ":?") else text
        if text.startswith("${" + name + ":-"):
            env[name] = text[len(name) + 4 : -1]
    return env


def compose_gateways() -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose()["services"].items()
        if service.get("command", [])[:2] == ["gateway", "run"]
    }


def compose_config() -> Config:
    service = next(iter(compose_gateways().values()))
    text = (DEPLOY / "gateway.compose.yaml").read_text(encoding="utf-8")
    return parse_text(text, "deploy/gateway.compose.yaml", env=compose_env(service))


def seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)?", str(text).strip())
    assert match, f"not a duration: {text!r}"
    return float(match.group(1)) * (60 if match.group(2) == "m" else 1)


# --- every file parses -------------------------------------------------------------------------
def test_deploy_has_its_files() -> None:
    for name in (
        "Dockerfile",
        "compose.yaml",
        "gateway.compose.yaml",
        "README.md",
        "k8s/README.md",
        "prometheus/prometheus.yml",
        "prometheus/alerts.yml",
        "systemd/gateway.service",
    ):
        assert (DEPLOY / name).is_file(), name
    assert DASHBOARD.is_file()


@pytest.mark.parametrize("path", YAML_FILES, ids=rel)
def test_yaml_parses(path: pathlib.Path) -> None:
    assert documents(path), f"{rel(path)} has no YAML document"


@pytest.mark.parametrize("path", JSON_FILES, ids=rel)
def test_json_parses(path: pathlib.Path) -> None:
    assert isinstance(json.loads(path.read_text(encoding="utf-8")), dict)


# --- Prometheus --------------------------------------------------------------------------------
def test_promtool_accepts_the_scrape_config(promtool: str) -> None:
    done = tools.run([promtool, "check", "config", str(PROMETHEUS / "prometheus.yml")])
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_accepts_the_alert_rules(promtool: str) -> None:
    done = tools.run([promtool, "check", "rules", str(PROMETHEUS / "alerts.yml")])
    assert done.returncode == 0, done.stdout + done.stderr


def test_alert_rules_unit_tests_pass(promtool: str) -> None:
    done = tools.run([promtool, "test", "rules", str(PROMETHEUS / "alerts_test.yml")])
    assert done.returncode == 0, done.stdout + done.stderr


def test_prometheus_scrapes_the_compose_gateways_admin_port() -> None:
    [scrape] = [
        job
        for job in documents(PROMETHEUS / "prometheus.yml")[0]["scrape_configs"]
        if job["job_name"] == "gateway"
    ]
    assert scrape.get("metrics_path", "/metrics") == "/metrics"
    targets = {t for group in scrape["static_configs"] for t in group["targets"]}
    port = compose_config().admin.port
    assert targets == {f"{name}:{port}" for name in compose_gateways()}


# --- the gateway configs load with the real loader ---------------------------------------------
def test_configmap_config_loads() -> None:
    config = configmap_config()
    assert config.admin.host == "0.0.0.0" and config.admin.token
    assert not config.store.is_memory, "several pods must share one Redis"
    assert config.mock_worker is None
    assert config.models and all(m.upstreams for m in config.models.values())


def test_configmap_config_demands_its_secrets() -> None:
    with pytest.raises(ConfigError) as caught:
        configmap_config(env={})
    text = "\n".join(caught.value.errors)
    assert "GATEWAY_ADMIN_TOKEN" in text and "REDIS_URL" in text


def test_compose_config_loads() -> None:
    config = compose_config()
    assert config.admin.host == "0.0.0.0" and config.admin.token == TOKEN
    assert config.store.url == "redis://redis:6379/0"
    services = compose()["services"]
    mock = services["mock-worker"]["command"]
    assert mock[:2] == ["gateway", "mock-worker"]
    port = mock[mock.index("--port") + 1]
    assert [u.url for u in config.upstreams.values()] == [f"http://mock-worker:{port}"]
    with pytest.raises(ConfigError, match="GATEWAY_ADMIN_TOKEN"):
        parse_text((DEPLOY / "gateway.compose.yaml").read_text(), "compose", env={})


def test_compose_runs_two_gateways_with_two_workers() -> None:
    gateways = compose_gateways()
    assert len(gateways) == 2
    drain = compose_config().listen.drain_timeout
    for name, service in gateways.items():
        command = service["command"]
        assert command[command.index("--workers") + 1] == "2", name
        assert command[command.index("--config") + 1] == "/etc/gateway/gateway.yaml", name
        assert "./gateway.compose.yaml:/etc/gateway/gateway.yaml:ro" in service["volumes"]
        assert seconds(service["stop_grace_period"]) > drain + FLUSH_SECONDS, name
        assert "/tmp" in service["tmpfs"], "the multiprocess metrics need a writable /tmp"
        assert set(service["depends_on"]) == {"redis", "mock-worker"}
    services = compose()["services"]
    assert "./prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    assert any(v.startswith("./grafana/provisioning:") for v in services["grafana"]["volumes"])


# --- Kubernetes --------------------------------------------------------------------------------
def test_probes_and_ports_match_the_config() -> None:
    config = configmap_config()
    container = gateway_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": config.listen.port, "admin": config.admin.port}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert ports.get(get["port"], get["port"]) == config.admin.port, probe
    startup = container["startupProbe"]["httpGet"]
    assert (startup["path"], ports[startup["port"]]) == ("/healthz", config.admin.port)
    args = container["args"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert args[args.index("--config") + 1] == mount["mountPath"] + "/gateway.yaml"
    assert "subPath" not in mount, "a subPath mount never sees ConfigMap edits"


def test_grace_period_outlasts_the_drain() -> None:
    config = configmap_config()
    spec = one("Deployment")["spec"]["template"]["spec"]
    grace = spec["terminationGracePeriodSeconds"]
    assert grace > config.listen.drain_timeout
    pre_stop = gateway_container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep" and 1 <= float(pre_stop[1]) <= 15
    assert grace > float(pre_stop[1]) + config.listen.drain_timeout + FLUSH_SECONDS


def test_manifests_agree_with_each_other() -> None:
    objects = k8s_objects()
    deployment = one("Deployment")
    assert deployment["spec"]["replicas"] == 2
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    for service in objects["Service"]:
        assert service["spec"]["selector"].items() <= labels.items()
        names = {p["name"] for p in gateway_container()["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= names
    pdb = one("PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert hpa["spec"]["minReplicas"] >= 2 > pdb["spec"]["minAvailable"]
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    config_map = next(v["configMap"]["name"] for v in volumes if "configMap" in v)
    assert config_map == one("ConfigMap")["metadata"]["name"]
    k8s_env()  # every secretKeyRef names a key of the Secret
    resources = gateway_container()["resources"]
    assert resources["requests"]["cpu"] and resources["limits"]["memory"]
    listed = documents(K8S / "kustomization.yaml")[0]["resources"]
    assert sorted(listed) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"
    )


# --- image and unit ----------------------------------------------------------------------------
def test_dockerfile_is_conventional() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.MULTILINE)
    assert re.search(r"^USER (?!root|0\b)\S+", text, re.MULTILINE), "runs as non-root"
    assert re.search(r"^EXPOSE 8080 9090$", text, re.MULTILINE)
    assert 'CMD ["gateway", "run", "--config", "/etc/gateway/gateway.yaml"]' in text
    healthcheck = re.search(r"^HEALTHCHECK .*?(?<!\\)$", text, re.MULTILINE | re.DOTALL)
    assert healthcheck and "urllib.request" in healthcheck.group(0)
    assert "/healthz" in healthcheck.group(0) and "curl" not in healthcheck.group(0)
    assert "pip install" in text
    assert "[tracing]" in text  # OTEL_* variables injected by a cluster turn tracing on


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEPLOY / "systemd" / "gateway.service", encoding="utf-8")
    return parser


def test_systemd_unit_drains_reloads_and_is_hardened() -> None:
    service = unit()["Service"]
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["KillSignal"] == "SIGTERM"
    assert service["Restart"] == "on-failure"
    assert float(service["TimeoutStopSec"]) > Listen().drain_timeout + FLUSH_SECONDS
    assert service.get("DynamicUser") == "yes" or service.get("User") not in (None, "root")
    for setting in ("NoNewPrivileges", "ProtectSystem", "PrivateTmp", "ProtectHome"):
        assert service.get(setting), setting
    assert "gateway run" in service["ExecStart"]


def test_systemd_unit_verifies(tmp_path: pathlib.Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    text = (DEPLOY / "systemd" / "gateway.service").read_text(encoding="utf-8")
    (tmp_path / "gateway.service").write_text(
        text.replace("/opt/gateway/bin/gateway", shutil.which("true") or "/bin/true")
    )
    done = tools.run([analyze, "verify", str(tmp_path / "gateway.service")])
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


# --- the dashboard and the alerts query what the gateway exposes -------------------------------
def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every dashboard query."""
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    out = [
        (panel["title"], target["expr"])
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]
    for variable in board["templating"]["list"]:
        out.append((f"${variable['name']}", variable["query"]["query"]))
    return out


def alert_queries() -> list[tuple[str, str]]:
    rules = documents(PROMETHEUS / "alerts.yml")[0]["groups"]
    return [(rule["alert"], rule["expr"]) for group in rules for rule in group["rules"]]


def test_dashboard_is_provisioned_against_the_provisioned_datasource() -> None:
    [datasource] = documents(DEPLOY / "grafana/provisioning/datasources/prometheus.yaml")[0][
        "datasources"
    ]
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for target in [panel, *panel["targets"]]:
            assert target["datasource"]["uid"] == datasource["uid"], panel["title"]
    [provider] = documents(DEPLOY / "grafana/provisioning/dashboards/gateway.yaml")[0]["providers"]
    mounts = compose()["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: pathlib.Path) -> None:
    """Each query becomes a recording rule, so ``promtool`` parses it as Prometheus would."""
    rules = [
        {"record": f"dashboard:query_{i}", "expr": tools.grafana_to_promql(expr)}
        for i, (_, expr) in enumerate(dashboard_queries())
        if not expr.startswith("label_values(")
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = tools.run([promtool, "check", "rules", str(path)])
    assert done.returncode == 0, done.stdout + done.stderr


async def test_dashboard_and_alerts_query_only_exposed_metrics(busy_gateway: Server) -> None:
    """Metric names and the labels grouped or matched on, against a real scrape of a gateway
    that served traffic of every kind (so every series the queries read has samples)."""
    scraped = tools.exposed(await tools.scrape(busy_gateway.admin_port))
    queries = [("dashboard", *q) for q in dashboard_queries()]
    queries += [("alerts.yml", *q) for q in alert_queries()]
    used: set[str] = set()
    for source, title, expr in queries:
        metrics = tools.promql_metrics(expr)
        assert metrics or expr.startswith("up{"), f"{source} {title}: no gateway metric"
        missing = sorted(m for m in metrics if m not in scraped)
        assert not missing, f"{source} {title}: the gateway exposes no {missing}"
        labels = set().union(*(scraped[m] for m in metrics)) if metrics else set()
        unknown = sorted(tools.promql_labels(expr) - labels)
        assert not unknown, f"{source} {title}: no label {unknown} on {sorted(metrics)}"
        used.update(metrics)
    families = {name for name in scraped if not name.endswith("_created")}
    families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in families}
    shown = {re.sub(r"_(bucket|sum|count)$", "", name) for name in used}
    assert families - shown == set(), "a gateway metric no panel or alert looks at"
