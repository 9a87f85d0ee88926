"""grafana/stack: the collector, Prometheus, Jaeger and Grafana wired to each other and to grafana/.

No container runtime runs here, so what can be checked without one is: Prometheus' own
validator on its config, the collector config against the components the contrib
distribution ships, and every name, port and path one file expects of another.
"""

from __future__ import annotations

import posixpath
import subprocess
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from grafana_promql import GRAFANA
from promserver import require_tool

STACK = GRAFANA / "stack"
COMPOSE = STACK / "compose.yaml"
COLLECTOR = STACK / "otel-collector.yaml"
PROMETHEUS = STACK / "prometheus.yml"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "foldermon.yaml"
DASHBOARD_PROVIDER = GRAFANA / "provisioning" / "dashboards" / "foldermon.yaml"

# Config type names of the components in otelcol-contrib, from the distribution's manifest
# (open-telemetry/opentelemetry-collector-releases, distributions/otelcol-contrib/manifest.yaml,
# v0.136.0, the image compose.yaml pins). Module name -> config name, e.g. memorylimiterprocessor
# -> memory_limiter, healthcheckextension -> health_check. A subset: the usual ones.
CONTRIB: dict[str, set[str]] = {
    "receivers": {
        "otlp", "prometheus", "filelog", "hostmetrics", "jaeger", "zipkin", "kafka", "journald",
        "statsd", "syslog", "tcplog", "udplog", "fluentforward", "httpcheck", "docker_stats",
        "kubeletstats", "k8s_cluster", "k8s_events", "postgresql", "mysql", "redis", "nginx", "nop",
    },
    "processors": {
        "batch", "memory_limiter", "attributes", "resource", "resourcedetection", "transform", "filter",
        "metricstransform", "k8sattributes", "probabilistic_sampler", "tail_sampling", "span",
        "groupbyattrs", "cumulativetodelta", "deltatocumulative", "redaction",
    },
    "exporters": {
        "otlp", "otlphttp", "debug", "nop", "prometheus", "prometheusremotewrite", "file", "kafka",
        "loadbalancing", "zipkin", "elasticsearch", "clickhouse",
    },
    "extensions": {
        "health_check", "pprof", "zpages", "basicauth", "bearertokenauth", "oauth2client", "file_storage",
        "headers_setter",
    },
    "connectors": {"forward", "count", "spanmetrics", "servicegraph", "routing", "failover", "sum"},
}  # fmt: skip
SIGNALS = {"traces", "metrics", "logs"}
# Inside its container the collector must listen on every interface; compose limits who reaches it.
ANY_HOST = "0.0.0.0"  # noqa: S104


def _load(path: Any) -> Any:
    return yaml.safe_load(path.read_text())


def _host_port(endpoint: str) -> tuple[str, int]:
    parts = urlsplit(endpoint if "//" in endpoint else f"//{endpoint}")
    assert parts.hostname is not None, endpoint
    assert parts.port is not None, endpoint
    return parts.hostname, parts.port


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Bind mounts of a compose service: host path (relative to the stack) -> container path."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            mounts[source] = target
    return mounts


