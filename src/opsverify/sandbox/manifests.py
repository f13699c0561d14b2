"""The sandbox's Kubernetes manifests (``state_dir/manifests``): the two runbook systems as deployed.

photonic-foundry (api on 8000) and quantum-planner (api on 8080 and a worker), each in its own
namespace: Deployments, Services, ServiceAccounts, a Role and RoleBinding (read its own ConfigMap;
no cluster-admin), NetworkPolicies (default-deny per namespace plus allow rules) and a ConfigMap
without secrets. Written to pass every rule of ``opsverify.rules.kubernetes`` with
``require_digest: true``: digest-pinned images, probes, requests and limits, a restricted
securityContext, no service-account token. Passwords come from Secrets (``secretKeyRef``) that the
manifests only name. Nothing applies them to a cluster; the security checks read them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

from opsverify.sandbox.state import Layout

REGISTRY = "registry.example.com/terragon"
Deployments = dict[str, tuple[int | None, list[str]]]  # deployment -> (container port or None, command)
SYSTEMS: dict[str, tuple[str, Deployments]] = {  # namespace -> (version, deployments)
    "photonic-foundry": ("1.2.0", {"photonic-foundry": (8000, ["python", "-m", "photonic_foundry.api"])}),
    "quantum-planner": (
        "2.4.1",
        {
            "quantum-planner": (8080, ["python", "-m", "quantum_planner.api"]),
            "quantum-planner-worker": (None, ["python", "-m", "quantum_planner.worker"]),
        },
    ),
}


def manifests_dir(layout: Layout) -> Path:
    return layout.root / "manifests"


def _image(system: str, version: str) -> str:
    digest = hashlib.sha256(f"{system}:{version}".encode()).hexdigest()
    return f"{REGISTRY}/{system}:{version}@sha256:{digest}"


def _meta(name: str, namespace: str, **labels: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": namespace, **labels}}


def _container(name: str, image: str, port: int | None, command: list[str], system: str) -> dict[str, Any]:
    if port is not None:
        probe: dict[str, Any] = {"httpGet": {"path": "/health", "port": port}, "periodSeconds": 10}
    else:  # the worker serves no HTTP: its liveness is the heartbeat file it touches
        probe = {"exec": {"command": ["python", "-m", "quantum_planner.worker", "--check"]}, "periodSeconds": 30}
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "imagePullPolicy": "Always",
        "command": command,
        "envFrom": [{"configMapRef": {"name": f"{system}-config"}}],
        "env": [
            {
                "name": "DATABASE_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": f"{system}-db", "key": "password"}},
            },
            {"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": f"{system}-redis", "key": "password"}}},
        ],
        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
        "livenessProbe": probe,
        "readinessProbe": probe,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if port is not None:
        container["ports"] = [{"name": "http", "containerPort": port}]
    return container


def _deployment(name: str, system: str, version: str, port: int | None, command: list[str]) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, system, app=name),
        "spec": {
            "replicas": 3 if port is not None else 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": system,
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "runAsGroup": 10001,
                        "fsGroup": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [_container(name, _image(system, version), port, command, system)],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
                },
            },
        },
    }


def system_objects(system: str) -> list[dict[str, Any]]:
    """Every object of one runbook system, in apply order."""
    version, deployments = SYSTEMS[system]
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": system}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(system, system),
            "automountServiceAccountToken": False,
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _meta(f"{system}-config", system),
            "data": {
                "APP_ENV": "sandbox",
                "LOG_LEVEL": "info",
                "DATABASE_HOST": "postgres.databases.svc",
                "DATABASE_NAME": system.replace("-", "_"),
                "REDIS_HOST": "redis.databases.svc",
            },
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(f"{system}-config-reader", system),
            "rules": [
                {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [f"{system}-config"],
                 "verbs": ["get", "watch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(f"{system}-config-reader", system),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{system}-config-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": system, "namespace": system}],
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _meta("default-deny", system),
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        },
    ]
    for name, (port, command) in deployments.items():
        objects.append(_deployment(name, system, version, port, command))
        if port is None:
            continue
        objects.append({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(name, system, app=name),
            "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": port, "targetPort": "http"}]},
        })
        objects.append({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _meta(f"{name}-allow-http", system),
            "spec": {
                "podSelector": {"matchLabels": {"app": name}},
                "policyTypes": ["Ingress"],
                "ingress": [{
                    "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}},
                             {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
                    "ports": [{"protocol": "TCP", "port": port}],
                }],
            },
        })
    objects.append({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta("allow-egress-dns-databases", system),
        "spec": {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [
                {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
                 "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
                {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "databases"}}}],
                 "ports": [{"protocol": "TCP", "port": 5432}, {"protocol": "TCP", "port": 6379}]},
            ],
        },
    })
    return objects


def write_manifests(layout: Layout) -> Path:
    """``manifests/<system>.yaml`` for both systems (rewritten only when their content changed); the directory."""
    where = manifests_dir(layout)
    where.mkdir(parents=True, exist_ok=True)
    for system in SYSTEMS:
        path = where / f"{system}.yaml"
        text = f"# {system}: generated by `opsverify sandbox up`\n" + yaml.safe_dump_all(
            system_objects(system), sort_keys=False
        )
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
    return where
