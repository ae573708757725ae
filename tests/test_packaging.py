"""pyproject.toml declares every third-party package that kdnb imports (issue 19, item 6)."""
from __future__ import annotations

import ast
import re
import sys

import pytest

from kdnb.config import PROJECT_ROOT

tomllib = pytest.importorskip("tomllib")

# import name -> distribution name, where they differ
DISTRIBUTIONS = {"sklearn": "scikit-learn", "yaml": "pyyaml", "annotated_types": "annotated-types"}


def kdnb_imports() -> set[str]:
    """Top-level names of the absolute imports in kdnb/ (module level and inside functions)."""
    names = set()
    for path in (PROJECT_ROOT / "kdnb").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"kdnb", "__future__"}


def declared() -> set[str]:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    return {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower() for d in project["dependencies"]}


def test_every_third_party_import_of_kdnb_is_declared():
    imports = kdnb_imports()
    assert {"torch", "transformers", "optuna", "gensim", "spacy"} <= imports  # the scan finds imports
    missing = sorted(DISTRIBUTIONS.get(n, n) for n in imports if DISTRIBUTIONS.get(n, n).lower() not in declared())
    assert not missing, f"pyproject.toml [project] dependencies lack {missing}"
