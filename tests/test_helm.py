"""The Helm chart, rendered by Helm's own engine (helm-python-sdk binds Helm's Go SDK) and
checked offline: lint, the Kubernetes schemas of every manifest (kubernetes-validate, at the
oldest and newest Kubernetes the chart claims), what each opt-in toggle adds or removes, that
the ConfigMap is a config the bridge itself accepts, that the chart refuses what the bridge
refuses (values.schema.json generated from the config models, the templates' checks, the
check-config hook run as the cluster would run it), and that the chart's docs hold."""

from __future__ import annotations

import base64
import copy
import itertools
import json
import math
import re
import shlex
import subprocess
import sys
import tomllib
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import annotated_types
import helm_python
import jsonschema  # type: ignore[import-untyped]  # no stubs in the lock
import kubernetes_validate
import promql_parser
import pytest
import yaml
from pydantic import BaseModel

from bridge import chart_schema
from bridge import config as bridge_config
from bridge.errors import ConfigError
from tests.promql_checks import DASHBOARD, exported_metric_names, metric_names, selected_metrics
from tests.status_server import serve_status

ROOT = Path(__file__).resolve().parents[1]
CHART_DIR = ROOT / "helm" / "sentry-alertmanager-bridge"
RELEASE = "prod"
NAMESPACE = "alerting"
FULLNAME = "prod-sentry-alertmanager-bridge"
CHECK = f"{FULLNAME}-check-config"
# The oldest Kubernetes Chart.yaml's kubeVersion admits, and the newest kubernetes-validate has.
KUBE_VERSIONS = ("1.25.0", "1.37.0")
# Custom resources of the Prometheus Operator: no schema in kubernetes-validate.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
SECRET_ENV = {
    "sentryClientSecret": "SENTRY_CLIENT_SECRET",
    "sentryServiceHookSecret": "SENTRY_SERVICE_HOOK_SECRET",
    "sentryLegacyToken": "SENTRY_LEGACY_TOKEN",
    "sentryApiToken": "SENTRY_API_TOKEN",
    "alertmanagerPassword": "ALERTMANAGER_PASSWORD",
    "alertmanagerBearerToken": "ALERTMANAGER_BEARER_TOKEN",
}

# The least a working install sets: the integration's client secret.
WORKING: dict[str, Any] = {"secrets": {"sentryClientSecret": "client-secret-1"}}
DSN = "postgresql://bridge:db-password-1@db.example:5432/bridge"
POSTGRES: dict[str, Any] = {"store": {"backend": "postgres", "postgres": {"dsn": DSN}}}


def merged(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge values the way Helm merges -f files: maps key by key, the rest replaced."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, Mapping) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


@dataclass
class Rendered:
    docs: list[dict[str, Any]]
    notes: str

    def keys(self) -> set[tuple[str, str]]:
        return {(d["kind"], d["metadata"]["name"]) for d in self.docs}

    def one(self, kind: str, name: str = FULLNAME) -> dict[str, Any]:
        [doc] = [d for d in self.docs if d["kind"] == kind and d["metadata"]["name"] == name]
        return doc

    def container(self) -> dict[str, Any]:
        spec = self.one("Deployment")["spec"]["template"]["spec"]
        [container] = spec["containers"]
        return dict(container)

    def pod_spec(self) -> dict[str, Any]:
        return dict(self.one("Deployment")["spec"]["template"]["spec"])

    def bridge_yaml(self) -> str:
        return str(self.one("ConfigMap")["data"]["config.yaml"])

    def secret_env(self) -> dict[str, str]:
        data = self.one("Secret")["data"] or {}
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    def postgres_secret_ref(self) -> dict[str, str] | None:
        """Where the container's BRIDGE_DATABASE_URL comes from, when not from envFrom."""
        for entry in self.container().get("env", []):
            if entry["name"] == "BRIDGE_DATABASE_URL":
                return dict(entry["valueFrom"]["secretKeyRef"])
        return None

    def hook(self) -> tuple[dict[str, Any], str]:
        """The check-config hook: its Job's container and the config text it checks."""
        job = self.one("Job", CHECK)
        [container] = job["spec"]["template"]["spec"]["containers"]
        return dict(container), str(self.one("ConfigMap", CHECK)["data"]["config.yaml"])

    def pod_env(self, existing_secret: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment the bridge process gets: the container's env and the Secret."""
        env = dict(existing_secret) if existing_secret is not None else self.secret_env()
        env |= {e["name"]: e["value"] for e in self.container().get("env", []) if "value" in e}
        return env


@pytest.fixture(scope="module")
def chart() -> Iterator[helm_python.Chart]:
    with helm_python.Chart.load(CHART_DIR) as loaded:
        yield loaded


# No image is published, so every install names one (test_no_image_no_render).
IMAGE: dict[str, Any] = {"image": {"repository": "registry.example.com/sentry-alertmanager-bridge"}}


def render(chart: helm_python.Chart, values: Mapping[str, Any]) -> Rendered:
    out = chart.render(merged(IMAGE, values), name=RELEASE, namespace=NAMESPACE)
    docs: list[dict[str, Any]] = []
    notes = ""
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        docs += [doc for doc in yaml.safe_load_all(text) if doc]
    return Rendered(docs, notes)


# --- scenarios: every toggle, alone and together --------------------------------------------

TOGGLES: dict[str, dict[str, Any]] = {
    "serviceMonitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}},
    # With the optional SentryBridgeNoWebhooks too (off by default), so every alert renders.
    "prometheusRule": {"prometheusRule": {"enabled": True, "noWebhooksMinutes": 360}},
    "podDisruptionBudget": {"podDisruptionBudget": {"enabled": True}},
    "autoscaling": merged(
        POSTGRES, {"autoscaling": {"enabled": True}, "resources": {"requests": {"cpu": "50m"}}}
    ),
    "ingress": {
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "hosts": ["bridge.example.com"],
            "tls": [{"secretName": "bridge-tls", "hosts": ["bridge.example.com"]}],
        }
    },
    "networkPolicy": {
        "networkPolicy": {
            "enabled": True,
            "ingressFrom": [{"namespaceSelector": {"matchLabels": {"name": "ingress-nginx"}}}],
            "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]}],
        }
    },
    "grafanaDashboard": {"grafanaDashboard": {"enabled": True}},
    "postgres": POSTGRES,
    "no-persistence": {"persistence": {"enabled": False}},
}
# Every toggle at once: several replicas, so PostgreSQL and no volume.
ALL_TOGGLES = merged(*TOGGLES.values())

SCENARIOS = [
    pytest.param(WORKING, id="defaults"),
    *(pytest.param(merged(WORKING, v), id=k) for k, v in TOGGLES.items()),
    pytest.param(merged(WORKING, ALL_TOGGLES), id="every-toggle"),
    pytest.param(
        merged(
            WORKING,
            {"persistence": {"storageClassName": "ssd"}},
            TOGGLES["serviceMonitor"],
            TOGGLES["ingress"],
        ),
        id="persistence-with-monitoring-and-ingress",
    ),
    pytest.param(
        merged(
            WORKING,
            POSTGRES,
            {
                "store": {
                    "postgres": {"dsn": "", "existingSecret": "db", "existingSecretKey": "url"}
                }
            },
        ),
        id="postgres-existing-secret",
    ),
    pytest.param({"existingSecret": "my-bridge-secret"}, id="existing-secret"),
    pytest.param(
        merged(WORKING, {"serviceAccount": {"create": False}, "preStopDelaySeconds": 0}),
        id="no-service-account-no-prestop",
    ),
]


@pytest.mark.parametrize("values", SCENARIOS)
def test_lint_is_clean(values: dict[str, Any]) -> None:
    report = helm_python.lint(
        CHART_DIR,
        merged(IMAGE, values),
        strict=True,
        namespace=NAMESPACE,
        kube_version=f"v{KUBE_VERSIONS[0]}",
    )
    assert report["errors"] == []
    # Severity 1 is information ("icon is recommended"); 2 and 3 are warnings and errors.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_lint_with_only_an_image_is_clean() -> None:
    """`helm lint` as a user runs it first, with the image they built: the defaults render
    (and NOTES.txt warns that no Sentry credential is set)."""
    report = helm_python.lint(CHART_DIR, IMAGE, strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_no_image_no_render(chart: helm_python.Chart) -> None:
    """No image is published: without image.repository the chart refuses to render (rather
    than an ImagePullBackOff later) and says how to build and load one."""
    with pytest.raises(helm_python.HelmError, match=r"image\.repository is required") as exc:
        chart.render(WORKING, name=RELEASE, namespace=NAMESPACE)
    assert "kind load docker-image" in str(exc.value)
    assert "docs/install.md" in str(exc.value)


@pytest.mark.parametrize("values", SCENARIOS)
def test_every_manifest_matches_the_kubernetes_schemas(
    chart: helm_python.Chart, values: dict[str, Any]
) -> None:
    rendered = render(chart, values)
    assert rendered.docs
    for doc in rendered.docs:
        assert doc["metadata"]["namespace"] == NAMESPACE, doc["kind"]
        if doc["kind"] in CRD_KINDS:
            continue  # structure asserted in the tests of their own
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def test_the_schema_validation_rejects_what_kubernetes_would() -> None:
    bad = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 8080, "targetPrt": "http"}]},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBE_VERSIONS[0], strict=True)


