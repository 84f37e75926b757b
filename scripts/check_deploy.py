#!/usr/bin/env python3
"""Static checks of everything peoplesync ships for deployment; run by scripts/check-deploy,
which installs the pinned tools first. Nothing here needs a Docker engine or a cluster.

1. docker-compose.yml against the compose specification (check-jsonschema's vendored
   compose-spec schema), plus references the schema cannot see (secrets, env files, mounts).
2. The Kubernetes manifests: every kustomization under deploy/kubernetes rendered, and every
   rendered document (plus the Secret template) validated with kubernetes-validate, strictly,
   against the oldest and newest Kubernetes versions we support. KEDA's ScaledObject is a CRD
   kubernetes-validate cannot know: its shape is checked here, and its consumers against the
   loader's integrations. Rendering uses `kubectl kustomize` when kubectl is installed, and a
   small renderer of the kustomize features we use otherwise; when both are available their
   outputs must agree, which keeps the small renderer honest.
3. The Helm chart (deploy/helm/peoplesync): linted strictly and rendered by Helm's own Go
   library (PyPI helm-python-sdk, no helm binary needed), with its defaults and with every
   option on; each rendering goes through the same checks as the kustomize renderings above.
4. The Dockerfile with hadolint.
5. The Grafana dashboard and Prometheus files: they parse, every peoplesync metric they name
   is one the services export (crates/runtime/src/metrics.rs), the alert rules pass
   `promtool check rules` and their unit tests (`promtool test rules`), and every
   PrometheusRule shipped (kustomize example, Helm chart) holds exactly those rules.
6. Every environment variable and flag that docker-compose.yml, the Dockerfile and every
   rendering of 2 and 3 give a peoplesync program is one the built program reads, and the
   shipped configuration files load (scripts/deploy_settings.py; first on bad samples,
   scripts/deploy_selftest.py).

Exits non-zero with every problem listed.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

import deploy_selftest
import deploy_settings

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
COMPOSE = ROOT / "docker-compose.yml"
# Oldest and newest Kubernetes versions the manifests must be valid for.
KUBE_VERSIONS = ["1.30.0", "1.37.0"]
# Kinds without a namespace (the ones kustomize's namespace transformer leaves alone).
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
}

problems: list[str] = []


def problem(text: str) -> None:
    problems.append(text)
    print(f"  FAIL {text}")


def ok(text: str) -> None:
    print(f"  ok   {text}")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def load_yaml_docs(path: Path) -> list[dict]:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


# --- 1. compose --------------------------------------------------------------------------


def start_compose_schema_check(tools_python: list[str]) -> subprocess.Popen:
    """check-jsonschema on docker-compose.yml, started early: it runs while the other checks do."""
    args = [*tools_python, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def check_compose(schema_check: subprocess.Popen) -> None:
    print("docker-compose.yml")
    before = len(problems)
    output, _ = schema_check.communicate()
    if schema_check.returncode == 0:
        ok("valid against the compose specification")
    else:
        problem("docker-compose.yml does not match the compose specification:\n" + output)
    compose = load_yaml_docs(COMPOSE)[0]
    services = compose.get("services", {})
    secrets = compose.get("secrets", {})
    volumes = compose.get("volumes", {}) or {}
    for name, service in services.items():
        for dep in service.get("depends_on", {}) or {}:
            if dep not in services:
                problem(f"compose service {name} depends on {dep}, which is not defined")
        for secret in service.get("secrets", []) or []:
            secret_name = secret if isinstance(secret, str) else secret.get("source")
            if secret_name not in secrets:
                problem(f"compose service {name} uses secret {secret_name}, which is not defined")
        for env_file in service.get("env_file", []) or []:
            path = env_file if isinstance(env_file, str) else env_file.get("path")
            required = True if isinstance(env_file, str) else env_file.get("required", True)
            target = ROOT / path
            if required and not target.exists():
                problem(f"compose service {name} requires env file {path}, which does not exist")
            if not required and not target.exists() and not target.with_name(target.name + ".example").exists():
                problem(f"compose service {name}: optional env file {path} has no {path}.example to start from")
        for mount in service.get("volumes", []) or []:
            source = mount.split(":", 1)[0] if isinstance(mount, str) else mount.get("source")
            if source.startswith("."):
                if not (ROOT / source).exists():
                    problem(f"compose service {name} mounts {source}, which does not exist")
            elif source not in volumes:
                problem(f"compose service {name} mounts volume {source}, which is not defined")
    for name, secret in secrets.items():
        file = secret.get("file", "")
        default = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", file)
        if not (ROOT / default).exists():
            problem(f"compose secret {name}: its default file {default} does not exist")
    if len(problems) == before:
        ok("services, secrets, env files and mounts refer to things that exist")


# --- 2. kubernetes: rendering ------------------------------------------------------------

# Lists a strategic merge patch merges item by item, and the key that identifies an item.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
}
SUPPORTED_KUSTOMIZATION_KEYS = {
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "images",
    "configMapGenerator",
    "generatorOptions",
    "patches",
}


def strategic_merge(base, patch, field: str | None = None):
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = strategic_merge(merged[key], value, key)
            else:
                merged[key] = value
        return merged
    if isinstance(base, list) and isinstance(patch, list) and field in MERGE_KEYS:
        key = MERGE_KEYS[field]
        merged = [copy.deepcopy(item) for item in base]
        for item in patch:
            for i, existing in enumerate(merged):
                if existing.get(key) == item.get(key):
                    merged[i] = strategic_merge(existing, item, None)
                    break
            else:
                merged.append(item)
        return merged
    return patch


def doc_key(doc: dict) -> tuple:
    meta = doc.get("metadata", {})
    return (doc.get("kind"), meta.get("namespace"), meta.get("name"))


def render(directory: Path) -> list[dict]:
    """Renders the kustomization in `directory` with the features peoplesync uses."""
    path = directory / "kustomization.yaml"
    kustomization = load_yaml_docs(path)[0]
    unsupported = set(kustomization) - SUPPORTED_KUSTOMIZATION_KEYS
    if unsupported:
        raise ValueError(
            f"{rel(path)} uses {sorted(unsupported)}, which the fallback renderer does not know; "
            "install kubectl or extend scripts/check_deploy.py"
        )
    docs: list[dict] = []
    for resource in kustomization.get("resources", []):
        target = directory / resource
        if target.is_dir():
            docs.extend(render(target))
        else:
            docs.extend(load_yaml_docs(target))
    options = kustomization.get("generatorOptions", {}) or {}
    for generator in kustomization.get("configMapGenerator", []) or []:
        if not options.get("disableNameSuffixHash") and generator.get("behavior", "create") == "create":
            raise ValueError(f"{rel(path)}: name-hashed generators are not supported by the fallback renderer")
        data: dict[str, str] = {}
        for entry in generator.get("files", []) or []:
            key, _, file = entry.partition("=") if "=" in entry else (Path(entry).name, "", entry)
            data[key] = (directory / file).read_text()
        for literal in generator.get("literals", []) or []:
            key, _, value = literal.partition("=")
            data[key] = value
        behavior = generator.get("behavior", "create")
        existing = [d for d in docs if d.get("kind") == "ConfigMap" and d["metadata"]["name"] == generator["name"]]
        if behavior == "create":
            docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data})
        elif not existing:
            raise ValueError(f"{rel(path)}: configMapGenerator {generator['name']} ({behavior}) has no base to {behavior}")
        elif behavior == "merge":
            existing[0].setdefault("data", {}).update(data)
        else:
            existing[0]["data"] = data
    for entry in kustomization.get("patches", []) or []:
        if "target" in entry:
            raise ValueError(f"{rel(path)}: patches with a target are not supported by the fallback renderer")
        patch_docs = load_yaml_docs(directory / entry["path"]) if "path" in entry else [yaml.safe_load(entry["patch"])]
        for patch in patch_docs:
            if not isinstance(patch, dict):
                raise ValueError(f"{rel(path)}: only strategic merge patches are supported by the fallback renderer")
            matches = [
                i
                for i, d in enumerate(docs)
                if d.get("kind") == patch.get("kind") and d["metadata"]["name"] == patch["metadata"]["name"]
            ]
            if len(matches) != 1:
                raise ValueError(f"{rel(path)}: patch {entry} matches {len(matches)} resources, not 1")
            docs[matches[0]] = strategic_merge(docs[matches[0]], patch)
    namespace = kustomization.get("namespace")
    if namespace:
        for doc in docs:
            if doc.get("kind") not in CLUSTER_SCOPED:
                doc.setdefault("metadata", {})["namespace"] = namespace
    for image in kustomization.get("images", []) or []:
        for doc in docs:
            pod = doc.get("spec", {}).get("template", {}).get("spec", {})
            for container in pod.get("containers", []) + pod.get("initContainers", []):
                name, _, tag = container["image"].partition(":")
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag or 'latest')}"
    return docs


def kustomization_dirs() -> list[Path]:
    return sorted(p.parent for p in KUBE.rglob("kustomization.yaml"))


def render_all() -> dict[Path, list[dict]]:
    # CHECK_DEPLOY_RENDERER=fallback renders without kubectl even where it is installed.
    kubectl = None if os.environ.get("CHECK_DEPLOY_RENDERER") == "fallback" else shutil.which("kubectl")
    rendered: dict[Path, list[dict]] = {}
    # Every kubectl at once: the renderings are independent.
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    kubectls = {d: subprocess.Popen([kubectl, "kustomize", str(d)], **pipes) for d in kustomization_dirs() if kubectl}
    for directory in kustomization_dirs():
        name = rel(directory)
        stdout, stderr = kubectls[directory].communicate() if kubectl else ("", "")
        try:
            ours = render(directory)
        except (ValueError, OSError, KeyError) as err:
            problem(f"{name}: cannot render: {err}")
            continue
        if kubectl:
            if kubectls[directory].returncode != 0:
                problem(f"{name}: kubectl kustomize failed:\n{stderr}")
                continue
            theirs = [d for d in yaml.safe_load_all(stdout) if d is not None]
            if {doc_key(d): d for d in theirs} != {doc_key(d): d for d in ours}:
                problem(f"{name}: the fallback renderer and kubectl kustomize disagree; fix scripts/check_deploy.py")
            rendered[directory] = theirs
            ok(f"{name}: rendered with kubectl kustomize ({len(theirs)} documents; fallback renderer agrees)")
        else:
            rendered[directory] = ours
            ok(f"{name}: rendered with the fallback renderer ({len(ours)} documents; no kubectl to compare with)")
    return rendered


# --- 2. kubernetes: validation -----------------------------------------------------------


def check_scaled_object(doc: dict, context: str, docs: list[dict]) -> None:
    """KEDA's ScaledObject, checked by hand: kubernetes-validate has no schema for CRDs."""
    name = f"{context}: ScaledObject {doc['metadata'].get('name')}"
    if doc.get("apiVersion") != "keda.sh/v1alpha1":
        problem(f"{name}: apiVersion must be keda.sh/v1alpha1")
    spec = doc.get("spec", {})
    allowed = {
        "scaleTargetRef",
        "minReplicaCount",
        "maxReplicaCount",
        "pollingInterval",
        "cooldownPeriod",
        "idleReplicaCount",
        "initialCooldownPeriod",
        "advanced",
        "fallback",
        "triggers",
    }
    for key in set(spec) - allowed:
        problem(f"{name}: unknown field spec.{key}")
    target = spec.get("scaleTargetRef", {}).get("name")
    deployments = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Deployment"}
    if target not in deployments:
        problem(f"{name}: scaleTargetRef {target!r} is not a Deployment of this rendering")
    for key in ("minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod"):
        if key in spec and not isinstance(spec[key], int):
            problem(f"{name}: spec.{key} must be an integer")
    if spec.get("minReplicaCount", 0) > spec.get("maxReplicaCount", 100):
        problem(f"{name}: minReplicaCount is above maxReplicaCount")
    if target in deployments and "replicas" in deployments[target]["spec"]:
        problem(f"{name}: Deployment {target} still sets replicas, which would fight the autoscaler")
    integrations = loader_integrations(docs)
    triggers = spec.get("triggers") or []
    if not triggers:
        problem(f"{name}: no triggers")
    known = {"natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold", "activationLagThreshold", "useHttps"}
    required = {"natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold"}
    for trigger in triggers:
        if trigger.get("type") != "nats-jetstream":
            problem(f"{name}: trigger type {trigger.get('type')!r} is not nats-jetstream")
            continue
        meta = trigger.get("metadata", {})
        for key in set(meta) - known:
            problem(f"{name}: unknown nats-jetstream metadata {key}")
        for key in required - set(meta):
            problem(f"{name}: nats-jetstream metadata {key} is missing")
        for key, value in meta.items():
            if not isinstance(value, str):
                problem(f"{name}: metadata {key} must be a string (quote it)")
        if meta.get("stream") != "PEOPLESYNC_WORKERS":
            problem(f"{name}: stream must be PEOPLESYNC_WORKERS, not {meta.get('stream')!r}")
        consumer = meta.get("consumer", "")
        if integrations is not None and consumer.removeprefix("loader-") not in integrations:
            problem(
                f"{name}: consumer {consumer!r} is not loader-<integration> for an integration of "
                f"loader.toml ({sorted(integrations)})"
            )
    for integration in integrations or []:
        if not any(t.get("metadata", {}).get("consumer") == f"loader-{integration}" for t in triggers):
            problem(f"{name}: integration {integration} has no trigger on consumer loader-{integration}")


