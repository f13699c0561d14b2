"""Kubernetes manifest rules: single rules over object dicts, and checks/security/test_kubernetes_manifests.py
run against copies of the sandbox's manifests with real faults written into them.

Each fault fails exactly its rule's check with its one-line message; the untouched copy passes every
rule; an exemption or an allow-list entry makes a failing rule pass; a manifest that does not parse
fails every rule of its set naming the file and line.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from opsverify.profile import Profile
from opsverify.profile.security import KUBERNETES_RULE_IDS, KubernetesPolicy, subject_problem
from opsverify.rules.kubernetes import (
    BY_ID,
    RULES,
    Finding,
    evaluate,
    image_tag,
    load_manifests,
    pod_spec,
    subject_name,
)

CHECKS = "security/test_kubernetes_manifests.py"
FUNCTION = {"workload": "test_workloads_follow_rule", "access": "test_access_follows_rule",
            "allowlist": "test_access_follows_allow_list"}
Obj = dict[str, Any]


def node(rule_id: str, name: str = "deploy") -> str:
    """The short node id of one rule's check over the manifest set ``name``."""
    return f"test_kubernetes_manifests.py::{FUNCTION[BY_ID[rule_id].group]}[{name}:{rule_id}]"


# --- single rules over object dicts ---------------------------------------------------------------


def deployment(**container: Any) -> Obj:
    return {
        "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "shop"},
        "spec": {"template": {"spec": {"containers": [{"name": "api", "image": "shop/api:1.0", **container}]}}},
    }


def findings(rule_id: str, *objects: Obj, **policy: Any) -> list[str]:
    return [str(f) for f in evaluate(BY_ID[rule_id], list(objects), KubernetesPolicy(**policy))]


def test_every_rule_has_its_identity_and_counterparts() -> None:
    assert len({r.id for r in RULES}) == len(RULES)
    for rule in RULES:
        assert rule.severity in ("LOW", "MEDIUM", "HIGH", "CRITICAL")
        assert rule.why
        assert rule.fix
        assert rule.runbook in (("PF-45",), ("PF-44",), ("PF-44", "PF-13"))
    assert BY_ID["pod-privileged"].kube_score == "container-security-context-privileged"
    assert BY_ID["pod-privileged"].polaris == "runAsPrivileged"


def test_the_profile_knows_every_rule_and_refuses_an_unknown_exemption() -> None:
    assert tuple(BY_ID) == KUBERNETES_RULE_IDS
    with pytest.raises(ValidationError, match="no Kubernetes rule pod-privilegd: the rules are pod-run-as-non-root, "):
        KubernetesPolicy(exemptions={"pod-privilegd": ["Deployment/*"]})


def test_run_as_non_root_takes_the_container_over_the_pod() -> None:
    pod_level = deployment()
    pod_level["spec"]["template"]["spec"]["securityContext"] = {"runAsNonRoot": True}
    assert findings("pod-run-as-non-root", pod_level) == []
    overridden = copy.deepcopy(pod_level)
    overridden["spec"]["template"]["spec"]["containers"][0]["securityContext"] = {"runAsUser": 0}
    assert findings("pod-run-as-non-root", overridden) == ["Deployment/shop/api container api"]
    assert findings("pod-run-as-non-root", deployment(securityContext={"runAsUser": 1000})) == []
    assert findings("pod-run-as-non-root", deployment()) == ["Deployment/shop/api container api"]


def test_container_rules_cover_init_containers_and_cronjobs() -> None:
    cronjob = {
        "kind": "CronJob", "metadata": {"name": "nightly"},
        "spec": {"jobTemplate": {"spec": {"template": {"spec": {
            "initContainers": [{"name": "setup", "image": "busybox", "securityContext": {"privileged": True}}],
            "containers": [{"name": "run", "image": "shop/job:2"}],
        }}}}},
    }
    assert pod_spec(cronjob) is not None
    assert findings("pod-privileged", cronjob) == ["CronJob/default/nightly container setup"]
    assert findings("image-tag-not-latest", cronjob) == ["CronJob/default/nightly container setup image busybox"]
    assert findings("pod-probes", cronjob) == []  # a Job runs to completion: no probes asked


