"""The README stays a front door that tells the truth: its layout names every module of `gan/` and `pipelines/` and
nothing that is not there, every relative link in README.md, docs/*.md and the pages that link into them (RESULTS.md,
BENCHMARKS.md, infra/README.md) reaches a file, and a heading when it names one, and the README fits in 150 lines.
Static: reads files only."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "RESULTS.md", ROOT / "BENCHMARKS.md", ROOT / "infra" / "README.md"]
PACKAGES = ("gan", "pipelines")
MAX_README_LINES = 150

# The layout's convention, in the README's "## Layout" section: each package under gan/ and pipelines/ has one list
# line that begins with its folder in backticks and names each of its modules by file stem in backticks, e.g.
#     - `gan/networks/`: generators and discriminators by name (`ARCHS`): `mlp`, `dcgan`, `resnet`, `layers`
# In such a line every backticked lowercase identifier is read as a module stem of that package, so anything else in
# backticks there must not look like one: a table in capitals (`ARCHS`), a path with a slash. `__init__` and `__main__`
# need not be named. Lines of other folders (`conf/`, `tests/`, ...) are not checked.
PACKAGE_LINE = re.compile(rf"^- `((?:{'|'.join(PACKAGES)})/(?:\w+/)*)`(.*)$")
STEM = re.compile(r"`([a-z_][a-z0-9_]*)`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*:")  # https:, mailto:, ... : not a file here


def without_fences(text: str) -> str:
    """Markdown with its fenced code blocks blanked: a `# comment` in one is no heading."""
    return re.sub(r"^```.*?^```[^\n]*$", "", text, flags=re.M | re.S)


def without_code(text: str) -> str:
    """Markdown with fenced blocks and inline code spans blanked: neither holds a link."""
    return re.sub(r"`[^`\n]*`", "", without_fences(text))


def section(text: str, heading: str) -> list[str]:
    """The lines between `## heading` and the next `## ` heading."""
    lines = text.splitlines()
    assert f"## {heading}" in lines, f"README.md has no '## {heading}' section"
    start = lines.index(f"## {heading}") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start:end]


def layout() -> dict[str, set[str]]:
    """Package folder ('gan/metrics') -> the module stems its layout line names."""
    named: dict[str, set[str]] = {}
    for line in section(README.read_text(), "Layout"):
        if m := PACKAGE_LINE.match(line):
            folder = m[1].rstrip("/")
            assert folder not in named, f"the layout names {folder}/ on two lines"
            named[folder] = set(STEM.findall(m[2]))
    return named


def packages() -> dict[str, set[str]]:
    """Package folder -> the stems of its modules, as they are on disk."""
    found = {}
    for package in PACKAGES:
        for init in sorted((ROOT / package).rglob("__init__.py")):
            found[init.parent.relative_to(ROOT).as_posix()] = {p.stem for p in init.parent.glob("*.py")}
    return found


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, punctuation dropped but '-' and '_', each space a '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a Markdown file; a repeated heading gets '-1', '-2', ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", without_fences(page.read_text()), re.M):
        base = slug(heading)
        found.add(f"{base}-{seen[base]}" if base in seen else base)
        seen[base] = seen.get(base, 0) + 1
    return found


def test_the_layout_names_every_module_and_only_modules_that_exist() -> None:
    named, actual = layout(), packages()
    assert set(named) == set(actual), (
        f"packages without a layout line: {sorted(set(actual) - set(named))}; "
        f"layout lines for folders that are not packages: {sorted(set(named) - set(actual))}"
    )
    for folder, stems in actual.items():
        missing = sorted(stems - {"__init__", "__main__"} - named[folder])
        assert not missing, f"README.md's layout line for {folder}/ does not name {missing}"
        gone = sorted(named[folder] - stems)
        assert not gone, f"README.md's layout line for {folder}/ names {gone}, which are not modules of {folder}/"


def test_every_relative_link_reaches_a_file_and_its_heading() -> None:
    assert len(PAGES) > 8, PAGES  # the README, the docs/ pages and the pages beside them
    checked, broken = 0, []
    for page in PAGES:
        for target in LINK.findall(without_code(page.read_text())):
            if SCHEME.match(target):
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(ROOT)}: ({target})"
            checked += 1
            if not resolved.exists():
                broken.append(f"{where}: no such file")
            elif anchor and (resolved.suffix != ".md" or anchor not in anchors(resolved)):
                broken.append(f"{where}: no heading with that anchor in {resolved.name}")
    assert checked > 20, checked
    assert not broken, "\n".join(broken)


def test_the_readme_is_a_front_door() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines (at most {MAX_README_LINES}): move reference to docs/"


def test_the_key_reference_is_generated_from_the_config_as_it_is() -> None:
    from pipelines.config import keys_markdown  # noqa: PLC0415 - the other checks here read files only

    assert (ROOT / "docs" / "keys.md").read_text() == keys_markdown() + "\n", "docs/keys.md is stale: gan-pipeline keys --markdown > docs/keys.md"
