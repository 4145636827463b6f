"""Deployment files (``deploy/``): valid, consistent with each other and with the code.

What checks what:

* ``deploy/compose.yaml``: ``docker-compose config`` (Debian's docker-compose, installed
  by ``make system-deps``; ``docker compose`` v2 if that is what the machine has) accepts
  it, and refuses it when ``REDIS_PASSWORD`` is not given.
* ``deploy/k8s/*.yaml``, built-in kinds: the Kubernetes OpenAPI schemas shipped by
  ``kubernetes-validate``, strict (an unknown field is an error), for the oldest
  Kubernetes version supported here and the newest it ships.
* ``deploy/k8s/keda.yaml``: ``kubernetes-validate`` has no schema for KEDA's CRDs
  (ScaledObject, TriggerAuthentication; it would only warn and pass them), so a
  structural check written here against KEDA 2.x's documented fields replaces it.
* Invariants across files: replicas never exceed the topic's partitions; probes,
  healthchecks and scrapes use ``/healthz``, ``/readyz`` and ``CDR_METRICS_PORT``;
  every ``CDR_*`` name is a real setting; secrets reach the pods only through
  ``secretKeyRef``; references between objects resolve; the settings the manifests
  give load with :func:`pipeline.settings.load_settings`; the commands they run parse
  with the real command line (:func:`pipeline.cli.build_parser`).

A Dockerfile cannot be built here (no Docker engine): ``deploy/Dockerfile`` is linted
instead (what it copies exists and passes its ignore file, entry point, user, port).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
import typing
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate.utils as kv  # type: ignore[import-untyped]
import pytest
import yaml
from pydantic import BaseModel, SecretStr

import pipeline
from pipeline.avro.schemas import SCHEMAS_DIR
from pipeline.cli import build_parser
from pipeline.errors import ConfigError
from pipeline.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE_FILE = DEPLOY / "compose.yaml"
PROMETHEUS_FILE = DEPLOY / "prometheus" / "prometheus.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"

#: Read by pipeline/settings/sources.py itself, not fields of :class:`Settings`.
EXTRA_VARIABLES = frozenset({"CDR_CONFIG", "CDR_SECRETS_DIR"})
#: The oldest Kubernetes version these manifests support, and the newest schema shipped.
K8S_VERSIONS = ("1.30.0", str(kv.latest_version()))
KEDA_KINDS = frozenset({"ScaledObject", "TriggerAuthentication"})
HEALTHZ, READYZ = "/healthz", "/readyz"
PLACEHOLDER = "CHANGE-ME"
#: Stands for a variable's value when a command or the settings are parsed offline
#: (parses as a number and as a string).
FAKE_VALUE = "1"
#: Every workload that runs the image: (kind, name).
WORKLOADS = (
    ("Deployment", "cdr-pipeline"),
    ("Job", "cdr-refdata-load"),
    ("CronJob", "cdr-lake-compact"),
    ("CronJob", "cdr-lake-vacuum"),
)
LAKE_CRONJOBS = ("cdr-lake-compact", "cdr-lake-vacuum")
CDR_NAME = re.compile(r"\bCDR_[A-Z0-9_]*[A-Z0-9]\b")

Doc = dict[str, Any]


# --------------------------------------------------------------------------- settings
def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or SecretStr in typing.get_args(annotation)


def _variables(model: type[BaseModel], prefix: str) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for name, field in model.model_fields.items():
        variable = f"{prefix}{name.upper()}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out[variable] = True  # a whole nested model as JSON: may hold secrets
            out.update(_variables(annotation, variable + "__"))
        else:
            out[variable] = _is_secret(annotation)
    return out


@cache
def setting_variables() -> dict[str, bool]:
    """Every ``CDR_*`` variable :class:`Settings` reads -> whether its value is secret.

    Top-level fields are ``CDR_<FIELD>``, nested ones ``CDR_<FIELD>__<SUBFIELD>``
    (upper-cased); :data:`EXTRA_VARIABLES` are read by pipeline/settings/sources.py
    directly.
    """
    out = _variables(Settings, "CDR_")
    out.update(dict.fromkeys(EXTRA_VARIABLES, False))
    return out


def is_secret_variable(name: str) -> bool:
    return setting_variables().get(name, False)


def settings_from(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch, where: str) -> Settings:
    """Load the settings with exactly ``env`` as the CDR_* environment."""
    for key in list(os.environ):
        if key.startswith("CDR_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    try:
        return load_settings()
    except ConfigError as exc:
        pytest.fail(f"{where}: the settings it gives are refused: {exc}")


# --------------------------------------------------------------------------- files
@cache
def _documents(path: Path) -> tuple[Doc, ...]:
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: every YAML document must be a mapping"
    return tuple(docs)


def k8s_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def k8s_manifests() -> Iterator[tuple[Path, Doc]]:
    """Every Kubernetes object of deploy/k8s (not the kustomization), with its file.
    Shared, cached objects: callers must not mutate them (deep-copy first)."""
    for path in k8s_files():
        for doc in _documents(path):
            yield path, doc


def k8s_object(kind: str, name: str | None = None) -> Doc:
    found = [
        doc
        for _, doc in k8s_manifests()
        if doc.get("kind") == kind and (name is None or doc["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"deploy/k8s: expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def compose() -> Doc:
    docs = _documents(COMPOSE_FILE)
    assert len(docs) == 1, "deploy/compose.yaml: one YAML document"
    return docs[0]


def service(name: str) -> Doc:
    services: Doc = compose()["services"]
    assert name in services, f"deploy/compose.yaml: no service {name!r}"
    result: Doc = services[name]
    return result


def environment(svc: Doc) -> dict[str, str]:
    """A Compose service's environment as a dict (both the map and the list form)."""
    env = svc.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) for item in env)
        return {k: v for k, v in pairs}
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def interpolated(value: str) -> str:
    """A Compose value with ``${VAR...}`` replaced as if the variable were set."""
    return re.sub(r"\$\{[^}]+\}", FAKE_VALUE, value)


