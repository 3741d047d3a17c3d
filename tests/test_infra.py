"""infra/ against the code and the pinned libraries: every manifest parses, and its images, pins, ports, entrypoints
and environment variables are the ones the code and the libraries use. Static: no Docker, Kubernetes or cloud here
(infra/README.md says what that leaves untested)."""

import ast
import importlib.util
import json
import os
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pipelines.config import PipelineConfig, load_config
from pipelines.workspace import Workspace, configure_environment

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
DOCKERFILE = INFRA / "docker" / "Dockerfile"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# "torch==2.13.0" -> {"torch": "2.13.0"}; "ray[default,train]==2.60.0" -> {"ray": "2.60.0"}
PINS = {m[1].lower(): m[3] for d in PROJECT["dependencies"] if (m := re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==(\S+)", d))}
CONF = {"local": ROOT / "conf" / "pipeline.yaml", "cluster": ROOT / "conf" / "cluster.yaml"}  # deployment -> its config file
THIRD_PARTY_IMAGES = ("postgres:", "prefecthq/prefect:", "gan-mlflow-server:")
TEST_HOOKS = {"GAN_PIPELINE_FAIL_AT", "GAN_INJECT_NAN_AT_STEP"}


def load(relative: str) -> dict:
    return yaml.safe_load((INFRA / relative).read_text())


YAML_FILES = sorted(p for p in INFRA.rglob("*") if p.suffix in (".yaml", ".yml"))
RAYCLUSTER, RAYJOB, PREFECT_WORKER = load("kuberay/raycluster.yaml"), load("kuberay/rayjob.yaml"), load("kuberay/prefect-worker.yaml")
LAUNCHER = load("ray/cluster.yaml")
MLFLOW_COMPOSE, PREFECT_COMPOSE, PREFECT_YAML = load("mlflow/compose.yaml"), load("prefect/compose.yaml"), load("prefect/prefect.yaml")
DEPLOYMENTS = {d["name"]: d for d in PREFECT_YAML["deployments"]}
README = (INFRA / "README.md").read_text()


def walk(node: object) -> Iterator[dict]:
    """Every mapping inside a parsed YAML document."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def pods(cluster_spec: dict) -> list[dict]:
    """The pod specs of a RayCluster spec: the head's, then each worker group's."""
    return [cluster_spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in cluster_spec["workerGroupSpecs"]]


def env_set(doc: dict) -> dict[str, object]:
    """Environment variables a manifest sets: Kubernetes `env` lists, compose `environment`, Prefect job variables,
    `-e NAME=value` in docker run options and `export NAME=` in commands."""
    found: dict[str, object] = {}
    for mapping in walk(doc):
        if isinstance(mapping.get("env"), list):
            found.update({item["name"]: item.get("value", item.get("valueFrom")) for item in mapping["env"]})
        elif isinstance(mapping.get("env"), dict):
            found.update(mapping["env"])
        if isinstance(mapping.get("environment"), dict):
            found.update(mapping["environment"])
    text = json.dumps(doc)
    found.update({name: value for name, value in re.findall(r"-e ([A-Za-z_][A-Za-z0-9_]*)=(\S+?)\"", text)})
    found.update({name: None for name in re.findall(r"export ([A-Za-z_][A-Za-z0-9_]*)=", text)})
    return found


def all_env_set() -> dict[str, dict]:
    return {str(p.relative_to(ROOT)): env_set(doc) for p in YAML_FILES for doc in yaml.safe_load_all(p.read_text()) if doc}


def code_reads() -> set[str]:
    """Environment variables the project's code reads: os.environ.get("X"), os.environ["X"], and NAME = "X" hook constants."""
    names: set[str] = set()
    for path in [*(ROOT / "pipelines").rglob("*.py"), *(ROOT / "gan").rglob("*.py")]:
        text = path.read_text()
        names |= set(re.findall(r"os\.environ(?:\.get)?[\[(]\"([A-Z][A-Za-z0-9_]*)\"", text))
        names |= set(re.findall(r"^[A-Z_]+_HOOK = \"([A-Z][A-Z0-9_]*)\"", text, re.M))
    return names


def cli_defaults(workdir: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """What `gan-pipeline` puts into the environment for a run with this workdir (pipelines/workspace.py)."""
    monkeypatch.setattr(os, "environ", {})
    configure_environment(Workspace.of(workdir))
    return dict(os.environ)


def package_file(package: str, relative: str) -> str:
    """The text of a file inside an installed package, without importing the package."""
    return (Path(importlib.util.find_spec(package).submodule_search_locations[0]) / relative).read_text()


# --- every file parses ----------------------------------------------------------------------------------------------

def test_the_expected_files_exist_and_every_yaml_parses() -> None:
    expected = {"docker/Dockerfile", "kuberay/raycluster.yaml", "kuberay/rayjob.yaml", "kuberay/prefect-worker.yaml",
                "kuberay/storage.yaml", "ray/cluster.yaml", "mlflow/compose.yaml", "mlflow/Dockerfile", "mlflow/basic_auth.ini",
                "prefect/compose.yaml", "prefect/prefect.yaml"}
    assert expected <= {str(p.relative_to(INFRA)) for p in INFRA.rglob("*") if p.is_file()}
    for path in YAML_FILES:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs and all(isinstance(d, dict) for d in docs), path


# --- the image: one name, the project's pins, the CLI as entrypoint ----------------------------------------------------

def image_repository() -> str:
    return re.search(r'io\.gan-pipeline\.image="([^"]+)"', DOCKERFILE.read_text())[1]


def test_every_manifest_uses_the_one_image_name_with_a_version_tag() -> None:
    repository = image_repository()
    tags = {f"{PROJECT['version']}-cpu", f"{PROJECT['version']}-cuda"}
    images = [m["image"] for p in YAML_FILES for doc in yaml.safe_load_all(p.read_text()) if doc for m in walk(doc)
              if isinstance(m.get("image"), str)]
    ours = [i for i in images if not i.startswith(THIRD_PARTY_IMAGES)]
    assert len(ours) >= 7, images  # RayCluster head + 2 groups, the same in the RayJob, the launcher
    assert {i.rsplit(":", 1)[0] for i in ours} == {repository}, ours
    assert {i.rsplit(":", 1)[1] for i in ours} <= tags, ours
    # The same name and tags in the commands the README and the Dockerfile give.
    for text in (README, DOCKERFILE.read_text()):
        mentioned = re.findall(re.escape(repository) + r":([\w.\-]+)", text)
        assert mentioned and set(mentioned) <= tags, mentioned


def test_the_images_install_pyproject_pins() -> None:
    dockerfile = DOCKERFILE.read_text()
    # torch comes first, from the variant's index, at the pin; everything else straight from pyproject.toml.
    pinned = dict(re.findall(r"\"([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([0-9][^\"\s]*)\"", dockerfile))
    assert pinned == {"torch": PINS["torch"]}
    assert "tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']" in dockerfile
    assert re.search(r"^RUN pip install --no-deps -e \.", dockerfile, re.M)
    assert int(re.search(r"^ARG PYTHON_IMAGE=python:3\.(\d+)", dockerfile, re.M)[1]) >= int(PROJECT["requires-python"].split(".")[-1])
    # The servers run the same MLflow and Prefect as the pipeline, Ray clusters the same Ray.
    assert re.search(r"mlflow\[auth\]==(\S+?)\"", (INFRA / "mlflow" / "Dockerfile").read_text())[1] == PINS["mlflow"]
    assert MLFLOW_COMPOSE["services"]["mlflow"]["image"].endswith(":" + PINS["mlflow"])
    assert PREFECT_COMPOSE["services"]["prefect"]["image"].startswith(f"prefecthq/prefect:{PINS['prefect']}-")
    assert PREFECT_YAML["prefect-version"] == PINS["prefect"]
    assert RAYCLUSTER["spec"]["rayVersion"] == RAYJOB["spec"]["rayClusterSpec"]["rayVersion"] == PINS["ray"]


def test_the_image_runs_the_cli_and_ships_what_the_code_needs() -> None:
    dockerfile = DOCKERFILE.read_text()
    script = next(name for name, target in PROJECT["scripts"].items() if target == "pipelines.cli.main:main")
    assert f'ENTRYPOINT ["{script}"]' in dockerfile
    copied = re.findall(r"^COPY (.+) \S+$", dockerfile, re.M)
    copied = {name for line in copied for name in line.split()}
    assert {"pyproject.toml", "README.md", "gan", "pipelines", "conf"} <= copied  # conf/presets beside pipelines/
    assert all((ROOT / name).exists() for name in copied)
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignored = {line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")}
    assert {"gan-work", ".venv"} <= ignored and not copied & ignored


# --- ports --------------------------------------------------------------------------------------------------------

def test_ports_agree_between_servers_manifests_and_readme() -> None:
    from prefect.settings.models.server.api import ServerAPISettings  # noqa: PLC0415 - the port clients assume

    # MLflow: 5000 published, served and probed; Prefect: its default 4200, the API under /api.
    mlflow = MLFLOW_COMPOSE["services"]["mlflow"]
    assert mlflow["ports"] == ["5000:5000"] and "--port=5000" in mlflow["command"] and ":5000/health" in str(mlflow["healthcheck"])
    prefect = PREFECT_COMPOSE["services"]["prefect"]
    assert ServerAPISettings.model_fields["port"].default == 4200
    assert prefect["ports"] == ["4200:4200"] and prefect["command"][prefect["command"].index("--port") + 1] == "4200"
    assert re.search(r"export MLFLOW_TRACKING_URI=http://\S+:5000\n", README)
    assert re.search(r"export PREFECT_API_URL=http://\S+:4200/api\b", README)
    # Ray: GCS 6379 and dashboard 8265 are Ray's defaults; the client server listens on 10001.
    constants = package_file("ray", "_private/ray_constants.py")
    assert re.search(r"^DEFAULT_PORT = 6379$", constants, re.M) and re.search(r"^DEFAULT_DASHBOARD_PORT = 8265$", constants, re.M)
    for spec in (RAYCLUSTER["spec"], RAYJOB["spec"]["rayClusterSpec"]):
        ports = {p["containerPort"]: p["name"] for p in spec["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]}
        assert ports == {6379: "gcs-server", 8265: "dashboard", 10001: "client"}
    head = " ".join(LAUNCHER["head_start_ray_commands"])
    assert all(flag in head for flag in ("--port=6379", "--dashboard-port=8265", "--ray-client-server-port=10001"))
    assert ":6379" in " ".join(LAUNCHER["worker_start_ray_commands"])
    assert "8265:8265" in README


# --- environment variables ----------------------------------------------------------------------------------------

def test_the_code_reads_the_variables_the_infra_sets_for_it() -> None:
    reads = code_reads()
    assert {"RAY_ADDRESS", "MLFLOW_TRACKING_URI", "GAN_PIPELINE_USER"} <= reads, reads
    assert TEST_HOOKS <= reads  # the hooks exist: the check below that nothing sets them means something
    for readme in (README, (ROOT / "docs" / "operations.md").read_text()):  # the env-var table, in infra/README.md and docs/
        for name in ("RAY_ADDRESS", "PREFECT_API_URL", "MLFLOW_TRACKING_URI"):
            assert re.search(rf"^\| `{name}` \|", readme, re.M), name


def test_every_variable_a_manifest_sets_is_read_by_the_code_or_its_library(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import Settings  # noqa: PLC0415
    from prefect.settings.legacy import _get_valid_setting_names  # noqa: PLC0415

    prefect_settings = _get_valid_setting_names(Settings)
    mlflow_defines = package_file("mlflow", "environment_variables.py") + package_file("mlflow", "cli/__init__.py")
    ray_reads = {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}  # Ray's token auth (read in C++; ray/_private/authentication)
    image_reads = {"POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD"}  # the postgres image's entrypoint
    known = code_reads() | set(cli_defaults("gan-work", monkeypatch)) | ray_reads | image_reads
    for where, names in all_env_set().items():
        for name in names:
            assert name not in TEST_HOOKS, f"{where} sets the test hook {name}"
            if name.startswith("PREFECT_"):
                assert name in prefect_settings, f"{where}: {name} is not a Prefect setting"
            elif name.startswith("MLFLOW_") and name not in known:
                assert f'"{name}"' in mlflow_defines, f"{where}: MLflow does not read {name}"
            else:
                assert name in known, f"{where}: nothing reads {name}"
    assert "RAY_AUTH_MODE" in package_file("ray", "_private/authentication/authentication_token_setup.py")


def test_drivers_on_the_head_get_the_services_from_secrets_the_readme_creates() -> None:
    services = {"MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PREFECT_API_URL", "PREFECT_API_AUTH_STRING"}
    for spec in (RAYCLUSTER["spec"], RAYJOB["spec"]["rayClusterSpec"]):
        env = spec["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
        assert services <= {e["name"] for e in env}
        for item in env:
            source = item.get("valueFrom") or {}
            ref = source.get("secretKeyRef") or source.get("configMapKeyRef")
            if ref:  # each key is named as its variable, and step 3 creates it from the variable of that name
                assert ref["key"] == item["name"]
                kind = "secret generic" if "secretKeyRef" in source else "configmap"
                block = re.search(rf"kubectl create {kind} {ref['name']}(.*?)\n(?!  )", README, re.S)
                assert block and f'--from-literal={item["name"]}="${item["name"]}"' in block[1], (ref, item["name"])
        # Ray's token: KubeRay reads it from this Secret's key auth_token, which step 3 creates.
        assert spec["authOptions"] == {"mode": "token", "secretName": "gan-ray-auth"}
        assert "kubectl create secret generic gan-ray-auth --from-literal=auth_token=" in README
        assert tuple(map(int, spec["rayVersion"].split("."))) >= (2, 52)  # Ray's token auth
    # Compose: every variable a server needs comes from the operator's shell, documented in the README.
    for compose in ("mlflow/compose.yaml", "prefect/compose.yaml"):
        text = (INFRA / compose).read_text()
        required = set(re.findall(r"\$\{([A-Z_]+):\?", text))
        assert required and all(re.search(rf"export {name}=", README) for name in required), (compose, required)
        assert set(re.findall(r"\$\{([A-Z_]+)", text)) <= set(re.findall(r"[A-Z][A-Z_]+", README))


def test_deployment_runs_get_the_environment_the_cli_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    """A deployment calls the flow without the CLI: its pool's env stands in for configure_environment."""
    for name, deployment in DEPLOYMENTS.items():
        env = dict(deployment["work_pool"]["job_variables"]["env"])
        assert env.pop("GAN_PIPELINE_USER") == f"prefect-deployment/{name}"
        monkeypatch.chdir(ROOT)  # `prefect deploy` runs in the checkout and records it as the local run's working directory
        expected = cli_defaults(load_config(CONF[name]).runtime.workdir, monkeypatch)
        if name == "local":
            env["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = env["PREFECT_RESULTS_LOCAL_STORAGE_PATH"].replace("{{ $PWD }}", str(ROOT))
        else:  # on the cluster the head's token auth (RAY_AUTH_MODE=token from KubeRay) must win
            assert expected.pop("RAY_AUTH_MODE") == "disabled"
        assert env == expected, name


# --- entrypoints ---------------------------------------------------------------------------------------------------

def workdir_of_image() -> str:
    return re.search(r"^WORKDIR (\S+)", DOCKERFILE.read_text(), re.M)[1]


def test_the_rayjob_entrypoint_is_a_cli_command_on_the_cluster_config() -> None:
    import typer  # noqa: PLC0415

    from pipelines.cli.main import app  # noqa: PLC0415

    argv = shlex.split(RAYJOB["spec"]["entrypoint"])
    assert PROJECT["scripts"][argv[0]] == "pipelines.cli.main:main"
    group = typer.main.get_command(app)
    command = group.get_command(group.make_context(argv[0], list(argv[1:]), resilient_parsing=True), argv[1])
    assert command is not None, argv[1]
    params = command.make_context(argv[1], list(argv[2:])).params  # unknown options or bad values raise here
    config = str(params["config"])
    assert config.startswith(workdir_of_image() + "/")
    assert ROOT / config.removeprefix(workdir_of_image() + "/") == CONF["cluster"]
    # The launcher checks the same CLI answers in its image.
    assert LAUNCHER["setup_commands"] == [f"{argv[0]} --help > /dev/null"]


def flow_function(entrypoint: str) -> ast.FunctionDef:
    """The function an entrypoint `path/to/file.py:function` names, checked to be a Prefect flow."""
    path, function = entrypoint.split(":")
    tree = ast.parse((ROOT / path).read_text())
    assert any(isinstance(n, ast.ImportFrom) and n.module == "prefect" and "flow" in [a.name for a in n.names] for n in tree.body)
    found = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function)
    decorators = [d.func if isinstance(d, ast.Call) else d for d in found.decorator_list]
    assert any(isinstance(d, ast.Name) and d.id == "flow" for d in decorators), f"{entrypoint} is not a @flow"
    return found


def flow_name(function: ast.FunctionDef) -> str:
    call = next(d for d in function.decorator_list if isinstance(d, ast.Call))
    return next(k.value.value for k in call.keywords if k.arg == "name")


def test_deployments_run_the_flow_with_its_parameters_and_the_conf_files() -> None:
    assert set(DEPLOYMENTS) == set(CONF)
    for name, deployment in DEPLOYMENTS.items():
        function = flow_function(deployment["entrypoint"])
        params = [a.arg for a in function.args.args]
        required = params[: len(params) - len(function.args.defaults)]
        assert set(required) <= set(deployment["parameters"]) <= set(params), name
        # The config parameter is the conf file, and resolves as the project's loader resolves that file.
        config = deployment["parameters"]["config"]
        assert config == yaml.safe_load(CONF[name].read_text()), name
        assert PipelineConfig.model_validate(config) == load_config(CONF[name]), name
    assert f"prefect deployment run {flow_name(flow_function(DEPLOYMENTS['cluster']['entrypoint']))}/cluster" in README
    # The cluster's flow runs in the image's checkout.
    assert DEPLOYMENTS["cluster"]["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": workdir_of_image()}}]
    assert "pull" not in DEPLOYMENTS["local"] and PREFECT_YAML.get("pull") is None


def test_deployments_are_scheduled_one_run_at_a_time_as_prefect_reads_them() -> None:
    from prefect.cli.deploy._models import PrefectYamlModel  # noqa: PLC0415 - the model `prefect deploy` validates with
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy  # noqa: PLC0415
    from prefect.client.schemas.schedules import CronSchedule  # noqa: PLC0415

    PrefectYamlModel.model_validate(PREFECT_YAML)
    strategies = set()
    for name, deployment in DEPLOYMENTS.items():
        assert deployment["schedules"] and all(CronSchedule(cron=s["cron"], timezone=s["timezone"]) for s in deployment["schedules"])
        limit = deployment["concurrency_limit"]
        assert limit["limit"] == 1 and ConcurrencyLimitStrategy(limit["collision_strategy"]), name
        strategies.add(limit["collision_strategy"])
    assert strategies == {"ENQUEUE", "CANCEL_NEW"} and all(f"`{s}`" in README for s in strategies)


def test_the_workers_poll_the_pools_the_deployments_use() -> None:
    pools = {d["work_pool"]["name"] for d in DEPLOYMENTS.values()}
    assert all(f"prefect work-pool create {pool} --type process" in README for pool in pools)
    worker = shlex.split(PREFECT_WORKER["spec"]["entrypoint"])
    assert worker[:3] == ["prefect", "worker", "start"]
    assert worker[worker.index("--pool") + 1] == DEPLOYMENTS["cluster"]["work_pool"]["name"]
    assert PREFECT_WORKER["spec"]["clusterSelector"] == {"ray.io/cluster": RAYCLUSTER["metadata"]["name"]}
    assert f"svc/{RAYCLUSTER['metadata']['name']}-head-svc" in README


# --- the cluster: what conf/cluster.yaml asks of it ------------------------------------------------------------------

def test_cluster_config_loads_and_fits_the_clusters() -> None:
    cfg = load_config(CONF["cluster"])
    workdir = cfg.runtime.workdir
    assert workdir.startswith("/") and cfg.ray.use_gpu
    # The RayJob brings up exactly the RayCluster.
    assert RAYJOB["spec"]["rayClusterSpec"] == RAYCLUSTER["spec"]
    # Every Ray pod mounts the shared claim at runtime.workdir.
    claim = load("kuberay/storage.yaml")
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    for pod in pods(RAYCLUSTER["spec"]):
        volume = next(v["name"] for v in pod["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == claim["metadata"]["name"])
        assert all({"name": volume, "mountPath": workdir} in c["volumeMounts"] for c in pod["containers"])
    assert f"-v {workdir}:{workdir}" in LAUNCHER["docker"]["run_options"]
    assert any(c.startswith("mountpoint -q " + workdir) for c in LAUNCHER["initialization_commands"])
    # The GPU group can hold num_workers Ray Train workers of {GPU: 1, CPU: cpus_per_worker}.
    gpu = next(g for g in RAYCLUSTER["spec"]["workerGroupSpecs"] if "nvidia.com/gpu" in str(g))
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert int(limits["nvidia.com/gpu"]) >= 1 and int(limits["cpu"]) >= cfg.ray.cpus_per_worker
    assert gpu["maxReplicas"] * int(limits["nvidia.com/gpu"]) >= cfg.ray.num_workers
    assert cfg.ray.threads_per_worker and cfg.ray.threads_per_worker <= int(limits["cpu"])
    node = LAUNCHER["available_node_types"]["ray.worker.gpu"]
    assert node["resources"]["GPU"] >= 1 and node["resources"]["CPU"] >= cfg.ray.cpus_per_worker
    assert node["max_workers"] * node["resources"]["GPU"] >= cfg.ray.num_workers


def test_the_launcher_config_passes_rays_schema() -> None:
    import jsonschema  # noqa: PLC0415 - a dependency of Ray, which validates `ray up` configs with it

    schema = json.loads(package_file("ray", "autoscaler/ray-schema.json"))
    jsonschema.validate(LAUNCHER, schema)
    assert LAUNCHER["head_node_type"] in LAUNCHER["available_node_types"]
    assert LAUNCHER["available_node_types"][LAUNCHER["head_node_type"]]["resources"] == {"CPU": 0}  # drivers only
    # Token auth: the token file from the operator's machine on every node, the mode in every container.
    assert LAUNCHER["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token"}
    assert "-e RAY_AUTH_MODE=token" in LAUNCHER["docker"]["run_options"]


def test_basic_auth_is_on_and_keeps_no_credentials() -> None:
    mlflow = MLFLOW_COMPOSE["services"]["mlflow"]
    assert "--app-name=basic-auth" in mlflow["command"]
    ini = (INFRA / "mlflow" / "basic_auth.ini").read_text()
    assert mlflow["environment"]["MLFLOW_AUTH_CONFIG_PATH"] == "/etc/mlflow/basic_auth.ini"
    assert "./basic_auth.ini:/etc/mlflow/basic_auth.ini:ro" in mlflow["volumes"]
    assert not re.search(r"^\s*admin_password\s*=", ini, re.M)
    assert PREFECT_COMPOSE["services"]["prefect"]["environment"]["PREFECT_SERVER_API_AUTH_STRING"].startswith("${PREFECT_API_AUTH_STRING:?")
    # No literal secret anywhere: passwords, tokens and keys are ${VAR} or references to Kubernetes Secrets.
    for where, names in all_env_set().items():
        for name, value in names.items():
            if re.search(r"PASSWORD|SECRET|TOKEN|AUTH_STRING", name) and isinstance(value, str):
                assert value.startswith("${") and value.endswith("}"), f"{where}: {name}"


# --- the README ----------------------------------------------------------------------------------------------------

def test_every_file_the_readme_names_exists_and_the_root_readme_links_it() -> None:
    named = set(re.findall(r"(?<![\w/.])((?:infra|conf|pipelines|tests|gan)/[\w./\-]*\w)", README))
    named |= {f"infra/{p}" for p in re.findall(r"^\| `((?:local|docker|kuberay|ray|mlflow|prefect)/[\w./\-]+)` \|", README, re.M)}
    assert len(named) > 15
    missing = sorted(n for n in named if not (ROOT / n).exists())
    assert not missing, missing
    assert "](infra/README.md)" in (ROOT / "README.md").read_text()