@pytest.mark.real
def test_stack_prometheus_config_passes_promtool() -> None:
    """promtool check config accepts stack/prometheus.yml, including the alert rules it loads."""
    result = subprocess.run(
        [require_tool("promtool"), "check", "config", str(PROMETHEUS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "foldermon.rules.yml" in result.stdout + result.stderr


def test_collector_names_only_components_of_the_contrib_distribution() -> None:
    """Every receiver, processor, exporter, extension and connector is of a type otelcol-contrib has."""
    config = _load(COLLECTOR)
    for kind, known in CONTRIB.items():
        for name in config.get(kind) or {}:
            assert name.split("/")[0] in known, f"{kind}: {name}"


def test_collector_pipelines_use_defined_components_and_use_them_all() -> None:
    """Each pipeline refers to configured components only, and nothing configured is left unused."""
    config = _load(COLLECTOR)
    service = config["service"]
    assert {p.split("/")[0] for p in service["pipelines"]} <= SIGNALS
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for pipeline in service["pipelines"].values():
        for kind, names in used.items():
            names.update(pipeline.get(kind, []))
    used["extensions"] = set(service.get("extensions", []))
    for kind, names in used.items():
        assert names == set(config.get(kind) or {}), kind


def test_collector_receives_otlp_on_both_protocols_from_any_host() -> None:
    """The OTLP receiver listens on 0.0.0.0 for gRPC (4317) and HTTP (4318), the ports compose publishes."""
    protocols = _load(COLLECTOR)["receivers"]["otlp"]["protocols"]
    assert _host_port(protocols["grpc"]["endpoint"]) == (ANY_HOST, 4317)
    assert _host_port(protocols["http"]["endpoint"]) == (ANY_HOST, 4318)
    published = {p.rsplit(":", 1)[-1] for p in _load(COMPOSE)["services"]["otel-collector"]["ports"]}
    assert published >= {"4317", "4318"}


def test_collector_sends_traces_to_jaeger_and_metrics_where_prometheus_scrapes() -> None:
    """Traces go to the compose service jaeger over OTLP; Prometheus scrapes the collector's exporter port."""
    config = _load(COLLECTOR)
    compose = _load(COMPOSE)["services"]
    pipelines = config["service"]["pipelines"]
    (trace_exporter,) = pipelines["traces"]["exporters"]
    assert trace_exporter.split("/")[0] == "otlp"
    assert _host_port(config["exporters"][trace_exporter]["endpoint"]) == ("jaeger", 4317)
    assert "jaeger" in compose
    assert pipelines["metrics"]["exporters"] == ["prometheus"]
    _, port = _host_port(config["exporters"]["prometheus"]["endpoint"])
    jobs = {j["job_name"]: j for j in _load(PROMETHEUS)["scrape_configs"]}
    collector_job = jobs["otel-collector"]
    assert collector_job["static_configs"][0]["targets"] == [f"otel-collector:{port}"]
    # Without honor_labels Prometheus would overwrite the agents' job/instance with the collector's.
    assert collector_job["honor_labels"] is True


def test_compose_pins_every_image() -> None:
    """Each service runs a tagged image, never an implicit or explicit latest."""
    for name, service in _load(COMPOSE)["services"].items():
        image = service["image"]
        assert ":" in image, name
        assert not image.endswith(":latest"), name


def test_compose_mounts_files_that_exist() -> None:
    """Every bind mount of the stack names a file or folder of the repository."""
    for name, service in _load(COMPOSE)["services"].items():
        for source in _mounts(service):
            assert (STACK / source).exists(), f"{name}: {source}"


def test_prometheus_finds_the_rules_in_the_container_too() -> None:
    """The rule file path, relative to prometheus.yml, lands on the alerts folder compose mounts."""
    (rule_file,) = _load(PROMETHEUS)["rule_files"]
    assert (PROMETHEUS.parent / rule_file).is_file()
    mounts = _mounts(_load(COMPOSE)["services"]["prometheus"])
    config_in_container = mounts["./prometheus.yml"]
    rules_in_container = posixpath.normpath(posixpath.join(posixpath.dirname(config_in_container), rule_file))
    assert posixpath.dirname(rules_in_container) == mounts["../alerts"]


def test_grafana_loads_provisioning_and_dashboards_from_this_folder() -> None:
    """Grafana mounts grafana/provisioning where it reads provisioning, and the dashboards where the provider looks."""
    mounts = _mounts(_load(COMPOSE)["services"]["grafana"])
    assert mounts["../provisioning"] == "/etc/grafana/provisioning"
    (provider,) = _load(DASHBOARD_PROVIDER)["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == mounts["../dashboards"]


def test_datasources_point_at_the_compose_services() -> None:
    """The provisioned Prometheus and Jaeger URLs are the compose services on their API ports."""
    services = _load(COMPOSE)["services"]
    urls = {d["type"]: d["url"] for d in _load(DATASOURCES)["datasources"]}
    assert _host_port(urls["prometheus"]) == ("prometheus", 9090)
    assert _host_port(urls["jaeger"]) == ("jaeger", 16686)
    assert {"prometheus", "jaeger"} <= set(services)


def test_datasource_scrape_interval_matches_the_stack_prometheus() -> None:
    """Grafana's timeInterval equals Prometheus' scrape interval, so $__rate_interval is computed right."""
    (prometheus,) = [d for d in _load(DATASOURCES)["datasources"] if d["type"] == "prometheus"]
    assert prometheus["jsonData"]["timeInterval"] == _load(PROMETHEUS)["global"]["scrape_interval"]