def pipeline_env() -> dict[str, str]:
    return {k: interpolated(v) for k, v in environment(service("pipeline")).items()}


def configmap() -> dict[str, str]:
    """The data of every ConfigMap, merged (their keys must not overlap)."""
    data: dict[str, str] = {}
    for _, doc in k8s_manifests():
        if doc["kind"] == "ConfigMap":
            overlap = set(data) & set(doc["data"])
            assert not overlap, f"ConfigMaps disagree on who sets {sorted(overlap)}"
            data.update(doc["data"])
    return data


def secret_values() -> dict[str, str]:
    secret = k8s_object("Secret", "cdr-pipeline")
    values: dict[str, str] = secret.get("stringData") or {}
    return values


def pod_spec(kind: str, name: str) -> Doc:
    spec: Doc = k8s_object(kind, name)["spec"]
    if kind == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    pod: Doc = spec["template"]["spec"]
    return pod


def container(kind: str, name: str) -> Doc:
    containers: list[Doc] = pod_spec(kind, name)["containers"]
    assert len(containers) == 1, f"{kind}/{name}: one container"
    return containers[0]


def kubelet_env(kind: str, name: str) -> dict[str, str]:
    """The environment Kubernetes would give the container (envFrom, then env)."""
    c = container(kind, name)
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        env.update(k8s_object("ConfigMap", source["configMapRef"]["name"])["data"])
    for item in c.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        ref = item["valueFrom"]
        if "secretKeyRef" in ref:
            env[item["name"]] = secret_values()[ref["secretKeyRef"]["key"]]
        elif "configMapKeyRef" in ref:
            key_ref = ref["configMapKeyRef"]
            env[item["name"]] = k8s_object("ConfigMap", key_ref["name"])["data"][key_ref["key"]]
        else:
            env[item["name"]] = f"{name}-7d9f8c6b5-x2x4z"  # fieldRef: the pod name
    return env


def mounted_env(kind: str, name: str, root: Path) -> dict[str, str]:
    """:func:`kubelet_env` with the container's Secret volumes written under ``root``
    and the paths into them moved there (the settings check that CA files exist)."""
    spec = pod_spec(kind, name)
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    moved: dict[str, str] = {}
    for mount in container(kind, name).get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "secret" not in volume:
            continue
        target = root / mount["mountPath"].lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        for item in volume["secret"]["items"]:
            (target / item["path"]).write_text(secret_values()[item["key"]], encoding="utf-8")
        moved[mount["mountPath"].rstrip("/") + "/"] = str(target) + "/"
    env = kubelet_env(kind, name)
    for key, value in env.items():
        for mount_path, local in moved.items():
            if value.startswith(mount_path):
                env[key] = local + value.removeprefix(mount_path)
    return env


def metrics_port() -> int:
    """CDR_METRICS_PORT of the Kubernetes ConfigMap; compose and the image must agree."""
    return int(configmap()["CDR_METRICS_PORT"])


