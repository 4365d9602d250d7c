"""deploy/: the container image and the Kubernetes manifests, checked offline.

- Kubernetes (deploy/k8s: a kustomize base and the overlays dev and production). Every YAML
  document parses. Each of base, dev and production is rendered by `render()` below, a small
  kustomize that does what these kustomizations use (resources, namespace, images,
  strategic-merge patches) and refuses anything else; where `kubectl` is installed, `kubectl
  kustomize` must render the same objects. Every rendered object is validated against the
  Kubernetes JSON schemas of K8S_VERSIONS in strict mode (kubernetes-validate; unknown fields
  are errors, and so is a kind without a schema).
- What a schema cannot see: the probes and container ports against the config's `listen`, the
  metrics port and scrape annotations against `metrics_listen`, terminationGracePeriodSeconds
  against drain_seconds plus the preStop pause, Services, PodDisruptionBudget, NetworkPolicy
  and spread constraints selecting the pods, the HorizontalPodAutoscaler's target, volumes and
  mounts, every file path of the config inside the volume that provides it, the Secrets named
  in deploy/README.md, the security context (non-root as the image's user, read-only root
  filesystem, no privilege escalation, no capabilities), resources against the config's
  budgets and threads.
- The ConfigMap's explaind.toml parses (tomllib), holds only keys the daemon knows (the fields
  of src/config.rs), and the daemon accepts it: it is started with that file, paths moved to a
  temporary directory and a self-signed certificate where it has TLS, answers health SERVING,
  refuses a call without a token, serves /metrics, and on SIGTERM drains and exits 0 with an
  audit log that verifies.
- deploy/Dockerfile, statically: pinned base images, build and runtime stages, the ONNX Runtime
  library from the hash-checked wheel of scripts/setup/requirements.txt, a non-root user, the paths
  the manifests use. The image itself is built (and run read-only, and stopped with SIGTERM)
  only where docker or podman runs and can pull the base images; anywhere else that test is
  skipped with a reason that says the image build did not run.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import time
import tomllib
import urllib.request
from pathlib import Path

import grpc
import pytest
import yaml

import daemon_proc
from paths import MODELS_DIR, REPO

K8S = REPO / "deploy" / "k8s"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
DEPLOY_README = REPO / "deploy" / "README.md"
REQUIREMENTS = REPO / "scripts" / "setup" / "requirements.txt"
CONFIG_RS = REPO / "src" / "config.rs"
ORT_LIB = REPO / ".ort" / "libonnxruntime.so"

# The oldest Kubernetes the manifests support (native gRPC probes are GA since 1.27; the
# StatefulSet PVC retention policy and the PDB's unhealthyPodEvictionPolicy are on by default in
# 1.31) and the newest whose schemas the pinned kubernetes-validate ships.
K8S_VERSIONS = ("1.31", "1.37")
OVERLAYS = ("base", "overlays/dev", "overlays/production")
CONFIG_KEY = "explaind.toml"

# --------------------------------------------------------------------------------------------
# Rendering: a small kustomize
# --------------------------------------------------------------------------------------------

# Strategic-merge-patch merge keys of the lists these manifests patch (the Kubernetes API's
# patchMergeKey); any other list is replaced whole, as the API does for lists without one.
MERGE_KEYS = {
    "containers": ("name",),
    "initContainers": ("name",),
    "volumes": ("name",),
    "env": ("name",),
    "volumeMounts": ("mountPath",),
    "ports": ("containerPort", "port"),  # a container's ports, a Service's ports
    "imagePullSecrets": ("name",),
}
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}


def load_docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def merge_patch(base, patch):
    """A strategic merge patch: maps merge, null deletes, lists with a merge key merge by it
    (an element with `$patch: delete` removes its match), other lists are replaced."""
    if not isinstance(base, dict) or not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_patch(out[key], value)
        elif isinstance(value, list) and isinstance(out.get(key), list) and key in MERGE_KEYS:
            out[key] = _merge_list(out[key], value, MERGE_KEYS[key])
        else:
            out[key] = copy.deepcopy(value)
    return out


def _merge_list(base: list, patch: list, keys: tuple[str, ...]) -> list:
    key = next((k for k in keys if all(isinstance(i, dict) and k in i for i in patch)), None)
    if key is None:
        return copy.deepcopy(patch)
    out = copy.deepcopy(base)
    for item in patch:
        at = next((i for i, b in enumerate(out) if isinstance(b, dict) and b.get(key) == item[key]),
                  None)
        if item.get("$patch") == "delete":
            if at is not None:
                del out[at]
        elif at is None:
            out.append(copy.deepcopy(item))
        else:
            out[at] = merge_patch(out[at], item)
    return out


def _pod_specs(doc: dict) -> list[dict]:
    spec = doc.get("spec", {})
    return [spec["template"]["spec"]] if "template" in spec else []


def render(directory: Path) -> list[dict]:
    """`kubectl kustomize DIRECTORY` for what these kustomizations use."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KUSTOMIZATION_KEYS
    assert not unknown, f"{directory}: render() does not implement {sorted(unknown)}"
    docs: list[dict] = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        docs += render(path) if path.is_dir() else load_docs(path)
    for patch in kustomization.get("patches", []):
        assert set(patch) == {"path"}, f"{directory}: only `patches: - path:` is implemented"
        for doc in load_docs(directory / patch["path"]):
            ident = (doc["apiVersion"], doc["kind"], doc["metadata"]["name"])
            hits = [i for i, d in enumerate(docs)
                    if (d["apiVersion"], d["kind"], d["metadata"]["name"]) == ident]
            assert len(hits) == 1, f"{directory}/{patch['path']}: patch target {ident} not found once"
            docs[hits[0]] = merge_patch(docs[hits[0]], doc)
    if "namespace" in kustomization:
        for doc in docs:
            doc["metadata"]["namespace"] = kustomization["namespace"]
    for image in kustomization.get("images", []):
        for doc in docs:
            for pod in _pod_specs(doc):
                for c in pod.get("containers", []) + pod.get("initContainers", []):
                    name, _, tag = c["image"].partition(":")
                    if name == image["name"]:
                        c["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
    return docs


_RENDERED: dict[str, list[dict]] = {}


def rendered(overlay: str) -> list[dict]:
    if overlay not in _RENDERED:
        _RENDERED[overlay] = render(K8S / overlay)
    return copy.deepcopy(_RENDERED[overlay])


def the(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def all_of(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def config_of(docs: list[dict]) -> dict:
    """The daemon's config: the ConfigMap file the container's `--config` names."""
    sts = the(docs, "StatefulSet")
    container = main_container(sts)
    args = container.get("args", [])
    assert args[:1] == ["serve"] and "--config" in args, f"container args {args}"
    config_path = args[args.index("--config") + 1]
    volume = volume_at(sts, container, config_path)
    assert "configMap" in volume, f"--config {config_path} is not in a ConfigMap volume"
    cm = the(docs, "ConfigMap", volume["configMap"]["name"])
    return tomllib.loads(cm["data"][Path(config_path).name])


def pod_spec(sts: dict) -> dict:
    return sts["spec"]["template"]["spec"]


def main_container(sts: dict) -> dict:
    return next(c for c in pod_spec(sts)["containers"] if c["name"] == "explaind")


def all_containers(sts: dict) -> list[dict]:
    pod = pod_spec(sts)
    return pod.get("initContainers", []) + pod["containers"]


def volume_at(sts: dict, container: dict, path: str) -> dict:
    """The volume (or volumeClaimTemplate) that provides `path` in `container`: the mount with
    the longest mountPath that contains it."""
    mounts = [m for m in container.get("volumeMounts", [])
              if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert mounts, f"{path} is on no volume of container {container['name']}"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    volumes = {v["name"]: v for v in pod_spec(sts).get("volumes", [])}
    claims = {c["metadata"]["name"]: {"name": c["metadata"]["name"], "claimTemplate": c}
              for c in sts["spec"].get("volumeClaimTemplates", [])}
    volume = volumes.get(mount["name"]) or claims.get(mount["name"])
    assert volume is not None, f"mount {mount['name']} has no volume"
    return {**volume, "_mount": mount}


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def host_of(address: str) -> str:
    return address.rsplit(":", 1)[0]


def container_port(container: dict, ref) -> int:
    """A probe's or Service's port: a number, or the name of a container port."""
    if isinstance(ref, int):
        return ref
    named = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == ref]
    assert named, f"no container port named {ref!r}"
    return named[0]


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# --------------------------------------------------------------------------------------------
# The manifests: parsing, rendering, schemas
# --------------------------------------------------------------------------------------------


def test_every_yaml_document_under_deploy_k8s_parses():
    files = sorted(K8S.rglob("*.yaml"))
    assert len(files) >= 10, files
    for path in files:
        docs = load_docs(path)
        assert docs, f"{path}: no document"
        for doc in docs:
            assert isinstance(doc, dict), f"{path}: a document that is not a mapping"
            assert {"apiVersion", "kind"} <= set(doc), f"{path}: a document without apiVersion/kind"


def test_every_file_is_part_of_a_kustomization():
    used = set()
    for kustomization in K8S.rglob("kustomization.yaml"):
        used.add(kustomization)
        k = yaml.safe_load(kustomization.read_text())
        for ref in k.get("resources", []) + [p["path"] for p in k.get("patches", [])]:
            path = (kustomization.parent / ref).resolve()
            assert path.exists(), f"{kustomization}: {ref} does not exist"
            used.add(path / "kustomization.yaml" if path.is_dir() else path)
    stray = sorted(str(p.relative_to(K8S)) for p in K8S.rglob("*.yaml") if p.resolve() not in used)
    assert not stray, f"YAML under deploy/k8s that no kustomization uses: {stray}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_small_kustomize_renders_what_kubectl_kustomize_renders(overlay):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: render() was not compared with `kubectl kustomize`")
    res = subprocess.run([kubectl, "kustomize", str(K8S / overlay)], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, f"kubectl kustomize {overlay}:\n{res.stderr}"
    theirs = [d for d in yaml.safe_load_all(res.stdout) if d is not None]

    def keyed(docs):
        return {(d["kind"], d["metadata"]["name"]): json.dumps(d, sort_keys=True) for d in docs}

    ours = keyed(rendered(overlay))
    assert keyed(theirs) == ours


def _schema_errors(docs: list[dict], version: str) -> list[str]:
    import kubernetes_validate as kv

    errors = []
    for doc in docs:
        what = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as e:
            errors.append(f"{what}: {'.'.join(str(p) for p in e.path)}: {e.message}")
        except kv.SchemaNotFoundError as e:
            errors.append(f"{what}: {e.message}")
    return errors


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_kubernetes_schemas(overlay, version):
    docs = rendered(overlay)
    kinds = {d["kind"] for d in docs}
    assert {"StatefulSet", "Service", "ConfigMap", "PodDisruptionBudget",
            "HorizontalPodAutoscaler", "NetworkPolicy", "ServiceAccount"} <= kinds, kinds
    errors = _schema_errors(docs, version)
    assert not errors, "\n".join(errors)


def test_strict_validation_catches_a_misspelt_field():
    """The validation above is strict: an unknown field fails it (a check that checks)."""
    docs = rendered("base")
    sts = the(docs, "StatefulSet")
    pod = pod_spec(sts)
    pod["terminationGracePeriodSecond"] = pod.pop("terminationGracePeriodSeconds")
    errors = _schema_errors([sts], K8S_VERSIONS[0])
    assert errors and "terminationGracePeriodSecond" in errors[0], errors


# --------------------------------------------------------------------------------------------
# What the schemas cannot see
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_workload_is_a_statefulset_with_an_audit_volume_per_replica(overlay):
    docs = rendered(overlay)
    assert not all_of(docs, "Deployment"), "the audit log needs a volume per replica: StatefulSet"
    sts = the(docs, "StatefulSet")
    config = config_of(docs)
    assert "replicas" not in sts["spec"], "the HorizontalPodAutoscaler owns replicas"
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain", "whenScaled": "Retain"}, "audit logs must outlive replicas"
    audit = volume_at(sts, main_container(sts), config["audit"]["dir"])
    assert "claimTemplate" in audit, f"audit.dir {config['audit']['dir']} is not on a per-replica claim"
    assert audit["claimTemplate"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert not audit["_mount"].get("readOnly"), "the audit volume must be writable"
    headless = the(docs, "Service", sts["spec"]["serviceName"])
    assert headless["spec"].get("clusterIP") == "None", "serviceName must name a headless Service"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ports_and_probes_match_the_config(overlay):
    docs = rendered(overlay)
    sts = the(docs, "StatefulSet")
    c = main_container(sts)
    config = config_of(docs)
    grpc_port = port_of(config["server"]["listen"])
    assert host_of(config["server"]["listen"]) == "0.0.0.0", "listen must reach the pod's network"
    assert container_port(c, "grpc") == grpc_port
    tls = "tls" in config
    for name in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = c.get(name)
        assert probe, f"{overlay}: no {name}"
        if tls:
            # The kubelet's gRPC probe speaks plaintext only; against a TLS port it always fails.
            assert "grpc" not in probe, f"{name}: a gRPC probe cannot reach a TLS-only port"
            assert "tcpSocket" in probe, f"{name}: TLS port, expected a TCP probe"
            assert container_port(c, probe["tcpSocket"]["port"]) == grpc_port, name
        else:
            assert "grpc" in probe, f"{name}: without TLS the gRPC health probe works: use it"
            assert probe["grpc"]["port"] == grpc_port, name
            assert probe["grpc"].get("service", "") == "", "the daemon reports the overall status"
    # A liveness failure must not kill a pod while its models load.
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 60


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_metrics_port_and_scrape_annotations(overlay):
    docs = rendered(overlay)
    sts = the(docs, "StatefulSet")
    c = main_container(sts)
    config = config_of(docs)
    metrics = config["server"].get("metrics_listen")
    assert metrics, "metrics_listen is not set: no /metrics to scrape"
    assert host_of(metrics) == "0.0.0.0", "Prometheus scrapes the pod's address"
    annotations = sts["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == port_of(metrics) == container_port(c, "metrics")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_grace_period_covers_the_prestop_pause_and_the_drain(overlay):
    docs = rendered(overlay)
    sts = the(docs, "StatefulSet")
    config = config_of(docs)
    drain = config["server"].get("drain_seconds")
    assert drain is not None, "set drain_seconds explicitly: the grace period is sized on it"
    pre_stop = main_container(sts).get("lifecycle", {}).get("preStop", {})
    pause = 0
    if pre_stop:
        command = pre_stop["exec"]["command"]
        assert command[0] == "sleep" and len(command) == 2, command
        pause = int(command[1])
    grace = pod_spec(sts)["terminationGracePeriodSeconds"]
    assert grace > pause + drain, f"grace {grace} s <= preStop {pause} s + drain_seconds {drain}"
    # The liveness probe must not kill a draining pod before the drain is over.
    live = main_container(sts)["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] >= drain


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_budget_policy_and_autoscaler_select_the_pods(overlay):
    docs = rendered(overlay)
    sts = the(docs, "StatefulSet")
    labels = sts["spec"]["template"]["metadata"]["labels"]
    selector = sts["spec"]["selector"]["matchLabels"]
    assert selects(selector, labels)
    c = main_container(sts)
    grpc_port = port_of(config_of(docs)["server"]["listen"])

    services = all_of(docs, "Service")
    assert len(services) == 2, [s["metadata"]["name"] for s in services]
    for svc in services:
        assert selects(svc["spec"]["selector"], labels), svc["metadata"]["name"]
        for p in svc["spec"]["ports"]:
            assert container_port(c, p["targetPort"]) == grpc_port, svc["metadata"]["name"]

    pdb = the(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == selector

    hpa = the(docs, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        sts["apiVersion"], "StatefulSet", sts["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    for metric in hpa["spec"]["metrics"]:
        if metric["type"] == "Resource" and metric["resource"]["target"]["type"] == "Utilization":
            resource = metric["resource"]["name"]
            for container in pod_spec(sts)["containers"]:
                assert resource in container["resources"]["requests"], (
                    f"HPA on {resource} utilization needs a {resource} request")

    policy = the(docs, "NetworkPolicy")
    assert selects(policy["spec"]["podSelector"]["matchLabels"], labels)
    allowed = {p["port"] for rule in policy["spec"]["ingress"] for p in rule.get("ports", [])}
    metrics_port = port_of(config_of(docs)["server"]["metrics_listen"])
    assert {grpc_port, metrics_port} <= allowed, allowed

    for spread in pod_spec(sts).get("topologySpreadConstraints", []):
        assert selects(spread["labelSelector"]["matchLabels"], labels)

    account = pod_spec(sts)["serviceAccountName"]
    the(docs, "ServiceAccount", account)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_volumes_mounts_and_the_configs_paths_agree(overlay):
    docs = rendered(overlay)
    sts = the(docs, "StatefulSet")
    pod = pod_spec(sts)
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
    mounted = set()
    for container in all_containers(sts):
        for m in container.get("volumeMounts", []):
            assert m["name"] in volumes or m["name"] in claims, (
                f"{container['name']}: mount {m['name']} has no volume")
            mounted.add(m["name"])
    assert set(volumes) | claims == mounted, f"volumes nobody mounts: {(set(volumes) | claims) - mounted}"
    for v in volumes.values():
        assert "hostPath" not in v, f"volume {v['name']}: no hostPath"
        if "configMap" in v:
            the(docs, "ConfigMap", v["configMap"]["name"])

    config = config_of(docs)
    c = main_container(sts)
    cm_volume = volume_at(sts, c, c["args"][c["args"].index("--config") + 1])
    cm = the(docs, "ConfigMap", cm_volume["configMap"]["name"])
    assert set(cm["data"]) == {CONFIG_KEY}

    # Every file the config names comes from the volume meant for it.
    def secret_file(path: str) -> None:
        volume = volume_at(sts, c, path)
        assert "secret" in volume, f"{path} is not in a Secret volume"
        assert volume["_mount"].get("readOnly"), f"{path}: mount the Secret read-only"
        name = os.path.relpath(path, volume["_mount"]["mountPath"])
        items = volume["secret"].get("items")
        keys = {i["path"] for i in items} if items else {"tls.crt", "tls.key", "ca.crt"}
        assert name in keys, f"{path}: {name} is not a file of Secret {volume['secret']['secretName']}"

    for key in ("cert", "key", "client_ca"):
        if key in config.get("tls", {}):
            secret_file(config["tls"][key])
    secret_file(config["audit"]["key"])
    models = volume_at(sts, c, config["models"]["dir"])
    assert models["name"] == "models" and models["_mount"].get("readOnly")
    for d in config["plugins"].get("dirs", []):
        plugins = volume_at(sts, c, d)
        assert plugins["name"] == "plugins" and plugins["_mount"].get("readOnly")
    # The init container fills the models and plugins volumes.
    init_mounts = {m["name"] for i in pod.get("initContainers", []) for m in i["volumeMounts"]}
    assert {"models", "plugins"} <= init_mounts
    # ONNX Runtime comes from the image (deploy/Dockerfile), not from a volume.
    ort = config["runtime"]["ort_lib"]
    assert ort == dockerfile_ort_lib()
    assert not any(ort.startswith(m["mountPath"].rstrip("/") + "/") for m in c["volumeMounts"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_secrets_it_needs_are_documented(overlay):
    docs = rendered(overlay)
    assert not all_of(docs, "Secret"), "no secret material in the repository"
    readme = DEPLOY_README.read_text()
    sts = the(docs, "StatefulSet")
    names = {v["secret"]["secretName"] for v in pod_spec(sts).get("volumes", []) if "secret" in v}
    assert names
    for name in names:
        assert re.search(rf"kubectl [^\n]*create secret [^\n]*\b{re.escape(name)}\b", readme), (
            f"deploy/README.md does not say how to create the Secret {name}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_as_the_images_non_root_user_on_a_read_only_root(overlay):
    docs = rendered(overlay)
    sts = the(docs, "StatefulSet")
    pod = pod_spec(sts)
    sc = pod["securityContext"]
    uid, gid = dockerfile_user()
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == uid != 0 and sc["runAsGroup"] == gid
    assert sc.get("fsGroup") == gid, "fsGroup makes the audit volume writable by the user"
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    for container in all_containers(sts):
        csc = container["securityContext"]
        assert csc["readOnlyRootFilesystem"] is True, container["name"]
        assert csc["allowPrivilegeEscalation"] is False, container["name"]
        assert csc.get("runAsNonRoot", True) is True, container["name"]
        assert csc.get("runAsUser", uid) != 0, container["name"]
        assert not csc.get("privileged"), container["name"]
        assert csc["capabilities"]["drop"] == ["ALL"] and not csc["capabilities"].get("add")


_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}


def _bytes(quantity: str) -> int:
    m = re.fullmatch(r"(\d+)([KMGT]i?|k)?", str(quantity))
    assert m, f"memory quantity {quantity!r}"
    return int(m.group(1)) * _UNITS.get(m.group(2) or "", 1)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_resources_fit_the_configs_budgets_and_threads(overlay):
    docs = rendered(overlay)
    sts = the(docs, "StatefulSet")
    config = config_of(docs)
    for container in all_containers(sts):
        res = container["resources"]
        assert {"cpu", "memory"} <= set(res["requests"]), container["name"]
        assert "memory" in res["limits"], container["name"]
        assert _bytes(res["limits"]["memory"]) >= _bytes(res["requests"]["memory"])
    c = main_container(sts)
    reserved = (config["server"]["max_inflight_bytes"] + config["cache"]["activation_bytes"]
                + config["cache"]["background_bytes"])
    limit = _bytes(c["resources"]["limits"]["memory"])
    assert limit > reserved, (
        f"memory limit {limit} <= what the config lets the daemon hold ({reserved}): the kernel "
        f"would kill it where it should answer RESOURCE_EXHAUSTED")
    cpu = str(c["resources"]["requests"]["cpu"])
    assert cpu.isdigit(), f"whole cores, to size the thread pool: {cpu}"
    assert config["runtime"]["intra_threads"] == int(cpu), (
        "runtime.intra_threads must equal the CPU request (0 would start one thread per node core)")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_tagged_and_the_same(overlay):
    docs = rendered(overlay)
    sts = the(docs, "StatefulSet")
    images = {c["image"] for c in all_containers(sts)}
    assert len(images) == 1, images
    image = images.pop()
    name, _, tag = image.rpartition(":")
    assert name and tag and tag != "latest" and "/" not in tag, image
    if overlay == "overlays/production":
        k = yaml.safe_load((K8S / overlay / "kustomization.yaml").read_text())
        assert image == f"{k['images'][0]['newName']}:{k['images'][0]['newTag']}"


# --------------------------------------------------------------------------------------------
# The config in the ConfigMap
# --------------------------------------------------------------------------------------------


def daemon_config_fields() -> dict[str, dict[str, str]]:
    """struct name -> {field: type} for every `pub struct` of src/config.rs."""
    text = CONFIG_RS.read_text()
    structs = {}
    for m in re.finditer(r"^pub struct (\w+) \{\n(.*?)^\}", text, re.S | re.M):
        structs[m.group(1)] = dict(re.findall(r"^\s*pub (\w+): ([^\n]+),\s*$", m.group(2), re.M))
    assert {"Config", "ServerConfig", "AuditConfig", "TokenEntry"} <= set(structs), structs.keys()
    return structs


def unknown_keys(value: dict, struct: str, structs: dict, where: str = "") -> list[str]:
    fields = structs[struct]
    out = []
    for key, v in value.items():
        if key not in fields:
            out.append(f"{where}{key}")
            continue
        inner = re.findall(r"\w+", fields[key])[-1]  # Option<TlsConfig> -> TlsConfig
        if inner in structs:
            for item in (v if isinstance(v, list) else [v]):
                out += unknown_keys(item, inner, structs, f"{where}{key}.")
    return out


def test_the_key_checker_knows_the_daemons_keys():
    structs = daemon_config_fields()
    example = tomllib.loads((REPO / "deploy" / "explaind.toml").read_text())
    assert unknown_keys(example, "Config", structs) == []
    assert unknown_keys({"server": {"lissten": "x"}, "auth": {"tokens": [{"nme": "a"}]}},
                        "Config", structs) == ["server.lissten", "auth.tokens.nme"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_configmap_holds_a_config_the_daemon_knows(overlay):
    config = config_of(rendered(overlay))
    assert unknown_keys(config, "Config", daemon_config_fields()) == []
    # The secure settings: callers authenticate, every request is audited and synced.
    assert config["auth"]["tokens"], "no tokens: every caller would have every role"
    assert config["audit"]["fsync_every_ms"] == 0 and config["audit"]["store_inputs"] is False
    if overlay != "overlays/dev":
        assert {"cert", "key"} <= set(config["tls"]), f"{overlay} serves without TLS"


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(v)


def to_toml(config: dict) -> str:
    lines = []
    for section, body in config.items():
        tables = {k: v for k, v in body.items() if isinstance(v, list) and v and isinstance(v[0], dict)}
        plain = {k: v for k, v in body.items() if k not in tables}
        if plain or not tables:
            lines.append(f"[{section}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in plain.items()]
        for key, items in tables.items():
            for item in items:
                lines.append(f"[[{section}.{key}]]")
                lines += [f"{k} = {_toml_value(v)}" for k, v in item.items()]
    text = "\n".join(lines) + "\n"
    assert tomllib.loads(text) == config
    return text


def _self_signed(directory: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: the TLS config was not run by the daemon here")
    cert, key = directory / "tls.crt", directory / "tls.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_daemon_runs_with_the_configmaps_config(overlay, tmp_path):
    """The config as the pod gets it, with its paths moved here: the daemon starts, answers
    health SERVING (over TLS where the config has it), refuses a caller without a token, serves
    /metrics, and on SIGTERM drains and exits 0, its audit log verifying."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from explaind.v1 import explaind_pb2 as pb
    from explaind.v1 import explaind_pb2_grpc as pb_grpc

    if not daemon_proc.binary().is_file():
        pytest.fail(f"explaind binary not found at {daemon_proc.binary()}: build it (cargo build --workspace)")
    if not ORT_LIB.is_file():
        pytest.fail(f"{ORT_LIB} is missing: run scripts/setup/setup.sh")
    config = config_of(rendered(overlay))
    local = copy.deepcopy(config)
    local["server"]["listen"] = "127.0.0.1:0"
    local["server"]["metrics_listen"] = "127.0.0.1:0"
    local["models"]["dir"] = str(MODELS_DIR)
    (tmp_path / "plugins").mkdir()
    local["plugins"]["dirs"] = [str(tmp_path / "plugins")]
    local["runtime"]["ort_lib"] = str(ORT_LIB)
    cert = None
    if "tls" in local:
        cert, key = _self_signed(tmp_path)
        local["tls"] = {"cert": str(cert), "key": str(key)} | (
            {"client_ca": str(cert)} if "client_ca" in local["tls"] else {})
    audit_dir = tmp_path / "audit"
    audit_dir.mkdir()
    local["audit"]["dir"] = str(audit_dir)
    local["audit"]["key"] = str(tmp_path / "audit.key")
    public = daemon_proc.keygen(tmp_path / "audit.key")
    # Every path of the pod's config was moved: none is left pointing into the image.
    left = [f"{s}.{k}" for s, body in local.items() if isinstance(body, dict)
            for k, v in body.items() if isinstance(v, str) and v.startswith("/opt/")]
    assert not left, f"paths the test does not map: {left}"
    config_file = tmp_path / "explaind.toml"
    config_file.write_text(to_toml(local))

    daemon = daemon_proc.start(["serve", "--config", str(config_file)], tmp_path / "log")
    try:
        if cert is None:
            channel = grpc.insecure_channel(daemon.address)
        else:
            creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
            channel = grpc.secure_channel(daemon.address, creds,
                                          options=[("grpc.ssl_target_name_override", "localhost")])
        with channel:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=20)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as refused:
                pb_grpc.ModelServiceStub(channel).ListModels(pb.ListModelsRequest(), timeout=20)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        deadline = time.monotonic() + 20
        url = None
        while url is None and time.monotonic() < deadline:
            url = next((line.split(" on ", 1)[1] for line in daemon.stdout_lines
                        if line.startswith("explaind metrics on ")), None)
            time.sleep(0.1)
        assert url, f"no metrics line on stdout: {daemon.stdout_lines}"
        with urllib.request.urlopen(url, timeout=20) as response:
            assert response.status == 200
        daemon.process.send_signal(signal.SIGTERM)
        code = daemon.process.wait(timeout=config["server"]["drain_seconds"] + 15)
        assert code == 0, f"exit {code} after SIGTERM\n{daemon.stderr_tail()}"
    finally:
        daemon.stop()
    verified = daemon_proc.verify(audit_dir, public)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "panicked" not in daemon.stderr_text()


# --------------------------------------------------------------------------------------------
# The Dockerfile
# --------------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def dockerfile_stages() -> list[dict]:
    """[{"image": resolved base image, "name": stage name, "lines": [(INSTR, args), ...]}]."""
    args, stages = {}, []
    for instr, rest in dockerfile_instructions():
        if instr == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif instr == "FROM":
            parts = rest.split()
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append({"image": image, "name": name, "lines": []})
        else:
            assert stages or instr == "ARG", f"{instr} before the first FROM"
            stages[-1]["lines"].append((instr, rest))
    return stages


def stage(name: str) -> dict:
    return next(s for s in dockerfile_stages() if s["name"] == name)


def runs(s: dict) -> str:
    return "\n".join(rest for instr, rest in s["lines"] if instr == "RUN")


def dockerfile_user() -> tuple[int, int]:
    users = [rest for instr, rest in dockerfile_stages()[-1]["lines"] if instr == "USER"]
    assert users, "the runtime stage sets no USER: it would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and gid.isdigit(), "a numeric USER lets runAsNonRoot verify it"
    return int(uid), int(gid)


def dockerfile_ort_lib() -> str:
    env = " ".join(rest for instr, rest in dockerfile_stages()[-1]["lines"] if instr == "ENV")
    m = re.search(r"ORT_DYLIB_PATH=(\S+)", env)
    assert m, "the runtime stage does not set ORT_DYLIB_PATH"
    return m.group(1)


_DEBIAN = {"bookworm": 12, "trixie": 13}


def _debian_release(image: str) -> int:
    name = image.split("@")[0]
    for codename, number in _DEBIAN.items():
        if codename in name:
            return number
    m = re.fullmatch(r"debian:(\d+)(?:\.\d+)*(?:-slim)?", name)
    assert m, f"cannot tell the Debian release of {image}"
    return int(m.group(1))


def test_dockerfile_stages_and_pinned_base_images():
    stages = dockerfile_stages()
    assert [s["name"] for s in stages] == ["ort", "build", "runtime"]
    for s in stages:
        image = s["image"]
        name, _, digest = image.partition("@")
        repo, _, tag = name.rpartition(":") if ":" in name.split("/")[-1] else (name, "", "")
        assert tag and tag != "latest", f"{image}: pin the base image by version (or digest)"
        assert re.search(r"\d", tag), f"{image}: the tag names no version"
        if digest:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), image
    # Binaries built against one glibc run on the same or a newer one.
    assert _debian_release(stage("build")["image"]) <= _debian_release(stage("runtime")["image"])
    # The onnxruntime wheel is CPython 3.11's.
    assert re.match(r"python:3\.11[.-]", stage("ort")["image"])


def test_dockerfile_builds_the_workspace_and_installs_the_plugins_beside_the_daemon():
    build = runs(stage("build"))
    assert "cargo build --release --workspace" in build
    assert re.search(r"target/release/explaind (/out/bin)/explaind", build)
    assert re.search(r"install [^\n]*target/release/libexplaind_plugin_\*\.so /out/bin/", build)
    copies = [rest for instr, rest in stage("runtime")["lines"] if instr == "COPY"]
    assert "--from=build /out/bin/ /opt/explaind/bin/" in copies
    entry = [rest for instr, rest in stage("runtime")["lines"] if instr == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ["/opt/explaind/bin/explaind"]
    for s in dockerfile_stages():
        for instr, rest in s["lines"]:
            assert not (instr == "ADD" and "://" in rest), "nothing fetched by ADD"
            assert not (instr == "RUN" and re.search(r"\b(curl|wget)\b", rest)), "nothing fetched by hand"


def test_dockerfile_takes_onnx_runtime_from_the_hash_checked_wheel():
    ort = stage("ort")
    copies = [rest for instr, rest in ort["lines"] if instr == "COPY"]
    assert any(c.startswith("scripts/setup/requirements.txt ") for c in copies)
    text = runs(ort)
    assert "--require-hashes" in text and "--no-deps" in text and "--only-binary=:all:" in text
    assert not re.search(r"onnxruntime==\d", DOCKERFILE.read_text()), (
        "the version lives in scripts/setup/requirements.txt only")
    # The Dockerfile's own awk program picks exactly the onnxruntime entry, with its hash.
    awk = shutil.which("awk")
    if awk is None:
        pytest.skip("awk is not installed: the Dockerfile's requirement extraction was not run")
    program = re.search(r"awk '([^']*)' requirements\.txt", text).group(1)
    res = subprocess.run([awk, program, str(REQUIREMENTS)], capture_output=True, text=True, check=True)
    entry = res.stdout.splitlines()
    version = re.search(r"^onnxruntime==(\S+) \\$", REQUIREMENTS.read_text(), re.M).group(1)
    assert entry[0] == f"onnxruntime=={version} \\"
    assert len(entry) >= 2 and all(re.fullmatch(r"\s+--hash=sha256:[0-9a-f]{64}( \\)?", h) for h in entry[1:])
    assert re.search(r"libonnxruntime\.so\.\$\{version\}\"?\s+/out/lib/libonnxruntime\.so", text)
    copies = [rest for instr, rest in stage("runtime")["lines"] if instr == "COPY"]
    assert f"--from=ort /out/lib/libonnxruntime.so {dockerfile_ort_lib()}" in copies


def test_dockerfile_runtime_layout_matches_the_manifests():
    runtime = stage("runtime")["lines"]
    uid, gid = dockerfile_user()
    assert uid != 0 and gid != 0
    assert f"--uid {uid}" in runs(stage("runtime"))
    volumes = set()
    for instr, rest in runtime:
        if instr == "VOLUME":
            volumes |= set(json.loads(rest))
    config = config_of(rendered("base"))
    needed = {config["models"]["dir"], config["audit"]["dir"], *config["plugins"]["dirs"]}
    assert needed <= volumes, f"not declared as volumes: {needed - volumes}"
    exposed = {int(p) for instr, rest in runtime if instr == "EXPOSE" for p in rest.split()}
    assert {port_of(config["server"]["listen"]), port_of(config["server"]["metrics_listen"])} <= exposed
    # The image's own command serves on all interfaces, from the volumes.
    cmd = json.loads(next(rest for instr, rest in runtime if instr == "CMD"))
    assert cmd[0] == "serve" and cmd[cmd.index("--listen") + 1].startswith("0.0.0.0:")
    assert cmd[cmd.index("--models") + 1] == config["models"]["dir"]


def test_dockerignore_keeps_build_outputs_out_and_the_sources_in():
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def ignored(path: str) -> bool:
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        return any(fnmatch.fnmatch(p, pat) or fnmatch.fnmatch(p, pat.removeprefix("**/"))
                   for pat in patterns for p in prefixes)

    for out in ("target", ".git", ".venv", ".ort", "tests/python/gen"):
        assert ignored(out), f"{out} is sent to the image build"
    for needed in ("Cargo.toml", "build.rs", "src/main.rs", "crates/abi/Cargo.toml",
                   "plugins/occlusion/Cargo.toml", "tests/plugins/misbehaving/Cargo.toml",
                   "proto/explaind/v1/explaind.proto", "models/README.md",
                   "scripts/setup/requirements.txt"):
        assert (REPO / needed).exists(), needed
        assert not ignored(needed), f"{needed} is left out of the build context"


# --------------------------------------------------------------------------------------------
# The image build, where it can run
# --------------------------------------------------------------------------------------------

NOT_BUILT = "the container image was NOT built here, so deploy/Dockerfile is untested by a build"


def _container_engine() -> str:
    reasons = []
    for tool in ("docker", "podman"):
        exe = shutil.which(tool)
        if exe is None:
            continue
        res = subprocess.run([exe, "info"], capture_output=True, text=True, timeout=60)
        if res.returncode == 0:
            return exe
        last = (res.stderr.strip().splitlines() or ["no output"])[-1]
        reasons.append(f"`{tool} info` failed ({last})")
    pytest.skip(f"{NOT_BUILT}: " + ("; ".join(reasons) or "neither docker nor podman is installed"))


def _run(cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def test_the_image_builds_runs_read_only_as_non_root_and_drains(tmp_path):
    """docker (or podman) build, where an engine runs and the base images can be pulled; then
    the image's own command, read-only, answers health SERVING and `docker stop` drains it to
    exit 0. EXPLAIND_TEST_NO_IMAGE_BUILD=1 skips it (a release build takes a while)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    if os.environ.get("EXPLAIND_TEST_NO_IMAGE_BUILD") == "1":
        pytest.skip(f"{NOT_BUILT}: EXPLAIND_TEST_NO_IMAGE_BUILD=1")
    engine = _container_engine()
    for image in {s["image"] for s in dockerfile_stages()}:
        pulled = _run([engine, "pull", image], timeout=900)
        if pulled.returncode != 0:
            last = (pulled.stderr.strip().splitlines() or ["no output"])[-1]
            pytest.skip(f"{NOT_BUILT}: {Path(engine).name} cannot pull the base image {image} "
                        f"(no image registry reachable?): {last}")
    tag = f"explaind:test-{os.getpid()}"
    built = _run([engine, "build", "-f", str(DOCKERFILE), "-t", tag, "."], timeout=7200, cwd=REPO,
                 env={**os.environ, "DOCKER_BUILDKIT": "1"})
    assert built.returncode == 0, f"image build failed:\n{(built.stdout + built.stderr)[-6000:]}"
    container = None
    try:
        user = _run([engine, "image", "inspect", "-f", "{{.Config.User}}", tag], timeout=60)
        assert user.stdout.strip() == "{}:{}".format(*dockerfile_user())
        started = _run([engine, "run", "-d", "--read-only", "-p", "127.0.0.1::50051", tag], timeout=120)
        assert started.returncode == 0, started.stderr
        container = started.stdout.strip()
        deadline = time.monotonic() + 120
        logs = ""
        while "explaind listening on" not in logs and time.monotonic() < deadline:
            time.sleep(1)
            got = _run([engine, "logs", container], timeout=60)
            logs = got.stdout + got.stderr
        assert "explaind listening on" in logs, logs[-4000:]
        port = _run([engine, "port", container, "50051/tcp"], timeout=60).stdout.split()[0]
        with grpc.insecure_channel(port) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=30)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        stopped = _run([engine, "stop", "-t", "40", container], timeout=120)
        assert stopped.returncode == 0, stopped.stderr
        code = _run([engine, "inspect", "-f", "{{.State.ExitCode}}", container], timeout=60)
        got = _run([engine, "logs", container], timeout=60)
        logs = got.stdout + got.stderr
        assert code.stdout.strip() == "0", f"exit {code.stdout.strip()} after docker stop\n{logs[-4000:]}"
        assert "drained" in logs
    finally:
        if container:
            _run([engine, "rm", "-f", "-v", container], timeout=120)
        _run([engine, "rmi", "-f", tag], timeout=120)
