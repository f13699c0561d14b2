"""The apps' files on disk: models, results, ``.env``, logs, and the Kubernetes manifests they run from.

These are what the runbooks' configuration and archive backups (PF-23, PF-24) copy.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from opsverify.sandbox.state import APPS, Layout

NAMESPACE = "opsverify-sandbox"


def create_app_files(layout: Layout, ports: dict[str, int]) -> None:
    """``app/photonic-foundry/{models,results,logs}``, its env files, and ``app/quantum-planner/logs``."""
    pf = layout.app / "photonic-foundry"
    for sub in ("models", "results", "logs"):
        (pf / sub).mkdir(parents=True, exist_ok=True)
    for i, arch in enumerate(("mzi-mesh", "ring-resonator", "clements")):
        (pf / "models" / f"{arch}-v{i + 1}.onnx").write_bytes(os.urandom(16384))
        meta = {"architecture": arch, "version": f"1.{i}.0", "accuracy": round(0.91 + i / 100, 3)}
        (pf / "models" / f"{arch}-v{i + 1}.json").write_text(json.dumps(meta, indent=2) + "\n")
    for i in range(5):
        result = {"simulation": f"sim-{i + 1}", "transmission": round(0.7 + i / 50, 3), "loss_db": 0.4 + i / 10}
        (pf / "results" / f"simulation_{i + 1:04d}.json").write_text(json.dumps(result) + "\n")
    env = pf / ".env"
    env.touch(mode=0o600)  # private before it holds anything
    env.chmod(0o600)
    env.write_text(
        f"APP_ENV=sandbox\nDATABASE_URL=postgresql://opsverify@127.0.0.1:{ports['postgres']}/photonic_foundry\n"
        f"REDIS_URL=redis://127.0.0.1:{ports['redis']}/0\nLOG_LEVEL=info\n"
    )
    (pf / "docker-compose.yml").write_text("services:\n  api:\n    build: .\n    env_file: .env\n")
    (pf / "Dockerfile").write_text('FROM python:3.11-slim\nCOPY . /app\nCMD ["python", "-m", "photonic"]\n')
    _write_logs(pf / "logs", "photonic-foundry")
    (layout.app / "quantum-planner" / "logs").mkdir(parents=True, exist_ok=True)
    _write_logs(layout.app / "quantum-planner" / "logs", "quantum-planner")


def _write_logs(directory: Path, service: str) -> None:
    now = time.time()
    lines = [
        (now - 7200, "INFO", "service started"),
        (now - 3600, "INFO", "processed 120 requests in the last hour"),
        (now - 1800, "WARNING", "slow request: 812ms on /api/v1/solve"),
        (now - 600, "INFO", "health check ok"),
    ]
    text = "".join(
        f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.localtime(t))} {lvl} {service}: {msg}\n" for t, lvl, msg in lines
    )
    (directory / "app.log").write_text(text)
    rotated = directory / "app.log.1.gz"
    yesterday = now - 86400
    with gzip.open(rotated, "wt") as out:
        out.write(
            f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.localtime(yesterday))} ERROR {service}: "
            "backend timeout after 30s (retried)\n"
        )
    os.utime(rotated, (yesterday, yesterday))


def _meta(name: str, app: str) -> dict[str, Any]:
    return {"name": name, "namespace": NAMESPACE, "labels": {"app": app}}


def configmaps(ports: dict[str, int]) -> dict[str, Any]:
    """``kubectl get configmaps -o yaml`` of the sandbox."""
    items = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _meta(f"{app}-config", app),
            "data": {
                "LOG_LEVEL": "info",
                "PORT": str(ports[app]),
                "DB_HOST": "127.0.0.1",
                "DB_PORT": str(ports["postgres"]),
                "REDIS_PORT": str(ports["redis"]),
            },
        }
        for app in APPS
    ]
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}


def deployments() -> dict[str, Any]:
    """``kubectl get deployments -o yaml`` of the sandbox."""
    items = []
    for app in APPS:
        container = {
            "name": app,
            "image": f"registry.example.com/{app}:1.4.2",
            "ports": [{"containerPort": 8000}],
            "envFrom": [{"configMapRef": {"name": f"{app}-config"}}],
            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
            "securityContext": {
                "runAsNonRoot": True,
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
            },
            "readinessProbe": {"httpGet": {"path": "/health", "port": 8000}, "periodSeconds": 10},
        }
        items.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": _meta(app, app),
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": app}},
                    "template": {"metadata": {"labels": {"app": app}}, "spec": {"containers": [container]}},
                },
                "status": {"replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2},
            }
        )
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}


def secrets_list() -> dict[str, Any]:
    """``kubectl get secrets -o yaml``: random placeholder values, not the sandbox's own secrets."""

    def encoded() -> str:
        return base64.b64encode(secrets.token_urlsafe(18).encode()).decode()

    items = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": _meta(f"{app}-secrets", app),
            "data": {"DB_PASSWORD": encoded(), "API_KEY": encoded()},
        }
        for app in APPS
    ]
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}
