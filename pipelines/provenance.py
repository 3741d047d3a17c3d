"""What made a result: which of the project's code each stage runs and a digest of that code that ignores comments and
docstrings; the package version and the git commit a registered version records.

A stage's cache key (and the training run's name, which decides whether a re-run resumes) carries the digest of the
modules the stage runs, so an edit to one stage's code reruns that stage and no other. The rule is told in
docs/pipeline.md ("When a stage reruns").
"""

import ast
import functools
import importlib.metadata
import subprocess
from pathlib import Path
from typing import NamedTuple

import gan
import pipelines
from gan.hashing import sha256_records

GAN_DIR, PIPELINES_DIR = Path(gan.__file__).parent, Path(pipelines.__file__).parent
PACKAGES = (GAN_DIR, PIPELINES_DIR)  # the project's own code: an import elsewhere is a library's
PROJECT_ROOT = GAN_DIR.parent  # holds gan/ and pipelines/: a git checkout when run from source
DISTRIBUTION = "gan-pipeline"  # [project] name in pyproject.toml
GIT_TIMEOUT_S = 5


class StageCode(NamedTuple):
    """The modules a stage's keys stand on: `follow`, with every project module they import at any depth (inside
    functions too), and `alone`, without what they import."""

    follow: tuple[str, ...]
    alone: tuple[str, ...] = ()


# The stages whose code digest is not simply their module and all it imports (`code_rule`). Training keys on the code
# that computes the weights: the workers' code with all it imports (networks, losses, the loop, the dataset's reader,
# checkpoints; not the source formats and the writer, whose output the dataset's fingerprint names) and the modules that
# hand the workers their config and data (the stage and the driver). Not on what those import besides: the evaluation's
# feature network it borrows for quick FIDs is keyed by its own cache (`feature_extractor_key`, `encoder_key`), and the console, the
# workspace and the registry do not touch the weights, so an edit there lets an unchanged training config resume. Code
# that shapes what the workers get belongs in one of these modules.
STAGE_CODE = {
    "train": StageCode(("pipelines.cluster.worker",), alone=("pipelines.stages.train", "pipelines.cluster.fit")),
}


def code_rule(stage: str) -> StageCode:
    """The modules a stage's code digest covers: its own `STAGE_CODE` rule, else its module and all that it imports."""
    return STAGE_CODE.get(stage, StageCode((f"pipelines.stages.{stage}",)))


def project_modules(packages: tuple[Path, ...] = PACKAGES) -> dict[str, Path]:
    """Every module of the packages, by dotted name (a package by its `__init__.py`)."""
    modules = {}
    for package in packages:
        for path in sorted(package.rglob("*.py")):
            parts = path.relative_to(package.parent).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


class Import(NamedTuple):
    """One imported module: `import module` (no names) or `from .module import names` (`level` dots)."""

    level: int
    module: str
    names: tuple[str, ...] = ()