def test_image_tags_and_digests() -> None:
    assert image_tag("registry:5000/shop/api") == ""
    assert image_tag("registry:5000/shop/api:1.2@sha256:" + "a" * 64) == "1.2"
    assert findings("image-tag-not-latest", deployment(image="shop/api:latest")) == [
        "Deployment/shop/api container api image shop/api:latest"
    ]
    assert findings("image-tag-not-latest", deployment(image="shop/api@sha256:" + "a" * 64)) == []
    assert findings("image-digest", deployment(), require_digest=True) == [
        "Deployment/shop/api container api image shop/api:1.0"
    ]
    assert BY_ID["image-digest"].requires(KubernetesPolicy()) == "kubernetes.require_digest is false"


def test_capabilities_and_host_access() -> None:
    caps = deployment(securityContext={"capabilities": {"drop": ["all"], "add": ["NET_BIND_SERVICE", "CAP_SYS_ADMIN"]}})
    assert findings("pod-capabilities-drop-all", caps) == []
    assert findings("pod-dangerous-capabilities", caps) == ["Deployment/shop/api container api adds SYS_ADMIN"]
    host = deployment(ports=[{"containerPort": 80, "hostPort": 80}])
    volumes = [{"name": "h", "hostPath": {"path": "/"}}]
    host["spec"]["template"]["spec"].update(hostNetwork=True, hostPID=False, volumes=volumes)
    assert findings("pod-host-namespaces", host) == ["Deployment/shop/api sets hostNetwork"]
    assert findings("pod-host-path", host) == ["Deployment/shop/api volume h (hostPath /)"]
    assert findings("pod-host-port", host) == ["Deployment/shop/api container api hostPort 80"]