@pytest.mark.parametrize("values", SCENARIOS)
def test_the_configmap_is_a_config_the_bridge_accepts(
    chart: helm_python.Chart, values: dict[str, Any]
) -> None:
    rendered = render(chart, values)
    existing = {"SENTRY_CLIENT_SECRET": "from-existing"} if values.get("existingSecret") else None
    env = rendered.pod_env(existing)
    if "BRIDGE_DATABASE_URL" not in env and rendered.postgres_secret_ref():
        env["BRIDGE_DATABASE_URL"] = DSN  # what the user's Secret holds
    cfg = bridge_config.parse(yaml.safe_load(rendered.bridge_yaml()), env)
    assert cfg.store.backend == values.get("store", {}).get("backend", "sqlite")
    container = rendered.container()
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert str(cfg.store.data_dir) == mounts["data"]
    assert cfg.server.port == container["ports"][0]["containerPort"]
    assert [s.get_secret_value() for s in cfg.sentry.client_secrets] == [
        existing["SENTRY_CLIENT_SECRET"] if existing else "client-secret-1"
    ]
    # The config file the container is told to read is the ConfigMap's key, where it is mounted.
    assert container["args"] == ["serve", "--config", f"{mounts['config']}/config.yaml"]


def test_check_config_accepts_the_rendered_config(chart: helm_python.Chart, tmp_path: Path) -> None:
    rendered = render(chart, merged(WORKING, {"secrets": {"sentryApiToken": "api-token-1"}}))
    path = tmp_path / "config.yaml"
    path.write_text(rendered.bridge_yaml(), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "check-config", str(path)],
        capture_output=True,
        text=True,
        env=rendered.pod_env() | {"PATH": "/usr/bin:/bin"},
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    assert "http://alertmanager-operated.monitoring.svc:9093" in result.stdout
    assert "client-secret-1" not in result.stdout + result.stderr
    assert "api-token-1" not in result.stdout + result.stderr


def test_without_credentials_notes_warn_and_the_bridge_refuses(chart: helm_python.Chart) -> None:
    rendered = render(chart, {})
    assert "WARNING: no Sentry credential is set" in rendered.notes
    with pytest.raises(ConfigError, match="SENTRY_CLIENT_SECRET"):
        bridge_config.parse(yaml.safe_load(rendered.bridge_yaml()), rendered.pod_env())


@pytest.mark.parametrize(
    "values",
    [
        pytest.param(WORKING, id="client-secret"),
        pytest.param({"secrets": {"sentryLegacyToken": "t"}}, id="legacy-token"),
        pytest.param({"existingSecret": "mine"}, id="existing-secret"),
        pytest.param({"config": {"sentry": {"allow_unauthenticated": True}}}, id="opt-out"),
    ],
)
def test_no_warning_when_webhooks_can_be_authenticated(
    chart: helm_python.Chart, values: dict[str, Any]
) -> None:
    assert "WARNING" not in render(chart, values).notes


def test_the_default_policy_is_the_shipped_one(chart: helm_python.Chart) -> None:
    """The chart's default rules are config.yaml's `classification`, so they cannot drift:
    copy the section into values.yaml's config.classification when the policy changes."""
    shipped = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    assert shipped["classification"]["rules"], "the shipped config has no rules"
    assert chart.values["config"]["classification"] == shipped["classification"]
    rendered = yaml.safe_load(render(chart, WORKING).bridge_yaml())
    assert rendered["classification"] == shipped["classification"]


def test_numbers_survive_the_round_trip(chart: helm_python.Chart) -> None:
    """Helm once wrote large integers as 1e+06, which the bridge would refuse."""
    values = merged(
        WORKING,
        {"config": {"server": {"max_body_bytes": 1048576}, "store": {"max_queued": 1000000}}},
    )
    rendered = render(chart, values)
    cfg = bridge_config.parse(yaml.safe_load(rendered.bridge_yaml()), rendered.pod_env())
    assert cfg.server.max_body_bytes == 1048576
    assert cfg.store.max_queued == 1000000


# --- what each toggle adds or removes ---------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "added", "removed"),
    [
        pytest.param(
            TOGGLES["serviceMonitor"], {("ServiceMonitor", FULLNAME)}, set(), id="serviceMonitor"
        ),
        pytest.param(
            TOGGLES["prometheusRule"], {("PrometheusRule", FULLNAME)}, set(), id="prometheusRule"
        ),
        pytest.param(
            TOGGLES["podDisruptionBudget"],
            {("PodDisruptionBudget", FULLNAME)},
            set(),
            id="podDisruptionBudget",
        ),
        pytest.param(
            TOGGLES["autoscaling"],
            {("HorizontalPodAutoscaler", FULLNAME), ("PodDisruptionBudget", FULLNAME)},
            {("PersistentVolumeClaim", FULLNAME)},
            id="autoscaling-on-postgres",
        ),
        pytest.param(
            POSTGRES,
            {("PodDisruptionBudget", FULLNAME)},
            {("PersistentVolumeClaim", FULLNAME)},
            id="postgres",
        ),
        pytest.param(
            merged(POSTGRES, {"podDisruptionBudget": {"enabled": False}}),
            set(),
            {("PersistentVolumeClaim", FULLNAME)},
            id="postgres-without-pdb",
        ),
        pytest.param(TOGGLES["ingress"], {("Ingress", FULLNAME)}, set(), id="ingress"),
        pytest.param(
            TOGGLES["networkPolicy"], {("NetworkPolicy", FULLNAME)}, set(), id="networkPolicy"
        ),
        pytest.param(
            TOGGLES["grafanaDashboard"],
            {("ConfigMap", f"{FULLNAME}-dashboard")},
            set(),
            id="grafanaDashboard",
        ),
        pytest.param(
            TOGGLES["no-persistence"], set(), {("PersistentVolumeClaim", FULLNAME)}, id="no-volume"
        ),
        pytest.param(
            {"persistence": {"existingClaim": "mine"}},
            set(),
            {("PersistentVolumeClaim", FULLNAME)},
            id="persistence-existing-claim",
        ),
        pytest.param(
            {"existingSecret": "mine"}, set(), {("Secret", FULLNAME)}, id="existingSecret"
        ),
        pytest.param(
            {"serviceAccount": {"create": False}},
            set(),
            {("ServiceAccount", FULLNAME)},
            id="serviceAccount-off",
        ),
    ],
)
def test_each_toggle_adds_or_removes_exactly(
    chart: helm_python.Chart,
    values: dict[str, Any],
    added: set[tuple[str, str]],
    removed: set[tuple[str, str]],
) -> None:
    off = render(chart, WORKING).keys()
    on = render(chart, merged(WORKING, values)).keys()
    assert on - off == added
    assert off - on == removed


def test_defaults_render_the_core_objects_only(chart: helm_python.Chart) -> None:
    assert render(chart, WORKING).keys() == {
        ("ConfigMap", FULLNAME),
        ("Secret", FULLNAME),
        ("ServiceAccount", FULLNAME),
        ("Service", FULLNAME),
        ("Deployment", FULLNAME),
        ("PersistentVolumeClaim", FULLNAME),
        ("Pod", f"{FULLNAME}-test-ready"),
        ("ConfigMap", CHECK),
        ("Job", CHECK),
    }


# --- the pod ---------------------------------------------------------------------------------