def loader_integrations(docs: list[dict]) -> set[str] | None:
    for doc in docs:
        if doc.get("kind") == "ConfigMap" and "loader.toml" in (doc.get("data") or {}):
            return set(tomllib.loads(doc["data"]["loader.toml"]).get("integrations", ["sage-people"]))
    return None


def check_references(docs: list[dict], context: str, secret_keys: set[str]) -> None:
    """What the API server accepts but a pod would trip over: missing ConfigMaps, secret keys,
    named ports, selectors that select nothing."""
    config_maps = {d["metadata"]["name"] for d in docs if d.get("kind") == "ConfigMap"}
    pods = []
    for doc in docs:
        if doc.get("kind") != "Deployment":
            continue
        name = f"{context}: Deployment {doc['metadata']['name']}"
        template = doc["spec"]["template"]
        pods.append(template["metadata"].get("labels", {}))
        selector = doc["spec"]["selector"]["matchLabels"]
        if any(template["metadata"].get("labels", {}).get(k) != v for k, v in selector.items()):
            problem(f"{name}: its selector does not select its own pods")
        spec = template["spec"]
        for volume in spec.get("volumes", []):
            if "configMap" in volume and volume["configMap"]["name"] not in config_maps:
                problem(f"{name}: volume {volume['name']} uses ConfigMap {volume['configMap']['name']}, not in this rendering")
            if "secret" in volume:
                for item in volume["secret"].get("items", []):
                    if item["key"] not in secret_keys:
                        problem(f"{name}: secret key {item['key']} is not in deploy/kubernetes/secret.example.yaml")
        for container in spec["containers"]:
            # What the referenced ConfigMaps set is checked against the programs in section 6;
            # that they exist is checked here, for every container and without the programs.
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef", {}).get("name")
                if ref and ref not in config_maps:
                    problem(f"{name}: envFrom ConfigMap {ref} is not in this rendering")
            ports = {p.get("name") for p in container.get("ports", [])} | {p["containerPort"] for p in container.get("ports", [])}
            for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
                probe = container.get(probe_name)
                if not probe:
                    problem(f"{name}: container {container['name']} has no {probe_name}")
                    continue
                for kind in ("httpGet", "grpc", "tcpSocket"):
                    if kind in probe and probe[kind]["port"] not in ports:
                        problem(f"{name}: {probe_name} uses port {probe[kind]['port']}, not a port of the container")
            context_sc = container.get("securityContext", {})
            if not context_sc.get("readOnlyRootFilesystem") or context_sc.get("allowPrivilegeEscalation") is not False:
                problem(f"{name}: container {container['name']} must have a read-only root fs and no privilege escalation")
            if not spec.get("securityContext", {}).get("runAsNonRoot"):
                problem(f"{name}: pods must run as non-root")
            if "limits" not in container.get("resources", {}) or "requests" not in container.get("resources", {}):
                problem(f"{name}: container {container['name']} needs resource requests and limits")
    for doc in docs:
        if doc.get("kind") in ("Service", "PodDisruptionBudget"):
            selector = doc["spec"]["selector"]
            selector = selector.get("matchLabels", selector) if doc["kind"] == "PodDisruptionBudget" else selector
            if not any(all(labels.get(k) == v for k, v in selector.items()) for labels in pods):
                problem(f"{context}: {doc['kind']} {doc['metadata']['name']} selects no pods")


