"""The house plan, enforced: each part of the package imports only the parts below it (README,
"Layout"), so that shared pieces never live inside a task and no task reaches into a sibling."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "codebert"

BASE = {"errors", "config", "io", "tables", "inputs", "backbone"}
# part -> the parts it may import (besides itself)
ALLOWED = {
    "errors": set(), "tables": set(), "config": {"errors"}, "io": {"errors"}, "inputs": {"errors"},
    "backbone": {"errors"}, "bleu": {"config", "errors", "io", "tables"}, "bm25": set(),
    "model_card": {"io", "errors"},  # the README.md every model folder carries
    "cli": {"config", "errors", "tables"},
    "corpus": {"config", "errors", "io", "tables"},
    "training": {"config", "errors"},
    "pretrain": BASE | {"corpus", "training", "model_card"},
    "search": BASE | {"corpus", "training", "model_card", "bm25"},
    "code2nl": BASE | {"corpus", "training", "bleu", "model_card", "bm25"},  # bm25: the exemplars' retrieval
    "probe": BASE | {"corpus", "pretrain"},  # Table 4 probes a pre-trained checkpoint's MLM head
    "tool": BASE | {"corpus", "training", "search", "bm25"},  # the tool runs search's models
    "experiments": BASE | {"corpus", "training", "pretrain", "search", "code2nl", "probe", "bleu", "tool", "bm25"},
}


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports_by_part() -> dict[str, set[tuple[str, str]]]:
    found: dict[str, set[tuple[str, str]]] = {}
    for path in PACKAGE.rglob("*.py"):
        module = "codebert." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "codebert":
                targets = [f"codebert.{a.name}" for a in node.names] if node.module == "codebert" else [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.split(".")[0] == "codebert"]
            else:
                continue
            for target in targets:
                if part_of(target) not in ("", "__version__") and part_of(target) != part_of(module):
                    found.setdefault(part_of(module), set()).add((str(path.relative_to(PACKAGE)), target))
    return found


def test_every_part_imports_only_the_parts_below_it():
    found = imports_by_part()
    parts = {part_of("codebert." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts)) for p in PACKAGE.rglob("*.py")}
    assert parts - {"__init__", "__main__"} <= set(ALLOWED), "a new part of the package: give it its place in ALLOWED"
    wrong = sorted(f"{file} imports {target}" for part, edges in found.items() if part in ALLOWED
                   for file, target in edges if part_of(target) not in ALLOWED[part])
    assert wrong == []


def test_the_check_sees_a_sideways_import(tmp_path, monkeypatch):
    # The check itself can fail: a search module that imports from pretrain is caught.
    fake = tmp_path / "codebert"
    (fake / "search").mkdir(parents=True)
    (fake / "search" / "models.py").write_text("from codebert.pretrain.data import collate\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    found = imports_by_part()
    assert ("search/models.py", "codebert.pretrain.data") in found["search"]
    assert "pretrain" not in ALLOWED["search"]


def function_level_imports(package: Path) -> tuple[int, list[str]]:
    """(count, those with no comment on their line or above their block of imports)."""
    total, silent = 0, []
    for path in sorted(package.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for function in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if not isinstance(node, (ast.Import, ast.ImportFrom)):
                    continue
                total += 1
                above = node.lineno - 1
                while above > 0 and (lines[above - 1].strip().startswith(("from ", "import ")) or not lines[above - 1].strip()):
                    above -= 1
                if "#" not in lines[node.lineno - 1] and not lines[above - 1].strip().startswith("#"):
                    silent.append(f"{path.relative_to(package)}:{node.lineno}")
    return total, silent


def test_every_function_level_import_says_why():
    # Imports inside functions are for a command's start-up (`--help`, the lean query path) or an
    # optional heavy library; anything else belongs at the top of its module.
    total, silent = function_level_imports(PACKAGE)
    assert total > 0 and silent == []