def test_hardened_by_default(chart: helm_python.Chart) -> None:
    rendered = render(chart, WORKING)
    pod = rendered.pod_spec()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert rendered.one("ServiceAccount")["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == FULLNAME
    container = rendered.container()
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert "resources" not in container  # `resources: {}` by default, documented in values.yaml
    # With a read-only root, every path the bridge writes is a volume.
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert {"/var/lib/sentry-bridge", "/tmp"} <= set(mounts)
    assert mounts["/etc/sentry-bridge"]["readOnly"] is True


def test_probes_and_ports(chart: helm_python.Chart) -> None:
    rendered = render(chart, merged(WORKING, {"config": {"server": {"port": 9000}}}))
    container = rendered.container()
    assert container["ports"] == [{"name": "http", "containerPort": 9000, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/-/healthy", "port": "http"}
    [port] = rendered.one("Service")["spec"]["ports"]
    assert port == {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}


@pytest.mark.parametrize(
    ("grace_period", "pre_stop", "expected"),
    [
        pytest.param("25s", 5, 35, id="default"),
        pytest.param(40, 5, 50, id="plain-seconds"),
        pytest.param("1m", 0, 65, id="minutes-no-prestop"),
        pytest.param("1.5s", 5, 12, id="fraction-rounds-up"),
        pytest.param("500ms", 5, 11, id="milliseconds"),
    ],
)
def test_the_pods_grace_outlasts_the_bridges_drain(
    chart: helm_python.Chart, grace_period: str | int, pre_stop: int, expected: int
) -> None:
    values = merged(
        WORKING,
        {"config": {"shutdown": {"grace_period": grace_period}}, "preStopDelaySeconds": pre_stop},
    )
    rendered = render(chart, values)
    grace = rendered.pod_spec()["terminationGracePeriodSeconds"]
    assert grace == expected
    # The same duration as the bridge reads it: the drain fits, with a margin to exit.
    cfg = bridge_config.parse(yaml.safe_load(rendered.bridge_yaml()), rendered.pod_env())
    assert grace == math.ceil(cfg.shutdown.grace_period) + pre_stop + 5
    lifecycle = rendered.container().get("lifecycle")
    if pre_stop:
        assert lifecycle == {"preStop": {"exec": {"command": ["sleep", str(pre_stop)]}}}
    else:
        assert lifecycle is None


def test_secret_holds_only_what_is_set(chart: helm_python.Chart) -> None:
    values = {"secrets": {"sentryClientSecret": "a,b", "alertmanagerBearerToken": "tok"}}
    rendered = render(chart, values)
    assert rendered.secret_env() == {
        "SENTRY_CLIENT_SECRET": "a,b",
        "ALERTMANAGER_BEARER_TOKEN": "tok",
    }
    [source] = rendered.container()["envFrom"]
    assert source == {"secretRef": {"name": FULLNAME}}
    cfg = bridge_config.parse(yaml.safe_load(rendered.bridge_yaml()), rendered.pod_env())
    assert [s.get_secret_value() for s in cfg.sentry.client_secrets] == ["a", "b"]
    assert cfg.alertmanager.bearer_token is not None
    assert cfg.alertmanager.bearer_token.get_secret_value() == "tok"
    assert "a,b" not in rendered.bridge_yaml()


def test_every_secret_value_reaches_the_config(chart: helm_python.Chart) -> None:
    """Each `secrets` key becomes the variable the shipped config reads."""
    keys = json.loads((CHART_DIR / "values.schema.json").read_text())["properties"]["secrets"]
    assert set(keys["properties"]) == set(SECRET_ENV)
    text = render(chart, WORKING).bridge_yaml()
    for env in SECRET_ENV.values():
        if env != "ALERTMANAGER_PASSWORD":  # basic_auth needs a username: the user adds it
            assert "${" + env + ":-}" in text, env


def test_existing_secret_replaces_the_charts(chart: helm_python.Chart) -> None:
    rendered = render(chart, {"existingSecret": "my-bridge-secret"})
    assert rendered.container()["envFrom"] == [{"secretRef": {"name": "my-bridge-secret"}}]
    annotations = rendered.one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/config" in annotations
    assert "checksum/secret" not in annotations


def _checksums(rendered: Rendered) -> dict[str, str]:
    annotations = rendered.one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    return {k: v for k, v in annotations.items() if k.startswith("checksum/")}


@pytest.mark.parametrize(
    ("change", "rolls"),
    [
        pytest.param(
            {"config": {"server": {"log_level": "debug"}}}, {"checksum/config"}, id="config"
        ),
        pytest.param(
            {"secrets": {"sentryClientSecret": "rotated"}}, {"checksum/secret"}, id="secret"
        ),
        pytest.param({"podAnnotations": {"a": "b"}}, set(), id="unrelated"),
    ],
)
def test_a_config_or_secret_change_rolls_the_pods(
    chart: helm_python.Chart, change: dict[str, Any], rolls: set[str]
) -> None:
    before = _checksums(render(chart, WORKING))
    after = _checksums(render(chart, merged(WORKING, change)))
    assert set(before) == {"checksum/config", "checksum/secret"}
    assert {k for k in before if before[k] != after[k]} == rolls


def test_sqlite_runs_one_replica_on_a_claim_with_recreate(chart: helm_python.Chart) -> None:
    """The default: the SQLite store is the state, so it lives on a volume a rollout keeps,
    and the old pod lets go of it before the new one starts (ReadWriteOnce, one lock)."""
    rendered = render(chart, merged(WORKING, {"persistence": {"storageClassName": "ssd"}}))
    deployment = rendered.one("Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert "affinity" not in rendered.pod_spec()
    volumes = {v["name"]: v for v in rendered.pod_spec()["volumes"]}
    assert volumes["data"] == {"name": "data", "persistentVolumeClaim": {"claimName": FULLNAME}}
    claim = rendered.one("PersistentVolumeClaim")["spec"]
    assert claim["accessModes"] == ["ReadWriteOnce"]
    assert claim["storageClassName"] == "ssd"
    assert claim["resources"]["requests"]["storage"] == "1Gi"

    existing = render(chart, {"persistence": {"existingClaim": "mine"}})
    volumes = {v["name"]: v for v in existing.pod_spec()["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "mine"}


def test_without_persistence_an_empty_dir_and_rolling_update(chart: helm_python.Chart) -> None:
    rendered = render(chart, merged(WORKING, TOGGLES["no-persistence"]))
    volumes = {v["name"]: v for v in rendered.pod_spec()["volumes"]}
    assert volumes["data"]["emptyDir"] == {"sizeLimit": "1Gi"}
    strategy = rendered.one("Deployment")["spec"]["strategy"]
    assert strategy["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert rendered.one("Deployment")["spec"]["replicas"] == 1


def test_autoscaling_hands_replicas_to_the_hpa(chart: helm_python.Chart) -> None:
    rendered = render(chart, merged(WORKING, TOGGLES["autoscaling"]))
    assert "replicas" not in rendered.one("Deployment")["spec"]
    hpa = rendered.one("HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": FULLNAME,
    }
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 3)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param(
            {"replicaCount": 2},
            "replicaCount > 1 and autoscaling.enabled need store.backend: postgres",
            id="sqlite-with-replicas",
        ),
        pytest.param(
            {"replicaCount": 2, "persistence": {"enabled": False}},
            "replicaCount > 1 and autoscaling.enabled need store.backend: postgres",
            id="sqlite-with-replicas-without-volume",
        ),
        pytest.param(
            {"autoscaling": {"enabled": True}},
            "replicaCount > 1 and autoscaling.enabled need store.backend: postgres",
            id="sqlite-with-autoscaling",
        ),
        pytest.param(
            merged(POSTGRES, {"persistence": {"enabled": True}}),
            "only one pod can use",
            id="postgres-with-a-volume-and-two-replicas",
        ),
        pytest.param(
            merged(POSTGRES, {"persistence": {"enabled": True}, "autoscaling": {"enabled": True}}),
            "only one pod can use",
            id="persistence-with-autoscaling",
        ),
        pytest.param(
            {"store": {"backend": "postgres"}},
            "store.backend: postgres needs the database's URL",
            id="postgres-without-dsn",
        ),
        pytest.param(
            {"config": {"store": {"backend": "postgres"}}},
            "set store.backend and store.postgres.dsn",
            id="backend-in-config",
        ),
        pytest.param(
            merged(POSTGRES, {"config": {"store": {"postgres": {"dsn": DSN}}}}),
            "not config.store.backend or config.store.postgres.dsn",
            id="dsn-in-config",
        ),
        pytest.param({"ingress": {"enabled": True}}, "ingress.hosts", id="ingress-without-hosts"),
    ],
)
def test_combinations_that_cannot_work_fail_to_render(
    chart: helm_python.Chart, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm_python.HelmError, match=re.escape(message)):
        render(chart, merged(WORKING, values))


def test_pdb_takes_one_of_min_or_max(chart: helm_python.Chart) -> None:
    default = render(chart, merged(WORKING, TOGGLES["podDisruptionBudget"]))
    spec = default.one("PodDisruptionBudget")["spec"]
    assert spec["maxUnavailable"] == 1
    assert "minAvailable" not in spec
    assert spec["selector"] == default.one("Deployment")["spec"]["selector"]
    values = {"podDisruptionBudget": {"enabled": True, "minAvailable": "50%"}}
    spec = render(chart, merged(WORKING, values)).one("PodDisruptionBudget")["spec"]
    assert spec["minAvailable"] == "50%"
    assert "maxUnavailable" not in spec
    values = merged(POSTGRES, {"podDisruptionBudget": {"maxUnavailable": "50%"}})
    spec = render(chart, merged(WORKING, values)).one("PodDisruptionBudget")["spec"]
    assert spec["maxUnavailable"] == "50%"
    assert "minAvailable" not in spec


# --- several replicas on PostgreSQL ------------------------------------------------------------


def test_postgres_runs_two_replicas_that_survive_a_drain(chart: helm_python.Chart) -> None:
    """issue 10: with PostgreSQL, 2 replicas, a PDB of minAvailable 1, RollingUpdate and
    anti-affinity by node, the data directory an emptyDir (the state is in the database)."""
    rendered = render(chart, merged(WORKING, POSTGRES))
    spec = rendered.one("Deployment")["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    pdb = rendered.one("PodDisruptionBudget")["spec"]
    assert pdb == {"minAvailable": 1, "selector": spec["selector"]}
    [term] = rendered.pod_spec()["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["podAffinityTerm"] == {
        "topologyKey": "kubernetes.io/hostname",
        "labelSelector": spec["selector"],
    }
    volumes = {v["name"]: v for v in rendered.pod_spec()["volumes"]}
    assert "emptyDir" in volumes["data"]
    assert "The state is in PostgreSQL (store.backend: postgres), shared by 2 replica(s)" in (
        rendered.notes
    )


def test_postgres_dsn_travels_in_the_secret_only(chart: helm_python.Chart) -> None:
    rendered = render(chart, merged(WORKING, POSTGRES))
    assert rendered.secret_env()["BRIDGE_DATABASE_URL"] == DSN
    assert "db-password-1" not in rendered.bridge_yaml()
    data = yaml.safe_load(rendered.bridge_yaml())
    assert data["store"] == {
        "backend": "postgres",
        "postgres": {"dsn": "${BRIDGE_DATABASE_URL}"},
    }
    cfg = bridge_config.parse(data, rendered.pod_env())
    assert cfg.store.postgres.dsn is not None
    assert cfg.store.postgres.dsn.get_secret_value() == DSN


def test_postgres_dsn_from_an_existing_secret(chart: helm_python.Chart) -> None:
    values = {"store": {"backend": "postgres", "postgres": {"existingSecret": "db-url"}}}
    rendered = render(chart, merged(WORKING, values))
    assert rendered.postgres_secret_ref() == {"name": "db-url", "key": "BRIDGE_DATABASE_URL"}
    assert "BRIDGE_DATABASE_URL" not in rendered.secret_env()
    # The bridge's existingSecret may hold it instead (envFrom), with no extra entry.
    rendered = render(chart, merged(POSTGRES, {"store": {"postgres": {"dsn": ""}}},
                                    {"existingSecret": "all-in-one"}))  # fmt: skip
    assert rendered.postgres_secret_ref() is None
    assert rendered.container()["envFrom"] == [{"secretRef": {"name": "all-in-one"}}]


NODE_AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["alerting"]}]}
            ]
        }
    }
}