@functools.cache
def parsed(source: bytes, filename: str) -> tuple[str, tuple[Import, ...]]:
    """A module's code (its syntax tree without docstrings and `description=` texts, as text: comments and layout are
    never part of it) and its imports, anywhere in the module; parsed once per process and source."""
    tree, found = ast.parse(source, filename), []
    for node in ast.walk(tree):  # walks a node's children as they were before the node's docstring goes
        if isinstance(node, ast.Import):
            found += [Import(0, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append(Import(node.level, node.module or "", tuple(alias.name for alias in node.names)))
        elif isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and _has_docstring(node):
            node.body = node.body[1:]  # left empty when it was only a docstring: the text is hashed, never compiled
        elif isinstance(node, ast.Call):  # a config field's help text (Field(description=...)) is documentation too
            node.keywords = [k for k in node.keywords if k.arg != "description"]
    return ast.dump(tree), tuple(found)


def imports(name: str, modules: dict[str, Path]) -> set[str]:
    """The project modules that importing `name` runs directly: each imported module, its parent packages (their
    `__init__` runs first) and, for `from package import x`, the submodule x."""
    path = modules[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for imported in parsed(path.read_bytes(), str(path))[1]:
        base = imported.module
        if imported.level:  # relative: `from . import x` (level 1) is the current package, each further dot its parent
            parts = package.split(".")
            parent = ".".join(parts[: len(parts) - imported.level + 1])
            base = f"{parent}.{base}" if base else parent
        found |= set(_prefixes(base)) | {f"{base}.{member}" for member in imported.names}
    return found & modules.keys()


def reach(entries: tuple[str, ...], modules: dict[str, Path]) -> set[str]:
    """The entry modules, their parent packages and every project module they import, at any depth."""
    todo = [prefix for entry in entries for prefix in _prefixes(entry)]
    for entry in todo:
        assert entry in modules, f"{entry} is not a module of the project ({len(modules)} modules found)"
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += imports(name, modules).difference(seen)
    return seen


def stage_modules(stage: StageCode, modules: dict[str, Path]) -> set[str]:
    """The modules whose code a stage's keys stand on."""
    for name in stage.alone:
        assert name in modules, f"{name} is not a module of the project ({len(modules)} modules found)"
    return reach(stage.follow, modules) | set(stage.alone)


def digest(names: set[str], modules: dict[str, Path]) -> str:
    """A hash of the modules' code: comments, docstrings and layout do not count."""
    return sha256_records((name, parsed(modules[name].read_bytes(), str(modules[name]))[0]) for name in sorted(names))[:12]


@functools.cache
def stage_code(stage: str) -> str:
    """The digest of the code `stage` (a name in `STAGES`) runs, computed once per process."""
    modules = project_modules()
    return digest(stage_modules(code_rule(stage), modules), modules)


@functools.cache
def code_version() -> str:
    """The gan package's version plus the digest of all the project's code: what a registered version was made with."""
    modules = project_modules()
    return f"{gan.__version__}+{digest(set(modules), modules)}"


def _prefixes(dotted: str) -> list[str]:
    parts = dotted.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _has_docstring(node: ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    first = node.body[0] if node.body else None
    return isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)


def code_tags() -> dict[str, str]:
    """What code made a result, as tags: `code_version`, and where known `git_sha` and the installed `package_version`."""
    tags = {"code_version": code_version(), "git_sha": git_sha(), "package_version": package_version()}
    return {key: value for key, value in tags.items() if value is not None}


def package_version() -> str | None:
    """The installed distribution's version (None when the code runs without being installed)."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_sha(root: Path = PROJECT_ROOT) -> str | None:
    """HEAD of the git checkout at `root`, with `-dirty` when tracked files have changes; None when `root` is no
    checkout's top folder (an installed copy inside some other repository does not count) or git is not there."""
    if not _is_checkout(root):
        return None
    try:
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no") != ""
        return _git(root, "rev-parse", "HEAD") + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):  # no commit yet, or git hung
        return None


def commit_exists(sha: str, root: Path = PROJECT_ROOT) -> bool | None:
    """Whether the checkout at `root` holds this commit; None when there is no checkout (or no git) to ask."""
    if not _is_checkout(root):
        return None
    try:
        _git(root, "cat-file", "-e", f"{sha}^{{commit}}")
        return True
    except subprocess.CalledProcessError:
        return False
    except (OSError, subprocess.SubprocessError):
        return None


def _is_checkout(root: Path) -> bool:
    try:
        return Path(_git(root, "rev-parse", "--show-toplevel")).resolve() == root.resolve()
    except (OSError, subprocess.SubprocessError):  # no git, or not inside a repository
        return False


def _git(root: Path, *args: str) -> str:
    # --no-optional-locks: `status` must not take the index lock that a git command of the user may be holding.
    done = subprocess.run(["git", "--no-optional-locks", "-C", str(root), *args], capture_output=True, text=True,
                          timeout=GIT_TIMEOUT_S, check=True)
    return done.stdout.strip()