# CRDs kubernetes-validate has no schema for; each is checked by shape here instead.
CRD_GROUPS = ("keda.sh/", "monitoring.coreos.com/")


def check_kubernetes() -> dict[str, list[dict]]:
    """Validates every kustomize rendering, and returns them."""
    print("Kubernetes manifests")
    rendered = {rel(directory): docs for directory, docs in render_all().items()}
    secret_template = KUBE / "secret.example.yaml"
    secret_docs = load_yaml_docs(secret_template)
    validate_renderings(rendered, [(rel(secret_template), d) for d in secret_docs])
    return rendered


def validate_renderings(rendered: dict[str, list[dict]], extra: list[tuple[str, dict]]) -> None:
    """The one schema check of every rendering (kustomize or Helm): strict kubernetes-validate
    for built-in kinds, by shape for the CRDs, and the references a pod would trip over."""
    import kubernetes_validate

    secret_docs = load_yaml_docs(KUBE / "secret.example.yaml")
    secret_keys = set(secret_docs[0].get("stringData", {})) | set(secret_docs[0].get("data", {}))
    to_validate = list(extra)
    for context, docs in rendered.items():
        to_validate += [(context, d) for d in docs]
        check_references(docs, context, secret_keys)
        for doc in docs:
            if doc.get("kind") == "ScaledObject":
                check_scaled_object(doc, context, docs)
            if doc.get("kind") in ("PodMonitor", "PrometheusRule"):
                check_monitoring(doc, context, docs)
    counted = 0
    for context, doc in to_validate:
        if doc.get("apiVersion", "").startswith(CRD_GROUPS):
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                path = ".".join(str(p) for p in err.path)
                problem(f"{context}: {doc.get('kind')} {doc['metadata'].get('name')} (Kubernetes {version}): {path}: {err.message}")
            except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as err:
                problem(f"{context}: {doc.get('kind')} {doc['metadata'].get('name')}: no schema: {err}")
        counted += 1
    ok(f"{counted} documents validated strictly against Kubernetes {' and '.join(KUBE_VERSIONS)}")
    crds = sum(1 for docs in rendered.values() for d in docs if d.get("apiVersion", "").startswith(CRD_GROUPS))
    ok(f"{crds} ScaledObject/PodMonitor/PrometheusRule document(s) checked by shape (kubernetes-validate has no CRD schemas)")


ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"