def test_seccomp_resources_and_probes() -> None:
    pod = deployment(resources={"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "1Gi"}})
    pod["spec"]["template"]["spec"]["securityContext"] = {"seccompProfile": {"type": "RuntimeDefault"}}
    assert findings("pod-seccomp", pod) == []
    assert findings("pod-seccomp", deployment(securityContext={"seccompProfile": {"type": "Unconfined"}})) == [
        "Deployment/shop/api container api"
    ]
    assert findings("pod-resources", pod) == ["Deployment/shop/api container api lacks limits.cpu"]
    assert findings("pod-probes", deployment(livenessProbe={"tcpSocket": {"port": 80}})) == [
        "Deployment/shop/api container api lacks readinessProbe"
    ]


def test_default_deny_is_judged_per_namespace() -> None:
    deny = {"kind": "NetworkPolicy", "metadata": {"name": "deny", "namespace": "shop"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    partial = copy.deepcopy(deny)
    partial["spec"]["podSelector"] = {"matchLabels": {"app": "api"}}
    allowing = copy.deepcopy(deny)
    allowing["spec"]["ingress"] = [{}]  # an empty rule allows everything
    assert findings("namespace-default-deny", deployment(), deny) == []
    for policy in (partial, allowing):
        assert findings("namespace-default-deny", deployment(), policy) == ["Namespace/shop"]
    other = copy.deepcopy(deny)
    other["metadata"]["namespace"] = "billing"
    assert findings("namespace-default-deny", deployment(), other) == ["Namespace/shop"]


def test_secrets_in_env_literals_and_configmaps() -> None:
    env = deployment(env=[{"name": "DB_PASSWORD", "value": "hunter2"}, {"name": "LOG_LEVEL", "value": "info"},
                          {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "t"}}}])
    assert findings("env-secret-literal", env) == ["Deployment/shop/api container api env DB_PASSWORD"]
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\n"
    configmap = {"kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "shop"},
                 "data": {"tls.pem": pem, "aws": "AKIAABCDEFGHIJKLMNOP", "secret_name": "", "mode": "fast"}}
    assert findings("configmap-secrets", configmap) == ["ConfigMap/shop/cfg key aws", "ConfigMap/shop/cfg key tls.pem"]


def test_credentials_in_urls_are_secrets_but_references_are_not() -> None:
    env = deployment(env=[
        {"name": "DATABASE_URL", "value": "postgresql://user:s3cr3t-pw@db/x"},
        {"name": "CACHE_URL", "value": "redis://:redis-pw@cache:6379/0"},
        {"name": "UPSTREAM", "value": "https://u:p@host/api"},
        {"name": "EXPANDED", "value": "postgresql://user:$(DB_PASSWORD)@db/x"},
        {"name": "TEMPLATED", "value": "postgresql://user:${DB_PASSWORD}@db/x"},
        {"name": "EMPTY", "value": "redis://user:@cache"},
        {"name": "USER_ONLY", "value": "https://u@host/a?next=b@c"},
        {"name": "PORT_ONLY", "value": "http://host:8080/a@b"},
    ])
    found = findings("env-secret-literal", env)
    assert found == [f"Deployment/shop/api container api env {name} (a URL with a password)"
                     for name in ("DATABASE_URL", "CACHE_URL", "UPSTREAM")]
    assert not any("s3cr3t" in f for f in found)
    assert not any("redis-pw" in f for f in found)
    configmap = {"kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "shop"},
                 "data": {"app.ini": "[db]\nurl = postgresql://app:s3cr3t-pw@db:5432/shop\n",
                          "db_password_url": "postgresql://app:s3cr3t-pw@db/x", "ref": "redis://:${PW}@cache"}}
    assert findings("configmap-secrets", configmap) == [
        "ConfigMap/shop/cfg key app.ini (a URL with a password)", "ConfigMap/shop/cfg key db_password_url"
    ]


def test_every_title_has_its_singular() -> None:
    for rule in RULES:
        assert rule.counted(2) == f"2 {rule.title}"
        assert rule.counted(1) != f"1 {rule.title}", rule.id
    assert BY_ID["pod-privileged"].counted(1) == "1 privileged container"
    assert BY_ID["pod-host-namespaces"].counted(1) == "1 pod sharing the node's namespaces"
    assert BY_ID["rbac-wildcard"].counted(1).startswith("1 Role or ClusterRole with '*' rules")


def test_the_profile_refuses_cluster_admin_subjects_that_match_nothing() -> None:
    KubernetesPolicy(cluster_admin_subjects=["Group:sre", "User:alice@example.com", "ServiceAccount:ci/*",
                                             "ServiceAccount:*"])
    binding = {"kind": "RoleBinding", "metadata": {"name": "b", "namespace": "ci"}}
    for subject in ({"kind": "User", "name": "alice"}, {"kind": "Group", "name": "sre"},
                    {"kind": "ServiceAccount", "name": "deployer"}):  # the form the rule writes is the form accepted
        assert subject_problem(subject_name(subject, binding)) is None
    form = "write User:<name>, Group:<name> or ServiceAccount:<namespace>/<name> (globs allowed in the names)"
    refused = {
        "sre": f"names no subject kind: {form}",
        "User:": "names no user: write User:<name>",
        "serviceaccount:ns/name": "spells the kind 'serviceaccount', and kinds are case-sensitive: "
                                  "write ServiceAccount:ns/name",
        "ServiceAccount:deployer": "is not in the form ServiceAccount:<namespace>/<name> (ServiceAccount:ci/deployer)",
        "Role:admin": f"has kind 'Role', not User, Group or ServiceAccount: {form}",
    }
    for entry, problem in refused.items():
        with pytest.raises(ValidationError) as raised:
            KubernetesPolicy(cluster_admin_subjects=[entry])
        assert raised.value.errors()[0]["msg"] == f"Value error, cluster_admin_subjects entry {entry!r} {problem}"


def test_rbac_wildcards_and_cluster_admin_against_the_allow_lists() -> None:
    role = {"kind": "ClusterRole", "metadata": {"name": "ops-all"},
            "rules": [{"apiGroups": [""], "resources": ["*"], "verbs": ["get"]}]}
    assert findings("rbac-wildcard", role) == ["ClusterRole/ops-all '*' in resources"]
    assert findings("rbac-wildcard", role, wildcard_roles=["ops-*"]) == []
    binding = {"kind": "ClusterRoleBinding", "metadata": {"name": "admins"}, "roleRef": {"name": "cluster-admin"},
               "subjects": [{"kind": "Group", "name": "sre"},
                            {"kind": "ServiceAccount", "name": "deployer", "namespace": "ci"}]}
    assert findings("rbac-cluster-admin", binding) == [
        "ClusterRoleBinding/admins subject Group:sre", "ClusterRoleBinding/admins subject ServiceAccount:ci/deployer"
    ]
    assert findings("rbac-cluster-admin", binding, cluster_admin_subjects=["Group:sre", "ServiceAccount:ci/*"]) == []


def test_token_automount_follows_the_service_account() -> None:
    pod = deployment()
    pod["spec"]["template"]["spec"]["serviceAccountName"] = "api"
    account = {"kind": "ServiceAccount", "metadata": {"name": "api", "namespace": "shop"},
               "automountServiceAccountToken": False}
    assert findings("automount-service-account-token", pod, account) == []
    assert findings("automount-service-account-token", pod) == [
        "Deployment/shop/api mounts the token of ServiceAccount api"
    ]
    pod["spec"]["template"]["spec"]["automountServiceAccountToken"] = True
    assert findings("automount-service-account-token", pod, account) == [
        "Deployment/shop/api sets automountServiceAccountToken: true"
    ]


def test_exemptions_match_object_globs() -> None:
    policy = {"exemptions": {"pod-privileged": ["Deployment/shop/*"]}}
    assert findings("pod-privileged", deployment(securityContext={"privileged": True}), **policy) == []
    assert Finding("Deployment/shop/api", "container api").ref == "Deployment/shop/api"


def test_manifest_sets_load_lists_json_and_directories(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "list.yml").write_text(yaml.safe_dump({"kind": "List", "items": [deployment(), deployment()]}))
    (tmp_path / "one.json").write_text(json.dumps({"kind": "ConfigMap", "metadata": {"name": "c"}}))
    (tmp_path / "notes.txt").write_text("not a manifest")
    loaded = load_manifests(tmp_path)
    assert (loaded.files, len(loaded.objects), loaded.error) == (2, 3, None)
    (tmp_path / "bad.yaml").write_text("kind: ConfigMap\nmetadata: {name: x\n")
    error = load_manifests(tmp_path).error
    assert error == (
        f"{tmp_path / 'bad.yaml'} does not parse: YAML does not parse: did not find expected ',' or '}}' "
        "at line 3, column 1"
    )
    assert load_manifests(tmp_path / "missing").error == f"{tmp_path / 'missing'} does not exist"


# --- the check over copies of the sandbox's manifests ------------------------------------------------


@pytest.fixture
def manifests(sandbox: Profile, tmp_path: Path) -> Path:
    """A copy of the sandbox's manifest directory the test may break."""
    assert sandbox.kubernetes is not None
    where = tmp_path / "manifests"
    shutil.copytree(sandbox.kubernetes.manifests[0].path, where)
    return where


def edit(directory: Path, system: str, mutate: Callable[[list[Obj]], object]) -> None:
    path = directory / f"{system}.yaml"
    objects = list(yaml.safe_load_all(path.read_text()))
    mutate(objects)
    path.write_text(yaml.safe_dump_all(objects, sort_keys=False))


def find(objects: list[Obj], kind: str, name: str) -> Obj:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def pod(objects: list[Obj], name: str) -> Obj:
    spec = pod_spec(find(objects, "Deployment", name))
    assert spec is not None
    return spec


@pytest.fixture
def check_manifests(
    manifests: Path, profile_variant: Callable[..., Path], run_checks: Callable[..., Any]
) -> Callable[..., Any]:
    """``check_manifests(**policy)``: the manifest check run over the copy, the policy's fields changed."""

    def run(**policy: Any) -> Any:
        def mutate(data: dict[str, Any]) -> None:
            data["kubernetes"] = {**data["kubernetes"], "manifests": [{"name": "deploy", "path": str(manifests)}],
                                  **policy}

        return run_checks(profile_variant(mutate), CHECKS)

    return run


def test_the_sandbox_manifests_pass_every_rule(check_manifests: Callable[..., Any]) -> None:
    run = check_manifests()
    assert run.failed() == set()
    assert {t for t, c in run.checks.items() if c["outcome"] == "passed"} == {node(r.id) for r in RULES}


def test_a_privileged_pod_fails_only_its_rule_and_an_exemption_lets_it_pass(
    manifests: Path, check_manifests: Callable[..., Any]
) -> None:
    edit(manifests, "photonic-foundry",
         lambda o: pod(o, "photonic-foundry")["containers"][0]["securityContext"].update(privileged=True))
    run = check_manifests()
    assert run.failed() == {node("pod-privileged")}
    assert run.message(node("pod-privileged")) == (
        "manifests deploy: 1 privileged container (pod-privileged, CRITICAL): "
        "Deployment/photonic-foundry/photonic-foundry container photonic-foundry; "
        "fix: remove securityContext.privileged: true"
    )
    exempted = check_manifests(exemptions={"pod-privileged": ["Deployment/photonic-foundry/*"]})
    assert exempted.failed() == set()


def wildcard_role(objects: list[Obj]) -> None:
    objects.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                    "metadata": {"name": "qp-operator"},
                    "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]})


def test_a_wildcard_cluster_role_fails_outside_the_allow_list(
    manifests: Path, check_manifests: Callable[..., Any]
) -> None:
    edit(manifests, "quantum-planner", wildcard_role)
    run = check_manifests()
    assert run.failed() == {node("rbac-wildcard")}
    assert run.message(node("rbac-wildcard")) == (
        "manifests deploy: 1 Role or ClusterRole with '*' rules outside kubernetes.wildcard_roles "
        "(rbac-wildcard, HIGH): ClusterRole/qp-operator '*' in apiGroups,resources,verbs; fix: list the verbs, "
        "resources and apiGroups needed (or add the role to kubernetes.wildcard_roles)"
    )
    assert check_manifests(wildcard_roles=["qp-*"]).failed() == set()


def test_a_cluster_admin_binding_fails_outside_the_allow_list(
    manifests: Path, check_manifests: Callable[..., Any]
) -> None:
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "qp-admin"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
               "subjects": [{"kind": "ServiceAccount", "name": "quantum-planner", "namespace": "quantum-planner"}]}
    edit(manifests, "quantum-planner", lambda o: o.append(binding))
    run = check_manifests()
    assert run.failed() == {node("rbac-cluster-admin")}
    assert run.message(node("rbac-cluster-admin")) == (
        "manifests deploy: 1 cluster-admin binding to subjects outside kubernetes.cluster_admin_subjects "
        "(rbac-cluster-admin, CRITICAL): ClusterRoleBinding/qp-admin subject ServiceAccount:quantum-planner/"
        "quantum-planner; fix: bind a narrower role (or add the subject to kubernetes.cluster_admin_subjects)"
    )
    assert check_manifests(cluster_admin_subjects=["ServiceAccount:quantum-planner/*"]).failed() == set()


def test_a_secret_in_a_configmap_fails_its_rule(manifests: Path, check_manifests: Callable[..., Any]) -> None:
    edit(manifests, "photonic-foundry",
         lambda o: find(o, "ConfigMap", "photonic-foundry-config")["data"].update(DATABASE_PASSWORD="hunter2"))
    run = check_manifests()
    assert run.failed() == {node("configmap-secrets")}
    assert run.message(node("configmap-secrets")) == (
        "manifests deploy: 1 ConfigMap holding secret-looking keys or values (configmap-secrets, HIGH): "
        "ConfigMap/photonic-foundry/photonic-foundry-config key DATABASE_PASSWORD; "
        "fix: move those entries into a Secret"
    )


def test_a_secret_env_literal_fails_its_rule(manifests: Path, check_manifests: Callable[..., Any]) -> None:
    literal = {"name": "API_TOKEN", "value": "t0k"}
    edit(manifests, "quantum-planner",
         lambda o: pod(o, "quantum-planner-worker")["containers"][0]["env"].append(literal))
    run = check_manifests()
    assert run.failed() == {node("env-secret-literal")}
    assert run.message(node("env-secret-literal")) == (
        "manifests deploy: 1 container with secret-looking env literals (env-secret-literal, HIGH): "
        "Deployment/quantum-planner/quantum-planner-worker container quantum-planner-worker env API_TOKEN; "
        "fix: move the value into a Secret and use valueFrom.secretKeyRef"
    )


def test_a_host_path_volume_fails_its_rule(manifests: Path, check_manifests: Callable[..., Any]) -> None:
    volume = {"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}}
    edit(manifests, "photonic-foundry", lambda o: pod(o, "photonic-foundry")["volumes"].append(volume))
    run = check_manifests()
    assert run.failed() == {node("pod-host-path")}
    assert run.message(node("pod-host-path")) == (
        "manifests deploy: 1 pod mounting hostPath volumes (pod-host-path, HIGH): "
        "Deployment/photonic-foundry/photonic-foundry volume docker (hostPath /var/run/docker.sock); "
        "fix: use a PersistentVolumeClaim, emptyDir or ConfigMap volume instead"
    )


def test_a_latest_tag_fails_the_tag_rule_and_the_digest_rule(
    manifests: Path, check_manifests: Callable[..., Any]
) -> None:
    image = "registry.example.com/terragon/quantum-planner:latest"
    edit(manifests, "quantum-planner", lambda o: pod(o, "quantum-planner-worker")["containers"][0].update(image=image))
    run = check_manifests()
    assert run.failed() == {node("image-tag-not-latest"), node("image-digest")}
    assert run.message(node("image-tag-not-latest")) == (
        "manifests deploy: 1 container with a latest or missing image tag (image-tag-not-latest, HIGH): "
        f"Deployment/quantum-planner/quantum-planner-worker container quantum-planner-worker image {image}; "
        "fix: pin a version tag (or a @sha256 digest)"
    )
    relaxed = check_manifests(require_digest=False)
    assert relaxed.failed() == {node("image-tag-not-latest")}
    assert relaxed.outcome(node("image-digest")) == "skipped"


def test_a_namespace_without_default_deny_fails_its_rule(manifests: Path, check_manifests: Callable[..., Any]) -> None:
    edit(manifests, "quantum-planner", lambda o: o.remove(find(o, "NetworkPolicy", "default-deny")))
    run = check_manifests()
    assert run.failed() == {node("namespace-default-deny")}
    assert run.message(node("namespace-default-deny")) == (
        "manifests deploy: 1 namespace with workloads but no default-deny NetworkPolicy "
        "(namespace-default-deny, HIGH): Namespace/quantum-planner; "
        "fix: add a NetworkPolicy with podSelector: {} and policyTypes: [Ingress] (then allow rules)"
    )


def test_a_pod_without_run_as_non_root_fails_its_rule(manifests: Path, check_manifests: Callable[..., Any]) -> None:
    def root(objects: list[Obj]) -> None:
        for name in ("quantum-planner", "quantum-planner-worker"):
            context = pod(objects, name)["securityContext"]
            del context["runAsNonRoot"], context["runAsUser"]

    edit(manifests, "quantum-planner", root)
    run = check_manifests()
    assert run.failed() == {node("pod-run-as-non-root")}
    assert run.message(node("pod-run-as-non-root")) == (
        "manifests deploy: 2 containers that may run as root (pod-run-as-non-root, HIGH): "
        "Deployment/quantum-planner/quantum-planner container quantum-planner, "
        "Deployment/quantum-planner/quantum-planner-worker container quantum-planner-worker; "
        "fix: set securityContext.runAsNonRoot: true (and a non-zero runAsUser) on the pod or container"
    )


def test_a_mounted_service_account_token_fails_its_rule(manifests: Path, check_manifests: Callable[..., Any]) -> None:
    edit(manifests, "photonic-foundry", lambda o: pod(o, "photonic-foundry").pop("automountServiceAccountToken"))
    assert check_manifests().failed() == set()  # its ServiceAccount still says false
    edit(manifests, "photonic-foundry", lambda o: find(o, "ServiceAccount", "photonic-foundry").pop(
        "automountServiceAccountToken"))
    run = check_manifests()
    assert run.failed() == {node("automount-service-account-token")}
    assert run.message(node("automount-service-account-token")) == (
        "manifests deploy: 1 pod mounting a service-account token (automount-service-account-token, MEDIUM): "
        "Deployment/photonic-foundry/photonic-foundry mounts the token of ServiceAccount photonic-foundry; "
        "fix: set automountServiceAccountToken: false on the pod or its ServiceAccount (exempt pods that call the API)"
    )


def test_an_unparseable_manifest_fails_every_rule_naming_the_file(
    manifests: Path, check_manifests: Callable[..., Any]
) -> None:
    broken = manifests / "extra" / "broken.yaml"
    broken.parent.mkdir()
    broken.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x\n")
    run = check_manifests()
    assert run.failed() == {node(r.id) for r in RULES}
    assert run.message(node("pod-privileged")) == (
        f"manifests deploy: {broken} does not parse: YAML does not parse: did not find expected ',' or '}}' "
        "at line 4, column 1; fix the file (every rule of the set fails until it does)"
    )


def profile_check(profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "opsverify", "profile", "check", str(profile)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_duplicate_manifest_set_names_are_a_profile_error(
    manifests: Path, profile_variant: Callable[..., Path]
) -> None:
    def twice(data: dict[str, Any]) -> None:
        data["kubernetes"]["manifests"] = [{"name": "deploy", "path": str(manifests)},
                                           {"name": "deploy", "path": str(manifests / "quantum-planner.yaml")}]

    done = profile_check(profile_variant(twice))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert ("manifest set name 'deploy' is used more than once (manifests[0] and manifests[1]): "
            "give each set its own name") in done.stderr


def test_a_lowercase_cluster_admin_subject_is_a_profile_error(profile_variant: Callable[..., Path]) -> None:
    def lowercase(data: dict[str, Any]) -> None:
        data["kubernetes"]["cluster_admin_subjects"] = ["serviceaccount:quantum-planner/quantum-planner"]

    done = profile_check(profile_variant(lowercase))
    assert done.returncode == 1
    assert ("cluster_admin_subjects entry 'serviceaccount:quantum-planner/quantum-planner' spells the kind "
            "'serviceaccount', and kinds are case-sensitive: write ServiceAccount:quantum-planner/quantum-planner"
            ) in done.stderr


def test_a_password_in_a_url_fails_the_secret_rules_without_printing_it(
    manifests: Path, check_manifests: Callable[..., Any]
) -> None:
    url = {"name": "DATABASE_URL", "value": "postgresql://planner:pl4nn3r-pw@db:5432/planner"}
    edit(manifests, "quantum-planner",
         lambda o: pod(o, "quantum-planner-worker")["containers"][0]["env"].append(url))
    edit(manifests, "photonic-foundry", lambda o: find(o, "ConfigMap", "photonic-foundry-config")["data"].update(
        CACHE_URL="redis://:f0undry-pw@cache:6379/0"))
    run = check_manifests()
    assert run.failed() == {node("env-secret-literal"), node("configmap-secrets")}
    assert run.message(node("env-secret-literal")) == (
        "manifests deploy: 1 container with secret-looking env literals (env-secret-literal, HIGH): "
        "Deployment/quantum-planner/quantum-planner-worker container quantum-planner-worker env DATABASE_URL "
        "(a URL with a password); fix: move the value into a Secret and use valueFrom.secretKeyRef"
    )
    assert run.message(node("configmap-secrets")) == (
        "manifests deploy: 1 ConfigMap holding secret-looking keys or values (configmap-secrets, HIGH): "
        "ConfigMap/photonic-foundry/photonic-foundry-config key CACHE_URL (a URL with a password); "
        "fix: move those entries into a Secret"
    )
    written = run.result.stdout.str() + "".join(
        f.read_text(errors="replace") for f in run.report_dir.rglob("*") if f.is_file()
    )
    assert "pl4nn3r-pw" not in written
    assert "f0undry-pw" not in written
