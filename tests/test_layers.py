"""The code's rules of structure, read from its source (fast: no server).

- `provenance/` imports nothing from `opus/`;
- packages point one way: routes -> services -> store, and in packages
  uws/provsap -> execution -> store/jobdefs -> provenance, with the bottom modules
  (config, errors, ids, timeutil, phases) under everything;
- only routes (`*/routes.py`, `opus/app.py`, `opus/http.py`) know bottle or HTTP;
- only `opus/config.py` reads the environment.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.any_database  # the code's structure

ROOT = Path(__file__).resolve().parent.parent

# Each unit may import itself and the units of lower layers; never a sibling of its layer
# (uws and provsap are independent services, store and jobdefs independent foundations).
LAYERS: list[set[str]] = [
    {"provenance"},
    {"opus", "opus.config", "opus.errors", "opus.ids", "opus.timeutil", "opus.phases", "opus.vosi"},
    {"opus.extras"},  # optional libraries
    {"opus.units"},  # the science definitions' callables: run in a job's process, know no server
    {"opus.store", "opus.jobdefs"},
    {"opus.auth"},
    {"opus.accounts"},  # managing identities (the CLI, the web's token page)
    {"opus.http"},  # HTTP helpers for routes: the caller, errors as text
    {"opus.metrics"},  # counted by the runners and the web; read from the store when scraped
    {"opus.execution"},
    {"opus.uws", "opus.provsap"},
    {"opus.tap"},  # TAP: its async jobs are UWS jobs
    {"opus.web"},  # the web pages, over the services
    {"opus.app", "opus.identity_cli", "opus.demo", "opus.daemons"},
    {"opus.schedule_cli"},  # schedules made through the daemons' job service
    {"opus.prov_cli"},  # invalidations and re-runs through the job service
    {"opus.cli"},
]
HTTP_MODULES = {"opus.app", "opus.http"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def unit_of(module: str) -> str:
    """The layered unit a module belongs to: provenance, or opus's subpackage or module."""
    if module.split(".")[0] == "provenance":
        return "provenance"
    return ".".join(module.split(".")[:2])


def layer_of(unit: str) -> int:
    for index, units in enumerate(LAYERS):
        if unit in units:
            return index
    raise AssertionError(f"{unit} is in no layer of tests/test_layers.py: place it there")


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, lazy ones inside functions included."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # `from opus import vosi` imports the module opus.vosi
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def own_modules(module: str) -> bool:
    return module == "opus" or module.startswith(("opus.", "provenance"))


def sources() -> list[Path]:
    return sorted([*(ROOT / "opus").rglob("*.py"), *(ROOT / "provenance").rglob("*.py")])


def test_every_module_is_in_a_layer() -> None:
    for path in sources():
        layer_of(unit_of(module_name(path)))


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path: Path) -> None:
    module = module_name(path)
    unit = unit_of(module)
    level = layer_of(unit)
    wrong = []
    for line, imported in imports(path):
        if not own_modules(imported):
            continue
        if (ROOT / Path(*imported.split("."))).with_suffix(".py").exists() or (
            ROOT / Path(*imported.split("."))
        ).is_dir():
            target = unit_of(imported)
        else:
            continue  # `from opus.x import name`: the name of a module's attribute
        if target == unit or target == "opus":
            continue
        if layer_of(target) >= level:
            wrong.append(f"line {line}: {imported} (layer {layer_of(target)} >= {level})")
    assert not wrong, f"{module} ({unit}, layer {level}) imports upwards or sideways: {wrong}"


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_only_routes_know_http(path: Path) -> None:
    module = module_name(path)
    if module in HTTP_MODULES or module.endswith(".routes"):
        return
    http = [f"line {n}: {m}" for n, m in imports(path) if m == "bottle" or m == "opus.http"]
    assert not http, f"{module} is not a routes module but imports {http}"


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_only_settings_read_the_environment(path: Path) -> None:
    # opus.demo passes its environment on to the server it starts, without reading it
    if module_name(path) in ("opus.config", "opus.demo"):
        return
    reads = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ("environ", "getenv", "environb")
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        ):
            reads.append(node.lineno)
    assert not reads, f"{module_name(path)} reads the environment (lines {reads}): use Settings"


def test_the_rule_catches_a_wrong_import(tmp_path: Path) -> None:
    """The check itself: a store module importing the UWS service is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("from opus.uws.service import JobService\nimport opus.execution.runner\n")
    targets = [unit_of(m) for _, m in imports(bad) if own_modules(m)]
    assert [layer_of(t) > layer_of("opus.store") for t in targets] == [True, True, True]