def check_monitoring(doc: dict, context: str, docs: list[dict]) -> None:
    """Prometheus Operator resources: a PodMonitor selects the peoplesync pods on their `http`
    port; a PrometheusRule holds exactly the rules of deploy/prometheus/alerts.yml."""
    name = f"{context}: {doc['kind']} {doc['metadata'].get('name')}"
    if doc.get("apiVersion") != "monitoring.coreos.com/v1":
        problem(f"{name}: apiVersion must be monitoring.coreos.com/v1")
    spec = doc.get("spec", {})
    if doc["kind"] == "PodMonitor":
        selector = spec.get("selector", {}).get("matchLabels", {})
        pods = [d["spec"]["template"]["metadata"].get("labels", {}) for d in docs if d.get("kind") == "Deployment"]
        selected = [p for p in pods if all(p.get(k) == v for k, v in selector.items())]
        if len(selected) != len(pods) or not pods:
            problem(f"{name}: selects {len(selected)} of the {len(pods)} peoplesync Deployments' pods")
        endpoints = spec.get("podMetricsEndpoints") or []
        if not any(e.get("port") == "http" and e.get("path", "/metrics") == "/metrics" for e in endpoints):
            problem(f"{name}: needs a podMetricsEndpoint on port http, path /metrics")
    else:
        expected = load_yaml_docs(ALERTS)[0]["groups"]
        if spec.get("groups") != expected:
            problem(f"{name}: spec.groups differ from {rel(ALERTS)} (copy its groups verbatim)")


