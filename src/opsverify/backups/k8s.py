"""Kubernetes YAML exports (``kubectl get configmaps -o yaml`` and the like): do they parse, what they hold.

An export is a ``kind: List`` (or ``ConfigMapList``, …) with ``items``, a single object, or
several ``---`` documents of either. It is parsed with PyYAML's safe loader (the libyaml one when
available) and must hold objects with a ``kind``; every expected kind must be among them.
``facts["holds_secrets"]`` is ``yes`` when any object is a Secret. Exports are small; anything
above 64 MiB is refused rather than parsed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from opsverify.backups.verdict import CorruptBackup, Expectations, Verdict, failed, listing, passed

try:
    from yaml import CSafeLoader as Loader
except ImportError:  # PyYAML built without libyaml
    from yaml import SafeLoader as Loader  # type: ignore[assignment]

MAX_BYTES = 64 << 20


def _objects(document: Any, number: int) -> Iterator[dict[str, Any]]:
    """The objects of one YAML document: the items of a List, or the document itself."""
    if document is None:
        return
    if not isinstance(document, dict):
        raise CorruptBackup(f"not a Kubernetes export: document {number} is a {type(document).__name__}, not an object")
    kind = document.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(document.get("items"), list):
        for index, item in enumerate(document["items"], 1):
            if not isinstance(item, dict) or not isinstance(item.get("kind"), str):
                raise CorruptBackup(f"not a Kubernetes export: item {index} of document {number} has no kind")
            yield item
        return
    if not isinstance(kind, str):
        raise CorruptBackup(f"not a Kubernetes export: document {number} has no kind")
    yield document


def load_objects(path: Path) -> list[dict[str, Any]]:
    """Every Kubernetes object in the YAML (or JSON) file at ``path``, Lists unpacked.

    ``CorruptBackup`` when it does not parse (naming the line and column) or is larger than 64 MiB.
    """
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise CorruptBackup(f"too large to parse as Kubernetes YAML ({size:,} bytes, limit 64 MiB)")
    objects: list[dict[str, Any]] = []
    with path.open("rb") as stream:
        try:
            for number, document in enumerate(yaml.load_all(stream, Loader=Loader), 1):
                objects.extend(_objects(document, number))
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise CorruptBackup(f"YAML does not parse: {exc.problem or exc.context}{where}") from None
        except yaml.YAMLError as exc:
            raise CorruptBackup(f"YAML does not parse: {str(exc).splitlines()[0]}") from None
    return objects


MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def manifest_files(path: Path) -> list[Path]:
    """``path`` itself when it is a file, else every *.yaml, *.yml and *.json under it (recursively, sorted)."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.suffix.lower() in MANIFEST_SUFFIXES and p.is_file())


def count_kinds(path: Path) -> Counter[str]:
    """How many objects of each kind the export at ``path`` holds; ``CorruptBackup`` when it does not parse."""
    return Counter(str(item["kind"]) for item in load_objects(path))


def verify_k8s_export(path: Path, expect: Expectations) -> Verdict:
    """Parse a Kubernetes YAML export and check it holds objects of every expected kind."""
    size = path.stat().st_size
    if size > MAX_BYTES:
        return failed(str(path), "k8s-yaml", f"too large to parse as a config export ({size:,} bytes, limit 64 MiB)")
    try:
        kinds = count_kinds(path)
    except CorruptBackup as exc:
        return failed(str(path), "k8s-yaml", str(exc), {"bytes": str(size)})
    holds = listing(f"{count} {kind}" for kind, count in sorted(kinds.items()))
    facts = {
        "bytes": str(size),
        "objects": str(sum(kinds.values())),
        "kinds": ",".join(sorted(kinds)),
        "holds_secrets": "yes" if "Secret" in kinds else "no",
    }
    if not kinds:
        return failed(str(path), "k8s-yaml", "the export holds no Kubernetes objects", facts)
    missing = expect.missing_kinds(kinds)
    if missing:
        detail = f"expected kind(s) missing from the export: {', '.join(missing)} (it holds {holds})"
        return failed(str(path), "k8s-yaml", detail, facts)
    return passed(str(path), "k8s-yaml", f"intact: {sum(kinds.values())} object(s): {holds}", facts)
