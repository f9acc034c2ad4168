"""Package layering (issue 22), read from the source's import statements.

``cxr_gateway`` assembles the process (serve, status): no package imports it.
No two packages import each other, directly or through others (the package
graph has no cycle), and only ``storage`` runs SQL.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import PROJECT_ROOT

PACKAGES = ("cxr_gateway", "config", "dicom_node", "inference", "training", "hl7_link", "results",
            "delivery", "web", "storage")
ASSEMBLER = "cxr_gateway"


def _imports(package: str) -> dict[str, set[str]]:
    """Other project packages imported by ``package`` -> the files importing each."""
    found: dict[str, set[str]] = {}
    for path in (PROJECT_ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module
                     and node.level == 0 else [])
            for name in names:
                top = name.split(".")[0]
                if top in PACKAGES and top != package:
                    found.setdefault(top, set()).add(str(path.relative_to(PROJECT_ROOT)))
    return found


GRAPH = {package: _imports(package) for package in PACKAGES}


def test_no_package_imports_the_assembler() -> None:
    offenders = {p: sorted(GRAPH[p][ASSEMBLER]) for p in PACKAGES if ASSEMBLER in GRAPH[p]}
    assert offenders == {}


def test_no_two_packages_import_each_other() -> None:
    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n}))
                   for n in GRAPH[start])

    cycles = sorted(p for p in PACKAGES if reaches(p, p, {p}))
    assert cycles == [], {p: sorted(GRAPH[p]) for p in cycles}


SQL = re.compile(r"""["'](\s*)(SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM|CREATE TABLE)\b""")


def test_only_storage_runs_sql() -> None:
    offenders = [str(path.relative_to(PROJECT_ROOT))
                 for package in PACKAGES if package != "storage"
                 for path in (PROJECT_ROOT / package).rglob("*.py")
                 if SQL.search(path.read_text(encoding="utf-8"))]
    assert offenders == []


def test_the_graph_is_read_from_real_imports() -> None:
    """The test can fail: the assembler's own imports are seen."""
    assert {"dicom_node", "delivery", "web"} <= set(GRAPH[ASSEMBLER])
    assert Path(PROJECT_ROOT / "storage" / "database.py").is_file()