def check_helm() -> dict[str, list[dict]]:
    """Lints and validates the Helm chart's renderings, and returns them."""
    print("Helm chart")
    import helm_python as helm

    chart = ROOT / "deploy" / "helm" / "peoplesync"
    everything = {
        "keda": {"enabled": True},
        "podMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "integrationToml": (ROOT / "deploy" / "kubernetes" / "base" / "config" / "sage-people.toml").read_text(),
        "env": {"PEOPLESYNC_LOADER__BATCH__SIZE": "200", "HTTPS_PROXY": "http://proxy:3128"},
    }
    renderings: dict[str, list[dict]] = {}
    for label, values in (("defaults", None), ("every option on", everything)):
        for version in KUBE_VERSIONS:
            report = helm.lint(str(chart), values, strict=True, kube_version=f"v{version}")
            for message in report.get("messages", []):
                if message.get("severity", 0) >= 2:
                    problem(f"helm lint ({label}, Kubernetes {version}): {message.get('path')}: {message.get('error')}")
            for error in report.get("errors", []):
                problem(f"helm lint ({label}): {error}")
        with helm.Chart.load(str(chart)) as loaded:
            manifests = loaded.render(values, name="peoplesync", namespace="peoplesync", is_install=True)
        docs = []
        for text in manifests.values():
            docs += [d for d in yaml.safe_load_all(text) if d]
        renderings[f"{rel(chart)} ({label})"] = docs
    ok(f"helm lint --strict passes for Kubernetes {' and '.join(KUBE_VERSIONS)}, with defaults and every option on")
    validate_renderings(renderings, [])
    return renderings