# --------------------------------------------------------------------------- docker compose
def compose_cli() -> list[str]:
    """Debian's ``docker-compose`` (1.29), else the ``docker compose`` plugin (v2)."""
    if path := shutil.which("docker-compose"):
        return [path]
    docker = shutil.which("docker")
    plugin = docker and subprocess.run(
        [docker, "compose", "version"], capture_output=True, timeout=30
    )
    if docker and plugin and plugin.returncode == 0:
        return [docker, "compose"]
    pytest.fail(
        "neither docker-compose nor `docker compose` is on PATH: run `make system-deps` "
        "(installs Debian's docker-compose)"
    )


def compose_config(tmp_path: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    """``compose config`` on deploy/compose.yaml with exactly ``variables`` set (an empty
    env file, so a developer's deploy/.env does not count)."""
    env_file = tmp_path / "empty.env"
    env_file.write_text("", encoding="utf-8")
    ours = {"REDIS_PASSWORD", "PIPELINE_IMAGE", "REFDATA_DIR", "EVENTS"}
    env = {k: v for k, v in os.environ.items() if k not in ours and not k.startswith("COMPOSE_")}
    env.update(variables)
    return subprocess.run(
        [*compose_cli(), "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_compose_config_accepts_the_stack(tmp_path: Path) -> None:
    result = compose_config(tmp_path, REDIS_PASSWORD="0123456789abcdef")
    assert result.returncode == 0, f"compose config refused deploy/compose.yaml:\n{result.stderr}"
    resolved = yaml.safe_load(result.stdout)
    assert {"kafka", "schema-registry", "redis", "topics", "refdata-load", "pipeline"} <= set(
        resolved["services"]
    )
    assert resolved["services"]["pipeline"]["deploy"]["replicas"] >= 2


def test_compose_refuses_to_start_without_a_redis_password(tmp_path: Path) -> None:
    result = compose_config(tmp_path)
    assert result.returncode != 0, "deploy/compose.yaml must not fall back to a default password"
    assert "REDIS_PASSWORD" in result.stderr


def topics_created() -> dict[str, int]:
    """Topic -> partitions, from the `topics` job's kafka-topics.sh --create commands."""
    command = service("topics")["command"]
    script = "\n".join(command) if isinstance(command, list) else str(command)
    out: dict[str, int] = {}
    for line in script.replace("\\\n", " ").splitlines():
        if "--create" not in line:
            continue
        args = shlex.split(line)
        topic = args[args.index("--topic") + 1]
        out[topic] = int(args[args.index("--partitions") + 1])
    return out


def test_compose_replicas_never_exceed_the_partitions_created() -> None:
    env = pipeline_env()
    topics = topics_created()
    assert env["CDR_TOPIC"] in topics, f"the topics job does not create {env['CDR_TOPIC']}"
    assert env["CDR_DEAD_LETTER_TOPIC"] in topics, (
        f"the topics job does not create {env['CDR_DEAD_LETTER_TOPIC']}"
    )
    replicas = service("pipeline")["deploy"]["replicas"]
    partitions = topics[env["CDR_TOPIC"]]
    assert 1 <= replicas <= partitions, (
        f"compose: {replicas} pipeline replicas for {partitions} partitions of "
        f"{env['CDR_TOPIC']}: the extra replicas would sit idle"
    )


def test_compose_healthcheck_and_scrape_use_the_metrics_port() -> None:
    env = pipeline_env()
    port = int(env["CDR_METRICS_PORT"])
    assert port == metrics_port(), "compose and the Kubernetes ConfigMap disagree on the port"
    check = " ".join(service("pipeline")["healthcheck"]["test"])
    urls = re.findall(r"http://(?:127\.0\.0\.1|localhost):(\d+)(/[\w/]*)", check)
    assert urls == [(str(port), HEALTHZ)], f"compose healthcheck must GET {HEALTHZ} on {port}"

    prometheus = _documents(PROMETHEUS_FILE)[0]
    sd = [c for job in prometheus["scrape_configs"] for c in job.get("dns_sd_configs", [])]
    assert sd, "prometheus.yml: no dns_sd_configs job for the pipeline replicas"
    assert all(c["port"] == port and "pipeline" in c["names"] for c in sd)
    mounts = service("prometheus")["volumes"]
    assert any(m.startswith("./prometheus/prometheus.yml:") for m in mounts)


def test_compose_secrets_come_from_the_environment() -> None:
    for name, svc in compose()["services"].items():
        for key, value in environment(svc).items():
            if "://" in value:
                url = urlsplit(value)
                assert url.password is None, f"compose service {name}: {key} carries a password"
            elif is_secret_variable(key):
                assert re.fullmatch(r"\$\{\w+:\?[^}]*\}", value), (
                    f"compose service {name}: {key} must be a required ${{VAR:?...}} "
                    "interpolation, not a value in the file"
                )
    redis = {k: v for k, v in pipeline_env().items() if k.startswith("CDR_REDIS__")}
    loader = {k: interpolated(v) for k, v in environment(service("refdata-load")).items()}
    assert loader == redis, "refdata-load and pipeline must use the same Redis settings"


def _cli_accepts(argv: list[str], where: str) -> None:
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{where}: `cdr-pipeline {' '.join(argv)}` is refused by the CLI ({exc.code})")


def _shell_commands(svc: Doc) -> list[list[str]]:
    """The cdr-pipeline invocations of a `sh -c` Compose command."""
    (script,) = svc["command"]
    script = re.sub(r"\$\$\{?(\w+)\}?", FAKE_VALUE, script)
    commands = []
    for part in script.split("&&"):
        args = shlex.split(part)
        if args and args[0] == "exec":
            args = args[1:]
        assert args[0] == "cdr-pipeline", f"unexpected command {part!r}"
        commands.append(args[1:])
    return commands


def test_compose_commands_parse_with_the_cli() -> None:
    image = service("pipeline")["image"]
    users = [n for n, svc in compose()["services"].items() if svc.get("image") == image]
    assert {"pipeline", "refdata-load", "traffic"} <= set(users)
    for name in users:
        svc = service(name)
        if svc.get("entrypoint") == ["/bin/sh", "-c"]:
            for argv in _shell_commands(svc):
                _cli_accepts(argv, f"compose {name}")
        else:
            assert "entrypoint" not in svc, (
                f"compose {name}: the image's entry point is cdr-pipeline"
            )
            _cli_accepts(svc["command"], f"compose {name}")
    (volume,) = service("refdata-load")["volumes"]
    default = re.fullmatch(r"\$\{REFDATA_DIR:-([^}]+)\}:/refdata:ro", volume)
    assert default, f"refdata-load volume: {volume}"
    assert (DEPLOY / default.group(1) / "npanxx.csv").is_file()


def test_compose_settings_load(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(pipeline_env(), monkeypatch, "compose pipeline")
    assert settings.metrics_port == metrics_port()
    assert settings.metrics_host == "0.0.0.0", "Prometheus scrapes the container from outside"
    assert settings.output == "/lake"
    settings.kafka.client_config()


# --------------------------------------------------------------------------- kubernetes
def test_kustomization_lists_every_manifest() -> None:
    kustomization = _documents(K8S / "kustomization.yaml")[0]
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    assert set(listed) == {p.name for p in k8s_files()}, (
        "kustomization.yaml resources must be exactly the manifests in deploy/k8s"
    )
    assert {i["name"] for i in kustomization.get("images", [])} == {
        container(kind, name)["image"].split(":")[0] for kind, name in WORKLOADS
    }


def _validation_failures(doc: Doc, where: str) -> list[str]:
    failures = []
    for version in K8S_VERSIONS:
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            failures.append(f"{where} (Kubernetes {version}): {path}: {exc.message}")
        except kv.SchemaNotFoundError as exc:
            failures.append(f"{where}: {exc.message}")
    return failures


def test_k8s_builtin_kinds_validate_strictly() -> None:
    failures: list[str] = []
    kinds = set()
    for path, doc in k8s_manifests():
        if doc["kind"] in KEDA_KINDS:
            continue
        kinds.add(doc["kind"])
        where = f"{path.name}: {doc['kind']}/{doc['metadata']['name']}"
        failures += _validation_failures(doc, where)
    assert not failures, "\n".join(failures)
    assert {"Deployment", "ConfigMap", "Secret", "PersistentVolumeClaim", "Job", "CronJob"} <= kinds


def test_strict_validation_catches_a_misspelled_field() -> None:
    """The validator is live: an unknown field fails (so a pass above means something)."""
    broken = copy.deepcopy(k8s_object("Deployment", "cdr-pipeline"))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProb"] = {}
    assert _validation_failures(broken, "broken")


# KEDA 2.x documented fields (keda.sh/docs/2.16: ScaledObject spec, Apache Kafka scaler).
SCALED_OBJECT_SPEC = {
    "scaleTargetRef",
    "pollingInterval",
    "cooldownPeriod",
    "initialCooldownPeriod",
    "idleReplicaCount",
    "minReplicaCount",
    "maxReplicaCount",
    "fallback",
    "advanced",
    "triggers",
}
TRIGGER_FIELDS = {"type", "name", "metadata", "authenticationRef", "metricType", "useCachedMetrics"}
KAFKA_METADATA = {
    "bootstrapServers",
    "consumerGroup",
    "topic",
    "lagThreshold",
    "activationLagThreshold",
    "offsetResetPolicy",
    "allowIdleConsumers",
    "scaleToZeroOnInvalidOffset",
    "excludePersistentLag",
    "limitToPartitionsWithLag",
    "version",
    "partitionLimitation",
    "sasl",
    "saslTokenProvider",
    "tls",
    "unsafeSsl",
    "awsRegion",
}
KAFKA_AUTH_PARAMETERS = {
    "sasl",
    "saslTokenProvider",
    "username",
    "password",
    "keytab",
    "realm",
    "kerberosConfig",
    "kerberosServiceName",
    "kerberosDisableFAST",
    "oauthTokenEndpointUri",
    "scopes",
    "oauthExtensions",
    "tls",
    "ca",
    "cert",
    "key",
    "keyPassword",
    "awsRegion",
    "awsAccessKeyID",
    "awsSecretAccessKey",
    "awsRoleArn",
}
SASL_MODES = {
    "PLAIN": "plaintext",
    "SCRAM-SHA-256": "scram_sha256",
    "SCRAM-SHA-512": "scram_sha512",
}


def scaled_object() -> Doc:
    return k8s_object("ScaledObject", "cdr-pipeline")


def kafka_trigger() -> Doc:
    triggers: list[Doc] = scaled_object()["spec"]["triggers"]
    assert len(triggers) == 1, "one trigger"
    assert triggers[0]["type"] == "kafka"
    return triggers[0]


def test_keda_objects_are_well_formed() -> None:
    """The structural check that stands in for a schema of KEDA's CRDs."""
    so = scaled_object()
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    spec = so["spec"]
    assert set(spec) <= SCALED_OBJECT_SPEC, (
        f"ScaledObject: unknown {set(spec) - SCALED_OBJECT_SPEC}"
    )
    target = spec["scaleTargetRef"]
    assert target.get("kind", "Deployment") == "Deployment"
    k8s_object("Deployment", target["name"])
    for key in ("pollingInterval", "cooldownPeriod", "minReplicaCount", "maxReplicaCount"):
        assert isinstance(spec[key], int), f"ScaledObject {key} must be an integer"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]

    trigger = kafka_trigger()
    assert set(trigger) <= TRIGGER_FIELDS, f"trigger: unknown {set(trigger) - TRIGGER_FIELDS}"
    meta = trigger["metadata"]
    assert set(meta) <= KAFKA_METADATA, f"kafka trigger: unknown {set(meta) - KAFKA_METADATA}"
    bad_types = [k for k, v in meta.items() if not isinstance(v, str)]
    assert not bad_types, f"kafka trigger metadata must be strings (map[string]string): {bad_types}"
    assert {"bootstrapServers", "consumerGroup", "topic", "lagThreshold"} <= set(meta)
    assert int(meta["lagThreshold"]) > 0
    assert meta.get("offsetResetPolicy", "latest") in {"earliest", "latest"}
    assert meta.get("allowIdleConsumers", "false") == "false"
    assert meta.get("sasl", "none") in {*SASL_MODES.values(), "gssapi", "oauthbearer", "none"}
    assert meta.get("tls", "disable") in {"enable", "disable"}

    auth = k8s_object("TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert auth["apiVersion"] == "keda.sh/v1alpha1"
    assert set(auth["spec"]) == {"secretTargetRef"}
    secret = secret_values()
    for ref in auth["spec"]["secretTargetRef"]:
        assert set(ref) == {"parameter", "name", "key"}, f"secretTargetRef item {ref}"
        assert ref["parameter"] in KAFKA_AUTH_PARAMETERS, f"unknown parameter {ref['parameter']}"
        assert ref["name"] == "cdr-pipeline", f"unknown Secret {ref['name']}"
        assert ref["key"] in secret, f"no Secret key {ref['key']}"


def test_keda_max_replicas_never_exceed_the_partitions() -> None:
    so = scaled_object()
    partitions = int(so["metadata"]["annotations"]["cdr-pipeline/topic-partitions"])
    spec = so["spec"]
    assert spec["maxReplicaCount"] <= partitions, (
        f"ScaledObject maxReplicaCount {spec['maxReplicaCount']} > {partitions} partitions: "
        "the extra consumers would sit idle"
    )
    assert spec["minReplicaCount"] >= 1
    assert partitions == topics_created()[configmap()["CDR_TOPIC"]], (
        "the partition count of keda.yaml and of the compose topics job differ"
    )


def test_keda_reads_the_lag_of_the_pipelines_own_group() -> None:
    meta = kafka_trigger()["metadata"]
    env = configmap()
    assert meta["bootstrapServers"] == env["CDR_KAFKA__BROKERS"]
    assert meta["consumerGroup"] == env["CDR_GROUP"]
    assert meta["topic"] == env["CDR_TOPIC"]
    protocol = env.get("CDR_KAFKA__SECURITY_PROTOCOL", "PLAINTEXT")
    want_sasl = SASL_MODES[env["CDR_KAFKA__SASL_MECHANISM"]] if "SASL" in protocol else "none"
    assert meta.get("sasl", "none") == want_sasl, f"KEDA sasl vs {protocol}"
    want_tls = "enable" if protocol in ("SSL", "SASL_SSL") else "disable"
    assert meta.get("tls", "disable") == want_tls, f"KEDA tls vs {protocol}"


def _probe(c: Doc, kind: str) -> tuple[str, int]:
    get = c[kind]["httpGet"]
    port = get["port"]
    if isinstance(port, str):
        (port,) = [p["containerPort"] for p in c["ports"] if p["name"] == port]
    return get["path"], int(port)


def test_k8s_probes_use_healthz_readyz_on_the_metrics_port() -> None:
    c = container("Deployment", "cdr-pipeline")
    port = metrics_port()
    assert _probe(c, "livenessProbe") == (HEALTHZ, port)
    assert _probe(c, "readinessProbe") == (READYZ, port)
    if "startupProbe" in c:
        assert _probe(c, "startupProbe") == (HEALTHZ, port)
    svc = k8s_object("Service", "cdr-pipeline-metrics")
    (svc_port,) = svc["spec"]["ports"]
    assert svc_port["port"] == port
    assert svc_port["targetPort"] == "metrics"
    assert svc["metadata"]["annotations"]["prometheus.io/port"] == str(port)


def test_k8s_references_resolve() -> None:
    deployment = k8s_object("Deployment", "cdr-pipeline")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for kind in ("Service", "PodDisruptionBudget"):
        obj = k8s_object(kind)
        selector = obj["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        assert selector.items() <= labels.items(), f"{kind} selects no consumer pod"
    secret = secret_values()
    claims = {k8s_object("PersistentVolumeClaim")["metadata"]["name"]}
    for kind, name in WORKLOADS:
        spec = pod_spec(kind, name)
        c = container(kind, name)
        for source in c.get("envFrom", []):
            k8s_object("ConfigMap", source["configMapRef"]["name"])
        for item in c.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == "cdr-pipeline", f"{kind}: unknown Secret {ref['name']}"
                assert ref["key"] in secret, f"{kind}: no Secret key {ref['key']}"
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for mount in c.get("volumeMounts", []):
            assert mount["name"] in volumes, f"{kind}: no volume {mount['name']}"
        for volume in volumes.values():
            if "secret" in volume:
                for item in volume["secret"]["items"]:
                    assert item["key"] in secret, f"{kind}: no Secret key {item['key']}"
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
        assert spec["enableServiceLinks"] is False, (
            f"{kind}: enableServiceLinks must be false (service variables of a Service "
            "named cdr-* would be read as CDR_* settings)"
        )
        assert spec["securityContext"]["runAsNonRoot"] is True


def test_k8s_secrets_are_never_inlined() -> None:
    env = configmap()
    for key, value in env.items():
        assert not is_secret_variable(key) or "://" in value, (
            f"ConfigMap: {key} is a secret setting: put it in secret.yaml"
        )
        if "://" in value:
            url = urlsplit(value)
            assert url.password is None, f"ConfigMap: {key} carries a password: use secret.yaml"
    for kind, name in WORKLOADS:
        for item in container(kind, name).get("env", []):
            if not is_secret_variable(item["name"]):
                continue
            source = item.get("valueFrom", {})
            from_configmap = "configMapKeyRef" in source and "://" in configmap().get(
                source["configMapKeyRef"]["key"], ""
            )  # a URL without credentials (checked above)
            assert "secretKeyRef" in source or from_configmap, (
                f"{kind}/{name}: {item['name']} must come from a secretKeyRef"
            )
    for key, value in secret_values().items():
        if is_secret_variable(key) or key.endswith((".crt", ".key", ".pem")):
            assert PLACEHOLDER in value, f"secret.yaml: {key} must stay a {PLACEHOLDER} placeholder"
    assert not k8s_object("Secret", "cdr-pipeline").get("data"), "secret.yaml: placeholders only"


def test_refdata_job_uses_the_consumers_redis_settings() -> None:
    args = container("Job", "cdr-refdata-load")["args"]
    assert not any("://" in a for a in args), "no Redis URL (and password) on the command line"
    job = kubelet_env("Job", "cdr-refdata-load")
    consumers = kubelet_env("Deployment", "cdr-pipeline")
    redis = {k: v for k, v in consumers.items() if k.startswith("CDR_REDIS__")}
    assert job == redis, "the refdata Job must get exactly the consumers' CDR_REDIS__* settings"


def test_k8s_commands_parse_with_the_cli() -> None:
    for kind, name in WORKLOADS:
        _cli_accepts(container(kind, name)["args"], f"{kind}/{name}")


def test_lake_cronjobs_maintain_the_consumers_lake(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The compaction and vacuum CronJobs: never two runs at once, the consumers' lake
    (same volume, same mount, the same CDR_OUTPUT from their ConfigMap), nothing else
    (no Kafka or Redis settings, no secrets), a safe vacuum retention, and settings
    that load."""
    from pipeline.lake.vacuum import SAFE_RETAIN_HOURS

    consumers = pod_spec("Deployment", "cdr-pipeline")
    consumer_lake = next(v for v in consumers["volumes"] if v["name"] == "lake")
    consumer_mount = next(
        m for m in container("Deployment", "cdr-pipeline")["volumeMounts"] if m["name"] == "lake"
    )
    deployment_output = settings_from(
        mounted_env("Deployment", "cdr-pipeline", tmp_path / "deployment"), monkeypatch, "dep"
    ).output
    for name in LAKE_CRONJOBS:
        cron = k8s_object("CronJob", name)
        assert cron["spec"]["concurrencyPolicy"] == "Forbid", name
        spec = pod_spec("CronJob", name)
        assert spec["restartPolicy"] == "Never"
        lake = next(v for v in spec["volumes"] if v["name"] == "lake")
        assert lake == consumer_lake, f"{name}: not the consumers' lake volume"
        mount = next(m for m in container("CronJob", name)["volumeMounts"] if m["name"] == "lake")
        assert mount == consumer_mount, f"{name}: the lake mounted elsewhere"
        env = kubelet_env("CronJob", name)
        assert set(env) == {"CDR_OUTPUT"}, f"{name}: only the lake location, got {sorted(env)}"
        assert not container("CronJob", name).get("envFrom")
        settings = settings_from(env, monkeypatch, name)
        assert settings.output == deployment_output
    compact = container("CronJob", "cdr-lake-compact")["args"]
    assert compact[:2] == ["lake", "compact"]
    vacuum = container("CronJob", "cdr-lake-vacuum")["args"]
    assert vacuum[:2] == ["lake", "vacuum"]
    assert "--force" not in vacuum
    assert int(vacuum[vacuum.index("--retain-hours") + 1]) >= SAFE_RETAIN_HOURS
    hourly = k8s_object("CronJob", "cdr-lake-compact")["spec"]["schedule"].split()
    daily = k8s_object("CronJob", "cdr-lake-vacuum")["spec"]["schedule"].split()
    assert hourly[1:] == ["*", "*", "*", "*"], "compaction runs every hour"
    assert daily[2:] == ["*", "*", "*"], "vacuum runs once a day"
    assert daily[1] != "*", "vacuum runs once a day"


def test_k8s_settings_load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = mounted_env("Deployment", "cdr-pipeline", tmp_path / "deployment")
    settings = settings_from(env, monkeypatch, "Deployment")
    assert settings.metrics_port == metrics_port()
    assert settings.metrics_host == "0.0.0.0", "the kubelet probes the pod's address"
    conf = settings.kafka.client_config()
    assert conf["security.protocol"] == "SASL_SSL"
    assert "sasl.password" in conf
    assert settings.kafka.client_id.startswith("cdr-pipeline-")
    assert settings.redis.uses_tls
    assert settings.redis.password is not None
    settings.redis.client()  # builds the TLS client; connects to nothing

    env = mounted_env("Job", "cdr-refdata-load", tmp_path / "job")
    job = settings_from(env, monkeypatch, "refdata Job")
    assert job.redis.uses_tls
    assert job.redis.namespace == settings.redis.namespace


# --------------------------------------------------------------------------- everywhere
def test_every_cdr_variable_is_a_real_setting() -> None:
    """Names set in compose.yaml, the ConfigMap, the Secret, the pod specs, and every
    CDR_* name written anywhere under deploy/ (README, Dockerfile, comments)."""
    known = setting_variables()
    used: dict[str, set[str]] = {}
    for name, svc in compose()["services"].items():
        for key in environment(svc):
            used.setdefault(key, set()).add(f"compose.yaml service {name}")
    for key in configmap():
        used.setdefault(key, set()).add("k8s ConfigMap")
    for key in secret_values():
        if key.startswith("CDR_"):
            used.setdefault(key, set()).add("k8s Secret")
    for kind, name in WORKLOADS:
        for item in container(kind, name).get("env", []):
            used.setdefault(item["name"], set()).add(f"k8s {kind}")
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file() and path.name != ".env":
            for match in CDR_NAME.findall(path.read_text(encoding="utf-8")):
                used.setdefault(match, set()).add(str(path.relative_to(REPO)))
    unknown = {k: sorted(v) for k, v in used.items() if k.startswith("CDR_") and k not in known}
    assert not unknown, "not settings of pipeline.settings.Settings: " + "; ".join(
        f"{k} (in {', '.join(v)})" for k, v in sorted(unknown.items())
    )
    assert {"CDR_TOPIC", "CDR_KAFKA__BROKERS", "CDR_REDIS__PASSWORD"} <= set(used)


# --------------------------------------------------------------------------- image
def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = "\n".join(lines).replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        if line.strip():
            instruction, _, rest = line.strip().partition(" ")
            out.append((instruction.upper(), rest.strip()))
    return out


def test_dockerfile_is_sound() -> None:
    instructions = dockerfile_instructions()
    by_kind: dict[str, list[str]] = {}
    for instruction, rest in instructions:
        by_kind.setdefault(instruction, []).append(rest)
    assert by_kind["FROM"] == ["python:3.11-slim"]
    assert json.loads(by_kind["ENTRYPOINT"][-1]) == ["cdr-pipeline"]
    assert json.loads(by_kind["CMD"][-1]) == ["run"]
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert "cdr-pipeline" in project["scripts"]

    uid = by_kind["USER"][-1].split(":")[0]
    assert uid.isdigit(), "USER must be numeric (runAsNonRoot can only verify a uid)"
    assert int(uid) != 0, "USER must not be root"
    for kind, name in WORKLOADS:
        assert pod_spec(kind, name)["securityContext"]["runAsUser"] == int(uid)

    env = " ".join(by_kind["ENV"])
    image_port = re.search(r"CDR_METRICS_PORT=(\d+)", env)
    assert image_port, "the image sets no default CDR_METRICS_PORT"
    assert int(image_port.group(1)) == metrics_port()
    assert by_kind["EXPOSE"] == [str(metrics_port())]
    (healthcheck,) = by_kind["HEALTHCHECK"]
    assert f"127.0.0.1:${{CDR_METRICS_PORT}}{HEALTHZ}" in healthcheck

    allowed = {
        line.strip()[1:].rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip().startswith("!")
    }
    for rest in by_kind["COPY"]:
        *sources, _dest = shlex.split(rest)
        literal = [s for s in sources if not any(ch in s for ch in "*?[")]
        assert literal, f"COPY {rest}: a wildcard must not stand alone"
        for source in literal:
            assert (REPO / source).exists(), f"COPY {source}: no such path in the repository"
            assert source.split("/")[0] in allowed, (
                f"COPY {source}: excluded by {DOCKERIGNORE.name}"
            )


def test_image_installs_the_package_not_the_checkout() -> None:
    """The image installs the project as a package (not editable): ``setup.py`` maps
    the top-level ``schemas/`` into the package, and the Dockerfile copies it."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "--editable" not in text
    assert "\nRUN pip install --no-deps . " in text
    assert re.search(r"^COPY pyproject.toml setup.py", text, re.MULTILINE)
    setup = (REPO / "setup.py").read_text(encoding="utf-8")
    assert '"pipeline.schemas": "schemas"' in setup
    # In a checkout the code reads the source of truth itself.
    package_root = Path(pipeline.__file__).resolve().parent
    assert SCHEMAS_DIR in (package_root / "schemas", package_root.parent / "schemas")
    assert (SCHEMAS_DIR / "call_event.avsc").is_file()
