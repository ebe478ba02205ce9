"""The package's layers, bottom up, and the rule that imports only go down: a module imports from
its own layer or below, never from above, and no two modules import each other (no circles)."""

from __future__ import annotations

import ast
from pathlib import Path

import lcm_lite

PACKAGE = Path(lcm_lite.__file__).parent
LAYERS = [  # bottom up
    [
        "lcm_lite.errors",
        "lcm_lite.extras",
        "lcm_lite.moved",
        "lcm_lite.fields",
        "lcm_lite.json_config",
    ],
    ["lcm_lite.sampling", "lcm_lite.images", "lcm_lite.prompting"],  # NumPy and Pillow
    ["lcm_lite.request"],
    ["lcm_lite.runtime"],  # OpenVINO
    ["lcm_lite.models"],
    ["lcm_lite.pipeline"],
    ["lcm_lite.server", "lcm_lite.quantization"],
    ["lcm_lite.cli", "lcm_lite.__main__"],
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    for index, prefixes in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def _imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """The lcm_lite modules ``path`` imports (anywhere in it, or at its top level only)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else ast.walk(tree)
    imported = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            imported |= {node.module} | {name for name in names if _is_module(name)}
        elif isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
    return {name for name in imported if name.startswith("lcm_lite.")}


def _is_module(name: str) -> bool:
    path = PACKAGE.parent / name.replace(".", "/")
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


MODULES = {
    _module_name(path): path
    for path in sorted(PACKAGE.rglob("*.py"))
    if _module_name(path) != "lcm_lite"  # the package's front: it re-exports from every layer
}


def test_every_module_belongs_to_a_layer():
    for module in MODULES:
        _layer(module)


def test_imports_never_go_up_a_layer():
    upward = [
        f"{module} imports {imported}"
        for module, path in MODULES.items()
        for imported in _imports(path)
        if imported != "lcm_lite" and _layer(imported) > _layer(module)
    ]
    assert upward == []


def test_no_module_imports_itself_back_through_others():
    graph = {
        module: _imports(path, top_level_only=True) & set(MODULES)
        for module, path in MODULES.items()
    }

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for successor in graph[start] - seen:
            if successor == goal or reaches(successor, goal, seen | {successor}):
                return True
        return False

    circles = [module for module in graph if reaches(module, module, set())]
    assert circles == []


def test_the_sampling_math_needs_numpy_alone():
    for module, path in MODULES.items():
        if module.startswith("lcm_lite.sampling"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            third_party = {
                (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
                for node in ast.walk(tree)
                if isinstance(node, (ast.Import, ast.ImportFrom)) and getattr(node, "level", 0) == 0
                for alias in node.names
            }
            assert third_party <= {
                "numpy",
                "lcm_lite",
                "__future__",
                "math",
                "secrets",
                "logging",
                "collections",
                "dataclasses",
                "itertools",
                "typing",
            }, module