def check_alert_rules() -> None:
    print("Alert rules (promtool)")
    promtool = shutil.which("promtool")
    if not promtool:
        problem("promtool is not installed (scripts/check-deploy installs Debian's prometheus package)")
        return
    for args in (["check", "rules", str(ALERTS)], ["test", "rules", str(ALERTS.with_name("alerts.test.yml"))]):
        result = subprocess.run([promtool, *args], capture_output=True, text=True, cwd=ALERTS.parent)
        if result.returncode == 0:
            ok(f"promtool {' '.join(args[:2])} {Path(args[2]).name}")
        else:
            problem(f"promtool {' '.join(args[:2])}:\n{result.stdout}{result.stderr}")


# --- 4. Dockerfile -----------------------------------------------------------------------


def check_dockerfile(hadolint: str) -> None:
    print("Dockerfile")
    result = subprocess.run([hadolint, "--failure-threshold", "warning", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    if result.returncode == 0:
        ok("hadolint finds nothing at warning level or above")
    else:
        problem("hadolint:\n" + result.stdout + result.stderr)


# --- 5. dashboards and alerts ------------------------------------------------------------


def exported_metrics() -> set[str]:
    source = (ROOT / "crates" / "runtime" / "src" / "metrics.rs").read_text()
    return set(re.findall(r'pub const [A-Z_]+: &str = "(peoplesync_[a-z_]+)"', source))


def metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\b(peoplesync_[a-z_]+)", expr))
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def check_observability() -> None:
    print("Grafana dashboard and Prometheus files")
    known = exported_metrics()
    if not known:
        problem("no metric names found in crates/runtime/src/metrics.rs")
    expressions: list[tuple[str, str]] = []
    for dashboard in sorted((ROOT / "deploy" / "grafana").rglob("*.json")):
        data = json.loads(dashboard.read_text())
        for panel in data.get("panels", []):
            for target in panel.get("targets", []):
                expressions.append((f"{rel(dashboard)} panel {panel.get('title')!r}", target.get("expr", "")))
    for file in sorted((ROOT / "deploy" / "prometheus").glob("*.yml")) + sorted((ROOT / "deploy" / "grafana").rglob("*.yml")):
        docs = load_yaml_docs(file)
        for group in (docs[0] or {}).get("groups", []) if docs else []:
            for rule in group.get("rules", []):
                expressions.append((f"{rel(file)} rule {rule.get('alert')}", rule.get("expr", "")))
    for where, expr in expressions:
        for name in metric_names(expr) - known:
            problem(f"{where}: metric {name} is not exported by the services (crates/runtime/src/metrics.rs)")
    ok(f"{len(expressions)} queries name only exported metrics")


def main() -> int:
    schema_check = start_compose_schema_check([sys.executable])
    deploy_selftest.run(problem, ok, render)
    check_compose(schema_check)
    renderings = check_kubernetes()
    renderings |= check_helm()
    check_dockerfile(os.environ.get("HADOLINT", "hadolint"))
    check_observability()
    check_alert_rules()
    deploy_settings.check_settings(renderings, problem, ok)
    if problems:
        print(f"\ncheck-deploy: {len(problems)} problem(s)")
        return 1
    print("\ncheck-deploy: all deployment files are valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