def test_postgres_tuning_passes_through_and_a_replica_count_is_kept(
    chart: helm_python.Chart,
) -> None:
    tuning = {"schema": "bridge_prod", "pool_size": 6, "ssl": {"mode": "verify-full"}}
    values = merged(
        WORKING,
        POSTGRES,
        {
            "replicaCount": 3,
            "config": {"store": {"postgres": tuning}},
            "affinity": NODE_AFFINITY,
        },
    )
    rendered = render(chart, values)
    assert rendered.one("Deployment")["spec"]["replicas"] == 3
    assert rendered.pod_spec()["affinity"] == NODE_AFFINITY, "the user's wins"
    cfg = bridge_config.parse(yaml.safe_load(rendered.bridge_yaml()), rendered.pod_env())
    assert (cfg.store.postgres.schema_, cfg.store.postgres.pool_size) == ("bridge_prod", 6)
    assert cfg.store.postgres.ssl.mode == "verify-full"


# --- reaching the bridge ---------------------------------------------------------------------


def test_ingress_exposes_only_what_sentry_calls(chart: helm_python.Chart) -> None:
    rendered = render(chart, merged(WORKING, TOGGLES["ingress"]))
    spec = rendered.one("Ingress")["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"secretName": "bridge-tls", "hosts": ["bridge.example.com"]}]
    [rule] = spec["rules"]
    assert rule["host"] == "bridge.example.com"
    backend = {"service": {"name": FULLNAME, "port": {"name": "http"}}}
    # The webhook, and the alert rule editor's requests (bridge.sentry_ui: /sentry/...).
    assert rule["http"]["paths"] == [
        {"path": "/webhooks/sentry", "pathType": "Exact", "backend": backend},
        {"path": "/sentry", "pathType": "Prefix", "backend": backend},
    ]


@pytest.mark.parametrize(
    ("ingress", "url"),
    [
        pytest.param(TOGGLES["ingress"], "https://bridge.example.com/webhooks/sentry", id="tls"),
        pytest.param(
            {"ingress": {"enabled": True, "hosts": ["b.example.org"]}},
            "http://b.example.org/webhooks/sentry",
            id="plain",
        ),
    ],
)
def test_notes_print_the_webhook_url(
    chart: helm_python.Chart, ingress: dict[str, Any], url: str
) -> None:
    notes = render(chart, merged(WORKING, ingress)).notes
    assert url in notes
    assert f"helm test {RELEASE} -n {NAMESPACE}" in notes


def test_notes_without_ingress_say_how_to_expose_it(chart: helm_python.Chart) -> None:
    notes = render(chart, merged(WORKING, {"secrets": {"sentryLegacyToken": "tok"}})).notes
    assert "The ingress is disabled" in notes
    assert "?token=" in notes
    assert "tok" not in notes.replace("token", "")  # the token itself is never printed


def test_network_policy(chart: helm_python.Chart) -> None:
    rendered = render(chart, merged(WORKING, TOGGLES["networkPolicy"]))
    spec = rendered.one("NetworkPolicy")["spec"]
    assert spec["podSelector"] == rendered.one("Deployment")["spec"]["selector"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    [rule] = spec["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    test_pod_labels = rendered.one("Pod", f"{FULLNAME}-test-ready")["metadata"]["labels"]
    selectors = [
        peer["podSelector"]["matchLabels"] for peer in rule["from"] if "podSelector" in peer
    ]
    assert any(s.items() <= test_pod_labels.items() for s in selectors), "helm test is blocked"
    dns, user = spec["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert user == TOGGLES["networkPolicy"]["networkPolicy"]["egress"][0]

    ingress_only = {"networkPolicy": {"enabled": True}}
    spec = render(chart, merged(WORKING, ingress_only)).one("NetworkPolicy")["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    assert "from" not in spec["ingress"][0]
    assert "egress" not in spec


def test_helm_test_hook_checks_readiness(chart: helm_python.Chart) -> None:
    rendered = render(chart, WORKING)
    pod = rendered.one("Pod", f"{FULLNAME}-test-ready")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    selector = rendered.one("Deployment")["spec"]["selector"]["matchLabels"]
    assert not selector.items() <= pod["metadata"]["labels"].items(), (
        "the ReplicaSet would adopt it"
    )
    [container] = pod["spec"]["containers"]
    assert container["image"] == rendered.container()["image"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    code = container["command"][2]
    assert f"http://{FULLNAME}:8080/-/ready" in code
    for status, passes in ((200, True), (503, False)):
        with serve_status(status) as port:
            local = code.replace(f"{FULLNAME}:8080", f"127.0.0.1:{port}")
            result = subprocess.run([sys.executable, "-c", local], capture_output=True, check=False)
        assert (result.returncode == 0) is passes, status


def test_image_reference(chart: helm_python.Chart) -> None:
    app_version = chart.metadata["appVersion"]
    assert render(chart, WORKING).container()["image"].endswith(f":{app_version}")
    digest = "sha256:" + "a" * 64
    values = merged(WORKING, {"image": {"tag": "1.2.3", "digest": digest}})
    assert render(chart, values).container()["image"].endswith(f":1.2.3@{digest}")


def test_app_version_is_the_packages() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    chart_yaml = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text(encoding="utf-8"))
    assert chart_yaml["appVersion"] == pyproject["project"]["version"]


# --- the Prometheus Operator's resources ------------------------------------------------------


def test_service_monitor_scrapes_the_http_port(chart: helm_python.Chart) -> None:
    values = merged(WORKING, TOGGLES["serviceMonitor"], {"serviceMonitor": {"interval": "15s"}})
    rendered = render(chart, values)
    monitor = rendered.one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kps"
    spec = monitor["spec"]
    service = rendered.one("Service")
    assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    [endpoint] = spec["endpoints"]
    assert endpoint == {"port": "http", "path": "/metrics", "interval": "15s"}
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}


def _rules(
    chart: helm_python.Chart, extra: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    values = merged(WORKING, TOGGLES["prometheusRule"], extra or {})
    rule = render(chart, values).one("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    [group] = rule["spec"]["groups"]
    rules: list[dict[str, Any]] = group["rules"]
    return rules


ALERTS = (
    "SentryBridgeDown",
    "SentryBridgeWebhooksRejected",
    "SentryBridgeDeliveryFailing",
    "SentryBridgeQueueGrowing",
    "SentryBridgeAlertsDropped",
    "SentryBridgeQuarantine",
    "SentryBridgeStoreFailing",
    "SentryBridgeStoreDown",
    "SentryBridgeSpoolBacklog",
    "SentryBridgeSpoolFilling",
    "SentryBridgeNoWebhooks",
    "SentryBridgeReconcileStalled",
)


def test_prometheus_rule_alerts_on_the_bridge_itself(chart: helm_python.Chart) -> None:
    rules = _rules(chart)
    assert [r["alert"] for r in rules] == list(ALERTS)
    # process_start_time_seconds: prometheus-client's process collector, which serve adds.
    allowed = exported_metric_names() | {"up", "process_start_time_seconds"}
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]
        assert "runbook_url" not in rule["annotations"]
        assert metric_names(rule["expr"]) <= allowed, rule["alert"]
        for selector in selected_metrics(rule["expr"]):
            labels = {m.name: (m.op, m.value) for m in selector.matchers.matchers}
            assert labels["job"] == (promql_parser.MatchOp.Equal, FULLNAME), rule["alert"]
            assert labels["namespace"] == (promql_parser.MatchOp.Equal, NAMESPACE), rule["alert"]
    # Prometheus, not Helm, fills in the alert's labels.
    assert "{{ $labels.reason }}" in rules[1]["annotations"]["summary"]


def test_the_no_webhooks_alert_is_off_by_default_and_counts_minutes(
    chart: helm_python.Chart,
) -> None:
    """Issue 16, item 6: an opt-in alert; its threshold is the value, in seconds."""
    off = _rules(chart, {"prometheusRule": {"noWebhooksMinutes": 0}})
    assert "SentryBridgeNoWebhooks" not in [r["alert"] for r in off]
    values = merged(WORKING, {"prometheusRule": {"enabled": True}})
    default = render(chart, values).one("PrometheusRule")["spec"]["groups"][0]["rules"]
    assert "SentryBridgeNoWebhooks" not in [r["alert"] for r in default]
    [quiet] = [r for r in _rules(chart) if r["alert"] == "SentryBridgeNoWebhooks"]
    assert quiet["expr"].rstrip().endswith("> 21600")
    assert quiet["annotations"]["summary"] == "No webhook from Sentry for 360 minutes."


def test_the_reconcile_stalled_alert_is_on_by_default_and_counts_minutes(
    chart: helm_python.Chart,
) -> None:
    """It cannot fire without an API token (no series), so it is on unless set to 0."""
    values = merged(WORKING, {"prometheusRule": {"enabled": True}})
    default = render(chart, values).one("PrometheusRule")["spec"]["groups"][0]["rules"]
    [rule] = [r for r in default if r["alert"] == "SentryBridgeReconcileStalled"]
    assert rule["expr"].rstrip().endswith("> 1200")
    assert "process_start_time_seconds" in rule["expr"]
    off = _rules(chart, {"prometheusRule": {"reconcileStalledMinutes": 0}})
    assert "SentryBridgeReconcileStalled" not in [r["alert"] for r in off]
    [longer] = [
        r
        for r in _rules(chart, {"prometheusRule": {"reconcileStalledMinutes": 45}})
        if r["alert"] == "SentryBridgeReconcileStalled"
    ]
    assert longer["expr"].rstrip().endswith("> 2700")


def test_prometheus_rule_labels_and_runbooks(chart: helm_python.Chart) -> None:
    extra = {
        "prometheusRule": {
            "labels": {"role": "alert-rules"},
            "additionalRuleLabels": {"team": "platform"},
            "runbookUrl": "https://example.com/runbook",
        }
    }
    rules = _rules(chart, extra)
    runbook = (ROOT / "docs" / "runbook.md").read_text(encoding="utf-8")
    headings = {
        line.removeprefix("## ").strip() for line in runbook.splitlines() if line.startswith("## ")
    }
    for rule in rules:
        assert rule["labels"]["team"] == "platform"
        anchor = rule["alert"].lower()
        assert rule["annotations"]["runbook_url"] == f"https://example.com/runbook#{anchor}"
        assert rule["alert"] in headings, f"docs/runbook.md has no section {rule['alert']}"


def test_grafana_dashboard_configmap_ships_the_dashboard(chart: helm_python.Chart) -> None:
    values = merged(
        WORKING,
        {
            "grafanaDashboard": {
                "enabled": True,
                "namespace": "grafana",
                "annotations": {"grafana_folder": "Sentry"},
            }
        },
    )
    configmap = render(chart, values).one("ConfigMap", f"{FULLNAME}-dashboard")
    assert configmap["metadata"]["namespace"] == "grafana"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "Sentry"}
    shipped = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert json.loads(configmap["data"]["sentry-bridge.json"]) == shipped


# --- values.schema.json ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "where"),
    [
        pytest.param({"replicaCont": 1}, "'replicaCont' not allowed", id="top-level"),
        pytest.param({"image": {"tga": "1"}}, "'tga' not allowed", id="image"),
        pytest.param({"serviceMonitor": {"enable": True}}, "'enable' not allowed", id="toggle"),
        pytest.param(
            {"config": {"sentry": {"client_secret": "x"}}},
            "'client_secret' not allowed",
            id="config-key",
        ),
        pytest.param(
            {
                "config": {
                    "classification": {
                        "rules": [{"name": "r", "severity": "high", "match": {"usres": {"gt": 1}}}]
                    }
                }
            },
            "'usres' not allowed",
            id="rule-field",
        ),
        pytest.param(
            {"config": {"classification": {"rules": [{"name": "r", "severity": "urgent"}]}}},
            "/config/classification/rules/0/severity",
            id="severity",
        ),
        pytest.param(
            {"config": {"shutdown": {"grace_period": "1 minute"}}},
            "/config/shutdown/grace_period",
            id="grace-period",
        ),
        pytest.param({"service": {"port": "8080"}}, "/service/port", id="type"),
    ],
)
def test_the_schema_rejects_typos(
    chart: helm_python.Chart, values: dict[str, Any], where: str
) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=re.escape(where)):
        render(chart, merged(WORKING, values))


def test_the_schema_admits_what_values_yaml_documents(chart: helm_python.Chart) -> None:
    values = merged(
        WORKING,
        {
            "config": {
                "alertmanager": {
                    "basic_auth": {"username": "bridge", "password": "${ALERTMANAGER_PASSWORD}"},
                    "bearer_token": None,
                }
            },
            "secrets": {"alertmanagerPassword": "pw"},
            "resources": {
                "requests": {"cpu": "50m", "memory": "96Mi"},
                "limits": {"memory": "256Mi"},
            },
            "global": {"imageRegistry": "mirror.example.com"},
        },
    )
    rendered = render(chart, values)
    cfg = bridge_config.parse(yaml.safe_load(rendered.bridge_yaml()), rendered.pod_env())
    assert cfg.alertmanager.basic_auth is not None
    assert cfg.alertmanager.basic_auth.password.get_secret_value() == "pw"


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Annotated:
        return _models_in(args[0])
    if origin in (Union, types.UnionType, list, dict):
        return [model for arg in args for model in _models_in(arg)]
    return []


def _objects(node: dict[str, Any], definitions: dict[str, Any]) -> list[dict[str, Any]]:
    """The object schemas (those with properties) a schema node can stand for."""
    if "$ref" in node:
        return _objects(definitions[node["$ref"].rsplit("/", 1)[1]], definitions)
    if "properties" in node:
        return [node]
    found: list[dict[str, Any]] = []
    for key in ("anyOf", "oneOf"):
        for sub in node.get(key, []):
            found += _objects(sub, definitions)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            found += _objects(node[key], definitions)
    return found


def _compare(
    model: type[BaseModel],
    node: dict[str, Any],
    where: str,
    definitions: dict[str, Any],
    seen: set[str],
) -> None:
    if model.__name__ in seen:
        return
    seen.add(model.__name__)
    assert node.get("additionalProperties") is False, f"{where}: unknown keys are not refused"
    keys = {field.alias or name: field for name, field in model.model_fields.items()}
    assert set(node["properties"]) == set(keys), f"{where}: keys differ from {model.__name__}"
    for key, field in keys.items():
        for sub_model in _models_in(field.annotation):
            [sub_node] = _objects(node["properties"][key], definitions)
            _compare(sub_model, sub_node, f"{where}.{key}", definitions, seen)


def test_the_config_schema_has_the_bridges_keys() -> None:
    """values.schema.json's `config` mirrors bridge/config.py key for key, so a key added to
    the bridge is admitted by the chart and a typo is refused at `helm install`."""
    schema = json.loads((CHART_DIR / "values.schema.json").read_text(encoding="utf-8"))
    _compare(
        bridge_config.Config, schema["properties"]["config"], "config", schema["definitions"], set()
    )


def test_the_config_schema_is_generated_from_the_models() -> None:
    """values.schema.json's `config` is bridge/config.py's models, walked by
    bridge.chart_schema: a key, type or bound changed in the models changes the file."""
    text = (CHART_DIR / "values.schema.json").read_text(encoding="utf-8")
    assert chart_schema.render(json.loads(text)) == text, (
        f"values.schema.json differs from bridge/config.py; run {chart_schema.COMMAND}"
    )


def test_the_generator_sees_a_changed_model(monkeypatch: pytest.MonkeyPatch) -> None:
    text = (CHART_DIR / "values.schema.json").read_text(encoding="utf-8")
    field = bridge_config.Dedup.model_fields["escalate_after"]
    monkeypatch.setattr(field, "metadata", [annotated_types.Ge(5)])
    changed = json.loads(chart_schema.render(json.loads(text)))
    [bounded, _] = changed["definitions"]["Dedup"]["properties"]["escalate_after"]["anyOf"]
    assert bounded == {"type": "integer", "minimum": 5}


def test_the_schema_command_rewrites_a_stale_file(tmp_path: Path) -> None:
    stale = json.loads((CHART_DIR / "values.schema.json").read_text(encoding="utf-8"))
    del stale["definitions"]["Server"]["properties"]["port"]
    path = tmp_path / "values.schema.json"
    path.write_text(json.dumps(stale, indent=2) + "\n", encoding="utf-8")
    assert chart_schema.main(["--file", str(path), "--check"]) == 1
    assert chart_schema.main(["--file", str(path)]) == 0
    assert path.read_text(encoding="utf-8") == (CHART_DIR / "values.schema.json").read_text(
        encoding="utf-8"
    )
    assert chart_schema.main(["--file", str(path), "--check"]) == 0


@pytest.mark.parametrize(
    "duration",
    ["30s", "1.5m", "500ms", " 2h ", "0.5", "1d", "10", 0.25, 3],
)
def test_the_schema_admits_the_durations_the_bridge_reads(
    chart: helm_python.Chart, duration: str | float
) -> None:
    values = merged(WORKING, {"config": {"alertmanager": {"resend_interval": duration}}})
    rendered = render(chart, values)
    cfg = bridge_config.parse(yaml.safe_load(rendered.bridge_yaml()), rendered.pod_env())
    assert cfg.alertmanager.resend_interval > 0


# --- the chart refuses what the bridge refuses ------------------------------------------------


def _rule(**fields: Any) -> dict[str, Any]:
    return {"config": {"classification": {"rules": [{"name": "r", **fields}]}}}


FOUR_AMS = [
    f"http://alertmanager-main-{i}.alertmanager-operated.monitoring.svc:9093" for i in "0123"
]
# Configs the bridge refuses at start, and where the chart refuses them: values.schema.json
# ("schema", at the path given), the templates ("template", with the message given), or the
# check-config hook before any pod changes ("hook", with what check-config says).
REFUSED = [
    pytest.param(
        {"config": {"alertmanager": {"urls": ["alertmanager-operated.monitoring.svc:9093"]}}},
        "schema",
        "/config/alertmanager/urls",
        id="url-without-scheme",
    ),
    pytest.param(
        {"config": {"alertmanager": {"urls": "http://am-0:9093,am-1:9093"}}},
        "schema",
        "/config/alertmanager/urls",
        id="comma-url-without-scheme",
    ),
    pytest.param(
        {"config": {"alertmanager": {"urls": ["http://am:9093", "http://am:9093"]}}},
        "schema",
        "/config/alertmanager/urls",
        id="url-twice",
    ),
    pytest.param(
        {"config": {"alertmanager": {"urls": []}}},
        "schema",
        "/config/alertmanager/urls",
        id="no-url",
    ),
    pytest.param(
        {"config": {"alertmanager": {"resend_interval": 0}}},
        "schema",
        "/config/alertmanager/resend_interval",
        id="resend-interval-zero",
    ),
    pytest.param(
        {"config": {"alertmanager": {"resend_interval": "0s"}}},
        "schema",
        "/config/alertmanager/resend_interval",
        id="resend-interval-0s",
    ),
    pytest.param(
        {"config": {"dedup": {"window": "1h"}}},
        "template",
        "config.dedup.window must be shorter than config.alertmanager.alert_lifetime",
        id="window-as-long-as-the-default-lifetime",
    ),
    pytest.param(
        {"config": {"alertmanager": {"alert_lifetime": 300}}},
        "template",
        "config.dedup.window must be shorter than config.alertmanager.alert_lifetime",
        id="lifetime-as-short-as-the-default-window",
    ),
    pytest.param(
        {"config": {"dedup": {"window": "2h"}, "alertmanager": {"alert_lifetime": "90m"}}},
        "template",
        "config.dedup.window must be shorter than config.alertmanager.alert_lifetime",
        id="window-longer-than-lifetime",
    ),
    pytest.param(
        merged(POSTGRES, {"config": {"alertmanager": {"urls": FOUR_AMS}}}),
        "template",
        "config.store.postgres.pool_size: 10 is too small for 4 Alertmanager(s); at least 11",
        id="pool-too-small-for-the-alertmanagers",
    ),
    pytest.param(
        {"config": {"classification": {"rules": [{"name": "r", "severity": "low"}] * 2}}},
        "hook",
        "rule names must be unique",
        id="rule-names-twice",
    ),
    pytest.param(
        _rule(severity="low", labels={"severity": "x"}), "hook", "reserved label", id="reserved"
    ),
    pytest.param(_rule(severity="low", drop=True), "hook", "exactly one", id="severity-and-drop"),
    pytest.param(
        _rule(severity="low", match={"title": {"regex": "("}}),
        "hook",
        "invalid regular expression",
        id="bad-regex",
    ),
    pytest.param(
        _rule(severity="low", match={"level": {}}), "hook", "at least one operator", id="no-op"
    ),
    pytest.param(
        merged(POSTGRES, {"config": {"store": {"spool": {"accept_timeout": "1s"}}}}),
        "template",
        "config.store.spool.accept_timeout: at most 0.8s",
        id="accept-timeout-beyond-sentrys-second",
    ),
    pytest.param(
        merged(POSTGRES, {"config": {"store": {"postgres": {"ssl": {"cert": "/c.pem"}}}}}),
        "template",
        "config.store.postgres.ssl: cert and key go together",
        id="ssl-cert-without-key",
    ),
    pytest.param(
        merged(POSTGRES, {"config": {"store": {"postgres": {"ssl": {"root_cert": "/ca.pem"}}}}}),
        "template",
        "config.store.postgres.ssl: certificates are set but mode is unset",
        id="ssl-root-cert-without-mode",
    ),
]


def test_a_database_url_the_bridge_refuses_is_refused(chart: helm_python.Chart) -> None:
    """The DSN goes into the chart's Secret, which the hook does not get: the schema checks
    its scheme as bridge.config.Postgres does."""
    with pytest.raises(ConfigError, match="not a postgresql:// URL"):
        bridge_config.parse({"store": {"backend": "postgres", "postgres": {"dsn": "db:5432/b"}}})
    values = merged(WORKING, POSTGRES, {"store": {"postgres": {"dsn": "db:5432/b"}}})
    with pytest.raises(helm_python.HelmValuesError, match="/store/postgres/dsn"):
        render(chart, values)


# Refused by serve but not by check-config, which leaves secrets and credentials to serve:
# the templates refuse these.
REFUSED_WITH_SECRETS = [
    pytest.param(
        {
            "config": {"alertmanager": {"basic_auth": {"username": "u", "password": "p"}}},
            "secrets": {"alertmanagerBearerToken": "tok"},
        },
        "template",
        "config.alertmanager.basic_auth and a bearer token",
        id="basic-auth-and-bearer-token",
    ),
    pytest.param(
        {
            "config": {
                "sentry": {"client_secrets": "", "service_hook_secrets": [], "legacy_token": None}
            }
        },
        "template",
        "no webhook could authenticate",
        id="every-credential-blanked",
    ),
]


def _config_the_chart_writes(chart: helm_python.Chart, values: dict[str, Any]) -> str:
    """The config text the ConfigMap (and the hook's) would hold with these values; for
    values the chart refuses, the accepted rest rendered and `config` merged on as Helm does."""
    try:
        _, text = render(chart, merged(WORKING, values)).hook()
        return text
    except helm_python.HelmError:
        rest = {k: v for k, v in values.items() if k != "config"}
        rendered = yaml.safe_load(render(chart, merged(WORKING, rest)).bridge_yaml())
        return yaml.safe_dump(merged(rendered, values.get("config", {})))


def _check_config(container: Mapping[str, Any], text: str, tmp_path: Path) -> Any:
    """`sentry-bridge check-config` as the hook's container runs it: its args and its
    environment only (no Secret), on the config text at the path the args name."""
    args = container["args"]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "config"]
    path = tmp_path / Path(args[1]).relative_to(mount["mountPath"])
    path.write_text(text, encoding="utf-8")
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    return subprocess.run(
        [sys.executable, "-m", "bridge", args[0], str(path)],
        capture_output=True,
        text=True,
        env=env | {"PATH": "/usr/bin:/bin"},
        check=False,
        cwd=tmp_path,
    )


@pytest.mark.parametrize(("values", "where", "message"), REFUSED + REFUSED_WITH_SECRETS)
def test_the_chart_refuses_what_the_bridge_refuses(
    chart: helm_python.Chart, values: dict[str, Any], where: str, message: str
) -> None:
    """issue 14: with SQLite the old pod stops before the new one starts (Recreate), so a
    config the bridge refuses must stop `helm install`/`upgrade` before any pod changes."""
    text = _config_the_chart_writes(chart, values)
    env = {"SENTRY_CLIENT_SECRET": "s", "BRIDGE_DATABASE_URL": DSN} | {
        SECRET_ENV[k]: v for k, v in values.get("secrets", {}).items()
    }
    with pytest.raises(ConfigError):  # the table is true: serve would not start
        bridge_config.parse(yaml.safe_load(text), env)
    if where == "schema":
        with pytest.raises(helm_python.HelmValuesError, match=re.escape(message)):
            render(chart, merged(WORKING, values))
    elif where == "template":
        with pytest.raises(helm_python.HelmError, match=re.escape(message)):
            render(chart, merged(WORKING, values))
    else:
        rendered = render(chart, merged(WORKING, values))
        _, hook_text = rendered.hook()
        assert hook_text == rendered.bridge_yaml(), "the hook checks what the pods will read"


@pytest.mark.parametrize(("values", "where", "message"), REFUSED)
def test_the_hook_fails_on_each_refused_config(
    chart: helm_python.Chart, values: dict[str, Any], where: str, message: str, tmp_path: Path
) -> None:
    """check-config, run as the hook runs it, refuses every config of the table: the hook
    would stop the upgrade even where the schema or the templates did not."""
    container, _ = render(chart, WORKING).hook()
    result = _check_config(container, _config_the_chart_writes(chart, values), tmp_path)
    assert result.returncode == 2, result.stdout
    assert result.stderr.startswith("config error:")
    if where == "hook":
        assert message in result.stderr


@pytest.mark.parametrize("values", SCENARIOS)
def test_the_hook_passes_every_working_install_without_its_secrets(
    chart: helm_python.Chart, values: dict[str, Any], tmp_path: Path
) -> None:
    """On install the chart's Secret does not exist when the hook runs, so check-config
    needs none: the Sentry secrets and the database's URL are noted, not errors."""
    container, text = render(chart, values).hook()
    assert "envFrom" not in container
    result = _check_config(container, text, tmp_path)
    assert result.returncode == 0, result.stderr
    if values.get("store", {}).get("backend") == "postgres":
        assert "store.postgres.dsn: the environment variable BRIDGE_DATABASE_URL" in result.stdout


def test_the_hook_runs_the_new_image_before_the_pods_change(chart: helm_python.Chart) -> None:
    values = merged(
        WORKING,
        {
            "image": {"tag": "9.9.9"},
            "imagePullSecrets": [{"name": "registry"}],
            "env": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
        },
    )
    rendered = render(chart, values)
    job = rendered.one("Job", CHECK)
    configmap = rendered.one("ConfigMap", CHECK)
    for doc, weight in ((configmap, -10), (job, 0)):  # the ConfigMap first: the Job mounts it
        annotations = doc["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert int(annotations["helm.sh/hook-weight"]) == weight
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    assert job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pod, "the release's ServiceAccount is not there yet"
    assert pod["securityContext"] == rendered.pod_spec()["securityContext"]
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    container, _ = rendered.hook()
    assert container["image"] == rendered.container()["image"]
    assert container["image"].endswith(":9.9.9")
    assert container["securityContext"] == rendered.container()["securityContext"]
    assert container["args"] == ["check-config", "/etc/sentry-bridge/config.yaml"]
    assert {"name": "HTTPS_PROXY", "value": "http://proxy:3128"} in container["env"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "config"]
    assert volume["configMap"]["name"] == CHECK
    selector = rendered.one("Deployment")["spec"]["selector"]["matchLabels"]
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= labels.items(), "the Service would route to it"


# --- the chart's docs match the product ---------------------------------------------------------

# What the chart and docs/upgrading.md used to say, and is not true: PostgreSQL runs (several
# replicas, tests/integration/test_replicas.py) and the dedup state is in the store.
UNTRUE = [
    r"(does not|doesn't|cannot) (yet )?run on (postgres|PostgreSQL)",
    r"not (run|work)\w* on (postgres|PostgreSQL) yet",
    r"not yet supported",
    r"ready for the version that does",
    r"dedup windows and escalation counts \| lost \(in memory\)",
    r"validates (it )?but does not run",
]


def test_the_chart_and_the_upgrade_guide_say_postgres_runs(chart: helm_python.Chart) -> None:
    notes = render(chart, merged(WORKING, POSTGRES)).notes
    texts = {
        "NOTES.txt (postgres)": notes,
        "the chart's README": (CHART_DIR / "README.md").read_text(encoding="utf-8"),
        "values.yaml": (CHART_DIR / "values.yaml").read_text(encoding="utf-8"),
        "docs/upgrading.md": (ROOT / "docs" / "upgrading.md").read_text(encoding="utf-8"),
    }
    for name, text in texts.items():
        flat = " ".join(text.replace("#", " ").split())  # a sentence across comment lines
        for pattern in UNTRUE:
            found = re.search(pattern, flat, re.IGNORECASE)
            assert found is None, f"{name} says {found.group(0)!r}"
    upgrading = texts["docs/upgrading.md"]
    [row] = [line for line in upgrading.splitlines() if line.startswith("| dedup windows")]
    cells = [cell.strip() for cell in row.split("|")[2:5]]
    assert cells[0].startswith("lost with the pod")
    assert cells[1:] == ["kept", "kept"]


def _readme_quick_start() -> list[list[str]]:
    """The chart README's first sh block: its commands (continuations joined) split as the
    shell splits them, with the block's own variables substituted and placeholders filled."""
    readme = (CHART_DIR / "README.md").read_text(encoding="utf-8")
    block = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    variables: dict[str, str] = {}
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if len(words) == 1 and re.fullmatch(r"[A-Z_]+=.*", words[0]):
            name, value = words[0].split("=", 1)
            variables[name] = re.sub(r"<[^>]+>", "from-the-readme", value)
        elif words:
            commands.append([re.sub(r"\$(\w+)", lambda m: variables[m[1]], w) for w in words])
    return commands


def test_the_readme_quick_start_works_as_written(chart: helm_python.Chart) -> None:
    """issue 14: the one-line install failed without image.repository. Its values, as Helm
    parses the --set flags, render, pass lint, and run the image the block's `docker build`
    makes, with a config the bridge accepts."""
    commands = _readme_quick_start()
    [build] = [c for c in commands if c[:2] == ["docker", "build"]]
    built = build[build.index("-t") + 1]
    assert build[-1] == ".", "built from the repository's root, with its Dockerfile"
    [load] = [c for c in commands if c[:2] == ["kind", "load"]]
    assert load[-1] == built, "the cluster gets the image that was built"
    [install] = [c for c in commands if c[:2] == ["helm", "install"]]
    release, chart_path = install[2], install[3]
    assert (ROOT / chart_path).resolve() == CHART_DIR
    namespace = install[install.index("-n") + 1]
    values: dict[str, Any] = {}
    for flag, value in itertools.pairwise(install):
        if flag == "--set":
            values = merged(values, helm_python.parse_set_string(value))
    out = chart.render(values, name=release, namespace=namespace)
    docs = [doc for path, text in out.items() if not path.endswith("NOTES.txt")
            for doc in yaml.safe_load_all(text) if doc]  # fmt: skip
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == built
    name = deployment["metadata"]["name"]
    [configmap] = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == name]
    env = {"SENTRY_CLIENT_SECRET": values["secrets"]["sentryClientSecret"]}
    cfg = bridge_config.parse(yaml.safe_load(configmap["data"]["config.yaml"]), env)
    assert [s.get_secret_value() for s in cfg.sentry.client_secrets] == ["from-the-readme"]
    report = helm_python.lint(CHART_DIR, values, strict=True, namespace=namespace)
    assert report["errors"] == []


def _fits(chart: helm_python.Chart, values: dict[str, Any]) -> bool:
    try:
        render(chart, merged(WORKING, values))
    except helm_python.HelmRenderError:
        return False
    return True


def test_the_templates_checks_use_the_bridges_defaults_and_bounds(chart: helm_python.Chart) -> None:
    """bridge.validateConfig repeats bridge/config.py's defaults and its pool formula: each
    check is rendered at the bridge's boundary, one step either side."""
    window = bridge_config.Dedup().window
    lifetime = bridge_config.Alertmanager().alert_lifetime
    assert _fits(chart, {"config": {"alertmanager": {"alert_lifetime": window + 1}}})
    assert not _fits(chart, {"config": {"alertmanager": {"alert_lifetime": window}}})
    assert _fits(chart, {"config": {"dedup": {"window": f"{lifetime - 1:g}s"}}})
    assert not _fits(chart, {"config": {"dedup": {"window": f"{lifetime / 60:g}m"}}})
    pool = bridge_config.Postgres().pool_size
    most = max(n for n in range(1, 50) if bridge_config.postgres_connections(n) <= pool)
    urls = [f"http://am-{i}:9093" for i in range(most + 1)]
    assert _fits(chart, merged(POSTGRES, {"config": {"alertmanager": {"urls": urls[:most]}}}))
    assert not _fits(chart, merged(POSTGRES, {"config": {"alertmanager": {"urls": urls}}}))
    as_text = {"config": {"alertmanager": {"urls": ",".join(urls)}}}
    assert not _fits(chart, merged(POSTGRES, as_text)), "a comma-separated list counts too"
    bigger = {"config": {"store": {"postgres": {"pool_size": pool + 2}}}}
    assert _fits(chart, merged(POSTGRES, as_text, bigger))


@pytest.mark.parametrize("path", ["config.yaml", "examples/multi-team/config.yaml"])
def test_the_schema_admits_the_shipped_config_files(chart: helm_python.Chart, path: str) -> None:
    """The repository's config files, every key at its documented value (${VAR}s included),
    pass values.schema.json as `config` (store.backend and the DSN are the chart's)."""
    shipped = yaml.safe_load((ROOT / path).read_text(encoding="utf-8"))
    store = shipped.get("store", {})
    store.pop("backend", None)
    store.get("postgres", {}).pop("dsn", None)
    rendered = render(chart, merged(WORKING, {"config": shipped}))
    env = rendered.pod_env() | {"ALERTMANAGER_URLS": "http://am:9093"}
    bridge_config.parse(yaml.safe_load(rendered.bridge_yaml()), env)


PROBES: list[Any] = [
    *(0, 1, -1, 0.5, 0.9, 2, 1024, 8080, 8081, 70000, 10**7, True, None),
    *("", " ", "0s", "1s", "90m", "0.0ms", "x", "debug", "json", "acme", "/etc/ca.pem"),
    *("http://am:9093", "am:9093", "http://a:1,http://b:2", "a,b", [], ["http://am:9093"]),
    *(["am:9093"], "postgresql://u@db/d", "verify-full", "Bad Schema"),
]


# (key, value) pairs the bridge refuses and only the check-config hook catches: none today.
# Prefer a check in _helpers.tpl's bridge.validateConfig, so `helm lint` sees it too.
LEFT_TO_THE_HOOK: set[tuple[str, Any]] = set()


def _leaves(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        models = _models_in(field.annotation)
        if bridge_config.Classification in models:
            continue  # rules: test_the_chart_refuses_what_the_bridge_refuses and their own tests
        if models:
            [sub] = models
            yield from _leaves(sub, f"{key}.")
        elif key not in {"store.backend", "store.postgres.dsn"}:  # the chart's own values
            yield key


def _nested(path: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    *parents, last = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return out


def test_the_schema_admits_nothing_the_bridge_refuses(chart: helm_python.Chart) -> None:
    """Each config key, one at a time, at each probe value: when the bridge refuses it at
    start, values.schema.json or the templates refuse it too (the schema validated as Helm
    does, against the merged values), or NOTES.txt warns that no credential is set. The
    hook is for what depends on more than one key."""
    schema = json.loads((CHART_DIR / "values.schema.json").read_text(encoding="utf-8"))
    installed = merged(chart.values, IMAGE, WORKING)
    # No probe changes config.classification (_leaves skips it), so its share of each
    # validation, about half of the test's CPU, is the same every time: it is checked
    # once here, and the probes are validated against the schema without it.
    assert jsonschema.Draft7Validator(schema).is_valid(installed)
    config_schema = schema["properties"]["config"]["properties"]
    config_schema["classification"] = {}
    validator = jsonschema.Draft7Validator(schema)
    base = yaml.safe_load(render(chart, WORKING).bridge_yaml())
    env = {"SENTRY_CLIENT_SECRET": "s"}
    admitted_but_refused = set()
    checked = 0
    for path in _leaves(bridge_config.Config):
        for probe in PROBES:
            change = {"config": _nested(path, probe)}
            try:
                bridge_config.parse(merged(base, change["config"]), env)
                continue  # the bridge takes it
            except ConfigError:
                pass
            checked += 1
            values = merged(installed, change)
            if not validator.is_valid(values):
                continue
            try:
                notes = render(chart, merged(WORKING, change)).notes
            except helm_python.HelmError:
                continue
            if "WARNING: no Sentry credential is set" in notes:
                continue  # left to a Secret, or warned (so `helm lint` of the defaults works)
            admitted_but_refused.add((path, probe if not isinstance(probe, list) else str(probe)))
    assert checked > 500, "the probes reach the bridge's refusals"
    left = admitted_but_refused - LEFT_TO_THE_HOOK
    assert not left, f"add a check to bridge.validateConfig: {sorted(map(str, left))}"
