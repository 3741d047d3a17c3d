"""The house's one direction, checked on the imports themselves (every import statement at any depth, inside functions
too): `cli -> flow -> stages -> {cluster, registry, workspace, errors, faults, provenance, ...} -> gan`; no stage imports
another; `cluster/` imports neither Prefect nor MLflow, and importing it loads neither; no import cycle in `pipelines/`
(a package whose `__init__` imports its own submodules counts), none between the modules of `gan/`."""

import subprocess
import sys

import pytest

from pipelines.provenance import _prefixes, parsed, project_modules
from pipelines.stages import STAGES

MODULES = project_modules()
FLOW = {"pipelines.flow", "pipelines.compare", "pipelines.schedule"}
STAGE_MODULES = {f"pipelines.stages.{stage}" for stage in STAGES}


def layer(module: str) -> int:
    """cli 3, flow 2, a stage 1, the rooms below the stages 0 (the `pipelines.stages` package itself: only the names),
    the library -1."""
    if module.startswith("gan"):
        return -1
    if module.startswith("pipelines.cli"):
        return 3
    return 2 if module in FLOW else 1 if module in STAGE_MODULES else 0


def imported(module: str, parents: bool = False) -> set[str]:
    """The project modules `module` imports (with `parents`, also the packages whose `__init__` those imports run)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for item in parsed(path.read_bytes(), str(path))[1]:
        base = item.module
        if item.level:
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - item.level + 1]) + (f".{base}" if base else "")
        found |= {base, *(f"{base}.{name}" for name in item.names)} | (set(_prefixes(base)) if parents else set())
    return (found & MODULES.keys()) - {module}


def external(module: str) -> set[str]:
    """The top-level names of what `module` imports from outside the project."""
    path = MODULES[module]
    return {item.module.split(".")[0] for item in parsed(path.read_bytes(), str(path))[1] if not item.level and item.module}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_import_goes_down_the_layers_and_no_stage_imports_another() -> None:
    upward = [(m, i) for m in MODULES for i in imported(m) if layer(i) > layer(m)]
    assert upward == []
    across = [(m, i) for m in STAGE_MODULES for i in imported(m) if i in STAGE_MODULES]
    assert across == []
    assert not [m for m in MODULES if m.startswith("gan") and any(i.startswith("pipelines") for i in imported(m))]


def test_the_cluster_room_needs_neither_prefect_nor_mlflow() -> None:
    cluster = [m for m in MODULES if m.startswith("pipelines.cluster")]
    assert len(cluster) >= 6
    assert {m: external(m) & {"prefect", "mlflow"} for m in cluster if external(m) & {"prefect", "mlflow"}} == {}
    assert {m: imported(m) for m in cluster if any(i.startswith(("pipelines.registry", "pipelines.stages.")) for i in imported(m))} == {}
    # What a Ray worker process loads: the worker's module and the driver's, and nothing of Prefect or MLflow with them.
    loaded = subprocess.run([sys.executable, "-c", "import sys; " + "; ".join(f"import {m}" for m in cluster) +
                             "; print(sorted({n.split('.')[0] for n in sys.modules} & {'prefect', 'mlflow'}))"],
                            capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0 and loaded.stdout.strip() == "[]", loaded.stderr[-2000:]


@pytest.mark.parametrize("parents", [False, True], ids=["modules", "package-inits"])
def test_no_import_cycle_in_the_pipelines(parents: bool) -> None:
    graph = {m: {i for i in imported(m, parents) if i.startswith("pipelines")} for m in MODULES if m.startswith("pipelines")}
    assert cycles(graph) == []


def test_no_import_cycle_between_the_library_modules() -> None:
    """Module to module; the library's table package `gan.networks` still fills its table in its `__init__` from its own
    submodules (`gan.metrics`' registry is filled by the modules the evaluation imports)."""
    graph = {m: {i for i in imported(m) if i.startswith("gan")} for m in MODULES if m.startswith("gan")}
    assert cycles(graph) == []


def test_the_stages_are_named_once() -> None:
    """The flow's steps, the fault hook's points and the code digests all go by `STAGES`: each stage module lists its
    own steps, the last of them the stage's own task, and nothing else names the stages."""
    from pipelines.faults import POINTS, failure_hook  # noqa: PLC0415
    from pipelines.flow import STEPS  # noqa: PLC0415
    from pipelines.provenance import STAGE_CODE  # noqa: PLC0415

    tasks = [step.task.name for step in STEPS]
    assert [name for name in tasks if name in STAGES] == list(STAGES) and set(tasks) - set(STAGES) == {"warm-start"}
    assert len({step.key for step in STEPS}) == len(STEPS)  # each output its own key in the run record
    assert set(STAGE_CODE) < set(STAGES) and STAGE_MODULES == {m for m in MODULES if m.startswith("pipelines.stages.")}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GAN_PIPELINE_FAIL_AT", ",".join(f"kill:{stage}" for stage in STAGES))
        assert set(failure_hook()) == {f"kill:{stage}" for stage in STAGES}
        patch.setenv("GAN_PIPELINE_FAIL_AT", ",".join(f"{point}:once" for point in POINTS))  # a stage's inner points
        assert failure_hook() == dict.fromkeys(POINTS, "once") and all(p.partition("@")[0] in STAGES for p in POINTS)
        patch.setenv("GAN_PIPELINE_FAIL_AT", "register@nowhere")
        with pytest.raises(ValueError, match=f"unknown form 'register@nowhere'.* POINT one of {', '.join(POINTS)}$"):
            failure_hook()
