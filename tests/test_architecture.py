"""The package layout is a contract: which parts of ``qa`` may import which. Checked over the
source's import statements (every one, also those inside functions) and, for the parts that
must stay free of the database, over what importing them really loads."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

QA = Path(__file__).resolve().parent.parent / "qa"

# The thin layers: nothing in the library may depend on them.
LAYERS = ("qa.cli", "qa.commands", "qa.web")
# The stages' computations: they take and return domain values, the pipeline stores them.
STORAGE_FREE = ("qa.rules", "qa.asr", "qa.classifiers")
STORAGE = ("qa.storage", "qa.audit", "qa.pipeline", "qa.review", "qa.reporting", "qa.ingest.register")


def _module(path: Path) -> str:
    parts = list(path.relative_to(QA.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (``from . import x`` gives ``pkg.x``)."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)
    return {name for name in found if name == "qa" or name.startswith("qa.")}


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


SOURCES = {_module(p): _imports(p) for p in sorted(QA.rglob("*.py")) if "migrations" not in p.parts}


def test_the_scan_sees_the_package():
    assert len(SOURCES) > 80 and "qa.pipeline.jobs" in SOURCES
    assert "qa.storage.models" in SOURCES["qa.pipeline.jobs"]  # relative imports are resolved


def test_the_library_never_imports_the_command_line_or_the_web():
    wrong = {m: sorted(i for i in imports if _under(i, LAYERS))
             for m, imports in SOURCES.items() if not _under(m, LAYERS)}
    assert {m: i for m, i in wrong.items() if i} == {}


def test_rules_asr_and_classifiers_do_not_import_storage():
    wrong = {m: sorted(i for i in imports if _under(i, STORAGE))
             for m, imports in SOURCES.items() if _under(m, STORAGE_FREE)}
    assert {m: i for m, i in wrong.items() if i} == {}


@pytest.mark.parametrize("module", ["qa.rules.stage", "qa.rules.engine", "qa.asr.stage", "qa.classifiers.predict"])
def test_importing_a_stage_does_not_load_the_database_layer(module):
    code = (f"import sys, {module}; "
            "loaded = sorted(m for m in sys.modules if m.startswith(('qa.storage', 'qa.pipeline', 'qa.review')) "
            "or m == 'sqlalchemy'); print(loaded)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
