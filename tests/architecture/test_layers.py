"""The import rule: no module imports up a layer, so the folder tree stays the architecture.

`schemas` is the contract everything shares; `connectors` (outside systems) and `operators`
(stream steps) build on it side by side, operators reaching connectors only through their
Protocols; `pipelines` wires them into processes, its own rooms layered bottom to top. Each
package lists what it may import; anything else found in its source fails with file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = ("schemas", "connectors", "operators", "pipelines")

# package -> the packages (and single modules) of ours it may import, besides itself
ALLOWED: dict[str, tuple[str, ...]] = {
    "schemas": (),
    "connectors": ("schemas",),
    "operators": ("schemas", "connectors.protocols", "connectors.batching"),
    "pipelines.handover": ("schemas", "operators"),
    # the runtime's knowledge indexer runs the ingest's units of work (pipelines.knowledge sits below it)
    "pipelines.runtime": ("schemas", "connectors", "operators", "pipelines.handover", "pipelines.knowledge"),
    "pipelines.services": ("schemas", "connectors", "operators", "pipelines.handover", "pipelines.runtime"),
    "pipelines.ml": ("schemas", "connectors", "pipelines.runtime"),
    "pipelines.knowledge": ("schemas", "connectors"),
    "pipelines.devstack": (
        "schemas",
        "connectors",
        "operators",
        "pipelines.handover",
        "pipelines.runtime",
        "pipelines.services",
        "pipelines.knowledge",
    ),
    "pipelines.evaluation": (
        "schemas",
        "connectors",
        "operators",
        "pipelines.runtime",
        "pipelines.services",
        "pipelines.knowledge",
        "pipelines.devstack",
    ),
    "pipelines.cli": ("schemas", "connectors", "operators", "pipelines"),
}


def _package_of(module: str) -> str | None:
    """The most specific entry of ALLOWED that `module` lies in."""
    best = None
    for package in ALLOWED:
        if (module == package or module.startswith(package + ".")) and (best is None or len(package) > len(best)):
            best = package
    return best


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name.split(".")[0] in OURS]


def _violations() -> list[str]:
    problems = []
    for top in OURS:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            package = _package_of(module)
            if module == "pipelines":  # the namespace of the rooms holds no code of its own
                problems.extend(f"pipelines/__init__.py:{line} imports {name}" for line, name in _imports(path))
                continue
            if package is None:
                problems.append(f"{path.relative_to(ROOT)}: in no layer (add its room to ALLOWED)")
                continue
            allowed = (package, *ALLOWED[package])
            for line, name in _imports(path):
                if not any(name == a or name.startswith(a + ".") for a in allowed):
                    problems.append(f"{path.relative_to(ROOT)}:{line} imports {name} ({package} may import {allowed})")
    return problems


def test_no_module_imports_up_a_layer() -> None:
    problems = _violations()
    assert not problems, "imports that point up a layer:\n" + "\n".join(problems)


def test_every_source_folder_is_a_known_room() -> None:
    """A new folder under pipelines/ must be placed in a layer before it can hold code."""
    rooms = {p.name for p in (ROOT / "pipelines").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert {f"pipelines.{room}" for room in rooms} <= set(ALLOWED)


@pytest.mark.parametrize(
    ("module", "imported", "allowed"),
    [
        ("operators.nlu_model", "connectors.triton", False),
        ("operators.execute", "connectors.protocols", True),
        ("connectors.postgres.connect", "pipelines.runtime.settings", False),
        ("pipelines.runtime.stage", "pipelines.services.worker", False),
        ("pipelines.cli.main", "pipelines.services.worker", True),
    ],
)
def test_the_rule_itself_refuses_what_it_should(module: str, imported: str, allowed: bool) -> None:
    package = _package_of(module)
    assert package is not None
    permitted = (package, *ALLOWED[package])
    assert any(imported == a or imported.startswith(a + ".") for a in permitted) is allowed
