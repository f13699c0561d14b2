"""Layers point one way (DESIGN.md): nothing but the CLI imports the sandbox, the sandbox imports no
drill code, and the low layers (local servers, facts, probes) import none of the layers above them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "opsverify"
# package -> packages it must never import
FORBIDDEN = {
    "localserver": ("sandbox", "restore", "actions", "backups", "probes", "facts", "reporting"),
    "facts": ("sandbox", "restore", "actions", "localserver", "backups"),
    "probes": ("sandbox", "restore", "actions"),
    "backups": ("sandbox", "restore", "actions"),
    "actions": ("sandbox", "restore"),
    "restore": ("sandbox",),
    "reporting": ("sandbox", "restore", "actions"),
    "profile": ("sandbox", "restore", "actions", "probes", "backups", "localserver", "facts"),
    "sandbox": ("restore", "actions"),
    "scanners": ("sandbox", "restore", "actions", "probes", "backups", "localserver", "facts", "reporting"),
    "rules": ("sandbox", "restore", "actions", "localserver", "reporting"),  # judge facts (probes' value objects)
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # from opsverify import sandbox
    return {name for name in found if name == "opsverify" or name.startswith("opsverify.")}


def modules(*dirs: Path) -> list[Path]:
    return sorted(p for d in dirs for p in d.rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_no_layer_above_it(package: str) -> None:
    bad = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in modules(PACKAGE / package)
        for name in imports_of(path)
        if name.split(".")[1:2] and name.split(".")[1] in FORBIDDEN[package]
    }
    assert not bad, sorted(bad)


def test_nothing_but_the_cli_imports_the_sandbox() -> None:
    outside = [p for p in modules(PACKAGE, ROOT / "fixtures", ROOT / "checks") if "sandbox" not in p.parts]
    bad = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in outside
        if path.name != "cli.py"
        for name in imports_of(path)
        if name.startswith("opsverify.sandbox") or name == "opsverify.sandbox"
    }
    assert not bad, sorted(bad)
    assert any(name.startswith("opsverify") for name in imports_of(PACKAGE / "cli.py"))
