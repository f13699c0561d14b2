"""Kubernetes security rules over object dicts (manifests or ``kubectl get … -o yaml`` exports).

One rule = one small function over ONE object (``per="object"``) or, where it must compare objects,
over the whole set of one manifest set (``per="set"``: NetworkPolicy default-deny per namespace, the
ServiceAccount a pod's token comes from). Each rule is registered with an ID, a severity, the
kube-score and Polaris names of the same rule (so a reader can compare), a one-line why and the
runbook procedure it verifies (PF-45 pod security, NetworkPolicies, secrets; PF-44 RBAC and
service-account tokens, PF-13 for the allow-lists). Rules return findings; they never print.

Objects are named ``Kind/namespace/name`` (``Kind/name`` for cluster-scoped kinds), the form the
policy's ``exemptions`` globs match.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

from opsverify.backups.k8s import load_objects, manifest_files
from opsverify.backups.verdict import CorruptBackup
from opsverify.profile.security import KubernetesPolicy, Severity

Obj = dict[str, Any]
CLUSTER_SCOPED = frozenset({"ClusterRole", "ClusterRoleBinding", "Namespace", "PersistentVolume", "StorageClass"})
POD_SPEC_PATHS = {  # kind -> keys leading to its pod spec
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
BATCH_KINDS = frozenset({"Job", "CronJob"})
DANGEROUS_CAPABILITIES = frozenset(
    {"ALL", "SYS_ADMIN", "NET_ADMIN", "SYS_MODULE", "SYS_PTRACE", "SYS_RAWIO", "SYS_BOOT", "DAC_READ_SEARCH",
     "BPF", "PERFMON", "SYS_TIME", "MAC_ADMIN", "MAC_OVERRIDE", "NET_RAW"}
)
SECRET_NAME = re.compile(
    r"passw(or)?d|passphrase|secret|token|api_?key|private_?key|access_?key|credential|bearer", re.IGNORECASE
)
PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
AWS_ACCESS_KEY = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")
URL_PASSWORD = re.compile(  # scheme://user:password@host; userinfo holds no '/', '?', '#' or whitespace (RFC 3986)
    r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/?#@:]*:(?P<password>[^\s/?#]*)@[^\s/?#@]"
)
REFERENCE = re.compile(r"\$\{[^}]*\}|\$\([^)]*\)|\$[A-Za-z_][A-Za-z0-9_]*|\{\{.*?\}\}")  # ${VAR}, $(VAR), {{ v }}


@dataclass(frozen=True)
class Finding:
    """One object (and, where it applies, one container) breaking a rule."""

    ref: str  # Kind/namespace/name
    detail: str = ""  # "container api", "key DB_PASSWORD"

    def __str__(self) -> str:
        return f"{self.ref} {self.detail}" if self.detail else self.ref


@dataclass(frozen=True)
class Rule:
    """One Kubernetes rule: its identity, the tools' names for it, what it verifies and how to fix it."""

    id: str
    severity: Severity
    kube_score: str  # "-" where kube-score has no such rule
    polaris: str
    why: str
    runbook: tuple[str, ...]
    title: str  # what is wrong, plural: "privileged containers"
    fix: str
    check: Callable[..., Iterator[Finding]]
    per: Literal["object", "set"] = "object"
    requires: Callable[[KubernetesPolicy], str | None] = lambda _: None  # why the policy does not ask for it

    @property
    def group(self) -> Literal["workload", "access", "allowlist"]:
        if "PF-13" in self.runbook:
            return "allowlist"
        return "access" if "PF-44" in self.runbook else "workload"

    def __str__(self) -> str:
        return self.id

    def counted(self, count: int) -> str:
        """``1 privileged container``, ``2 privileged containers``: the title in the number of its findings."""
        return f"{count} {self.title if count != 1 else singular(self.title)}"


PLURAL_NOUN = re.compile(r"\b(containers|pods|namespaces|ConfigMaps|bindings)\b")


def singular(title: str) -> str:
    """A rule's title for one finding: its head noun (the first plural noun) made singular."""
    if title.startswith("Roles or ClusterRoles"):
        return "Role or ClusterRole" + title.removeprefix("Roles or ClusterRoles")
    return PLURAL_NOUN.sub(lambda m: m[1][:-1], title, count=1)


def ref(obj: Obj) -> str:
    """``Kind/namespace/name`` (``Kind/name`` for cluster-scoped kinds)."""
    meta = obj.get("metadata") or {}
    kind, name = obj.get("kind", "?"), meta.get("name", "?")
    if kind in CLUSTER_SCOPED:
        return f"{kind}/{name}"
    return f"{kind}/{namespace(obj)}/{name}"


def namespace(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("namespace") or "default")


def pod_spec(obj: Obj) -> Obj | None:
    """The pod spec of a Pod or of a workload's template; None for other kinds."""
    keys = POD_SPEC_PATHS.get(str(obj.get("kind")))
    node: Any = obj
    for key in keys or ():
        node = node.get(key) if isinstance(node, dict) else None
    return node if keys and isinstance(node, dict) else None


def containers(spec: Obj, init: bool = True) -> Iterator[Obj]:
    keys = ("initContainers", "containers") if init else ("containers",)
    for key in keys:
        for container in spec.get(key) or []:
            if isinstance(container, dict):
                yield container


def _per_container(obj: Obj, broken: Callable[[Obj, Obj], bool], init: bool = True) -> Iterator[Finding]:
    spec = pod_spec(obj)
    if spec is None:
        return
    for container in containers(spec, init):
        if broken(spec, container):
            yield Finding(ref(obj), f"container {container.get('name', '?')}")


def _effective(spec: Obj, container: Obj, key: str) -> Any:
    """A securityContext setting: the container's own, else the pod's."""
    own = (container.get("securityContext") or {}).get(key)
    return own if own is not None else (spec.get("securityContext") or {}).get(key)


def _sc(container: Obj) -> Obj:
    return container.get("securityContext") or {}


# --- pod security (PF-45) -------------------------------------------------------------------------


def run_as_non_root(obj: Obj, policy: KubernetesPolicy) -> Iterator[Finding]:
    def broken(spec: Obj, c: Obj) -> bool:
        user = _effective(spec, c, "runAsUser")
        return not (_effective(spec, c, "runAsNonRoot") is True and user != 0) and not (
            isinstance(user, int) and user > 0
        )

    return _per_container(obj, broken)


def privileged(obj: Obj, policy: KubernetesPolicy) -> Iterator[Finding]:
    return _per_container(obj, lambda _, c: _sc(c).get("privileged") is True)


def privilege_escalation(obj: Obj, policy: KubernetesPolicy) -> Iterator[Finding]:
    return _per_container(obj, lambda _, c: _sc(c).get("allowPrivilegeEscalation") is not False)


def read_only_root(obj: Obj, policy: KubernetesPolicy) -> Iterator[Finding]:
    return _per_container(obj, lambda _, c: _sc(c).get("readOnlyRootFilesystem") is not True)


def _capabilities(c: Obj, key: str) -> set[str]:
    caps = _sc(c).get("capabilities") or {}
    return {str(v).upper().removeprefix("CAP_") for v in caps.get(key) or []}


def drop_all(obj: Obj, policy: KubernetesPolicy) -> Iterator[Finding]:
    return _per_container(obj, lambda _, c: "ALL" not in _capabilities(c, "drop"))


def dangerous_capabilities(obj: Obj, policy: KubernetesPolicy) -> Iterator[Finding]:
    spec = pod_spec(obj)
    for container in containers(spec) if spec is not None else ():
        added = sorted(_capabilities(container, "add") & DANGEROUS_CAPABILITIES)
        if added:
            yield Finding(ref(obj), f"container {container.get('name', '?')} adds {','.join(added)}")


def host_namespaces(obj: Obj, policy: KubernetesPolicy) -> Iterator[Finding]:
    spec = pod_spec(obj)
    shared = [key for key in ("hostNetwork", "hostPID", "hostIPC") if spec is not None and spec.get(key) is True]
    if shared:
        yield Finding(ref(obj), "sets " + ",".join(shared))


def host_path(obj: Obj, policy: KubernetesPolicy) -> Iterator[Finding]:
    spec = pod_spec(obj)
    for volume in (spec or {}).get("volumes") or []:
        if isinstance(volume, dict) and "hostPath" in volume:
            where = (volume["hostPath"] or {}).get("path")
            yield Finding(ref(obj), f"volume {volume.get('name', '?')} (hostPath {where})")


def host_port(obj: Obj, policy: KubernetesPolicy) -> Iterator[Finding]:
    spec = pod_spec(obj)
    for container in containers(spec) if spec is not None else ():
        ports = [p["hostPort"] for p in container.get("ports") or [] if isinstance(p, dict) and p.get("hostPort")]
        if ports:
            yield Finding(ref(obj), f"container {container.get('name', '?')} hostPort {','.join(map(str, ports))}")


def _seccomp_ok(profile: Any) -> bool:
    return isinstance(profile, dict) and profile.get("type") in ("RuntimeDefault", "Localhost")


def seccomp(obj: Obj, policy: KubernetesPolicy) -> Iterator[Finding]:
    def broken(spec: Obj, c: Obj) -> bool:
        own = _sc(c).get("seccompProfile")
        return not _seccomp_ok(own if own is not None else (spec.get("securityContext") or {}).get("seccompProfile"))

    return _per_container(obj, broken)


def resources(obj: Obj, policy: KubernetesPolicy) -> Iterator[Finding]:
    spec = pod_spec(obj)
    for container in containers(spec) if spec is not None else ():
        res = container.get("resources") or {}
        missing = [
            f"{part}.{what}" for part in ("requests", "limits") for what in ("cpu", "memory")
            if not (res.get(part) or {}).get(what)
        ]
        if missing:
            yield Finding(ref(obj), f"container {container.get('name', '?')} lacks {','.join(missing)}")


def probes(obj: Obj, policy: KubernetesPolicy) -> Iterator[Finding]:
    spec = pod_spec(obj)
    if spec is None or obj.get("kind") in BATCH_KINDS:  # a Job runs to completion: probes do not apply
        return
    for container in containers(spec, init=False):
        missing = [p for p in ("livenessProbe", "readinessProbe") if not container.get(p)]
        if missing:
            yield Finding(ref(obj), f"container {container.get('name', '?')} lacks {','.join(missing)}")


def image_tag(image: str) -> str:
    """The tag of an image reference ('' when it has none: registry ports and digests are no tag)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else ""


def image_not_latest(obj: Obj, policy: KubernetesPolicy) -> Iterator[Finding]:
    spec = pod_spec(obj)
    for container in containers(spec) if spec is not None else ():
        image = str(container.get("image", ""))
        if "@" not in image and image_tag(image) in ("", "latest"):
            yield Finding(ref(obj), f"container {container.get('name', '?')} image {image or '(none)'}")


def image_digest(obj: Obj, policy: KubernetesPolicy) -> Iterator[Finding]:
    spec = pod_spec(obj)
    for container in containers(spec) if spec is not None else ():
        image = str(container.get("image", ""))
        if not re.search(r"@sha256:[0-9a-f]{64}$", image):
            yield Finding(ref(obj), f"container {container.get('name', '?')} image {image or '(none)'}")


def _denies_ingress_by_default(obj: Obj) -> bool:
    spec = obj.get("spec") or {}
    selector = spec.get("podSelector")
    types = spec.get("policyTypes") or ["Ingress"]
    return (
        obj.get("kind") == "NetworkPolicy" and selector is not None and not any(selector.values())
        and "Ingress" in types and not spec.get("ingress")
    )


def default_deny(objects: list[Obj], policy: KubernetesPolicy) -> Iterator[Finding]:
    workloads = {namespace(o) for o in objects if pod_spec(o) is not None}
    denied = {namespace(o) for o in objects if _denies_ingress_by_default(o)}
    for ns in sorted(workloads - denied):
        yield Finding(f"Namespace/{ns}")


def url_password(value: str) -> bool:
    """A URL with a password in its userinfo (``postgresql://u:pw@db``, ``redis://:pw@host``); an empty password or
    one that is only references (``${DB_PASSWORD}``, Kubernetes' ``$(DB_PASSWORD)``, ``{{ .pw }}``) is none."""
    return any(REFERENCE.sub("", m["password"]) for m in URL_PASSWORD.finditer(value))


def _looks_secret(value: str) -> bool:
    """A PEM private key, an AWS access key ID or a URL holding a password, whatever the key it sits under."""
    return bool(PRIVATE_KEY.search(value) or AWS_ACCESS_KEY.search(value) or url_password(value))


def _secret_detail(name: str, value: str) -> str:
    """``KEY``, or ``KEY (a URL with a password)`` when only the URL gives it away; never the value itself."""
    quiet = SECRET_NAME.search(name) or PRIVATE_KEY.search(value) or AWS_ACCESS_KEY.search(value)
    return name if quiet or not url_password(value) else f"{name} (a URL with a password)"


def env_secrets(obj: Obj, policy: KubernetesPolicy) -> Iterator[Finding]:
    spec = pod_spec(obj)
    for container in containers(spec) if spec is not None else ():
        for env in container.get("env") or []:
            if not isinstance(env, dict) or env.get("value") in (None, ""):
                continue
            name, value = str(env.get("name")), str(env["value"])
            if SECRET_NAME.search(name) or _looks_secret(value):
                yield Finding(ref(obj), f"container {container.get('name', '?')} env {_secret_detail(name, value)}")


def configmap_secrets(obj: Obj, policy: KubernetesPolicy) -> Iterator[Finding]:
    if obj.get("kind") != "ConfigMap":
        return
    entries = {**(obj.get("data") or {}), **(obj.get("binaryData") or {})}
    for key, value in sorted(entries.items()):
        text = str(value or "")
        if (SECRET_NAME.search(str(key)) and text.strip()) or _looks_secret(text):
            yield Finding(ref(obj), f"key {_secret_detail(str(key), text)}")


# --- access control (PF-44, PF-13 for the allow-lists) ---------------------------------------------


def rbac_wildcards(obj: Obj, policy: KubernetesPolicy) -> Iterator[Finding]:
    if obj.get("kind") not in ("Role", "ClusterRole"):
        return
    name = str((obj.get("metadata") or {}).get("name", ""))
    if any(fnmatchcase(name, glob) for glob in policy.wildcard_roles):
        return
    fields = sorted({
        field for rule in obj.get("rules") or [] if isinstance(rule, dict)
        for field in ("verbs", "resources", "apiGroups") if "*" in (rule.get(field) or [])
    })
    if fields:
        yield Finding(ref(obj), "'*' in " + ",".join(fields))


def subject_name(subject: Obj, binding: Obj) -> str:
    """``Kind:namespace/name`` (``Kind:name`` for users and groups), the form cluster_admin_subjects globs match."""
    kind, name = subject.get("kind", "?"), subject.get("name", "?")
    if kind == "ServiceAccount":
        return f"{kind}:{subject.get('namespace') or namespace(binding)}/{name}"
    return f"{kind}:{name}"


def cluster_admin(obj: Obj, policy: KubernetesPolicy) -> Iterator[Finding]:
    role = obj.get("roleRef") or {}
    if obj.get("kind") not in ("RoleBinding", "ClusterRoleBinding") or role.get("name") != "cluster-admin":
        return
    for subject in obj.get("subjects") or []:
        who = subject_name(subject, obj) if isinstance(subject, dict) else "?"
        if not any(fnmatchcase(who, glob) for glob in policy.cluster_admin_subjects):
            yield Finding(ref(obj), f"subject {who}")


def automount_token(objects: list[Obj], policy: KubernetesPolicy) -> Iterator[Finding]:
    """Polaris semantics: the pod sets false, or leaves it unset and its ServiceAccount sets false."""
    accounts = {
        (namespace(o), (o.get("metadata") or {}).get("name")): o.get("automountServiceAccountToken")
        for o in objects if o.get("kind") == "ServiceAccount"
    }
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        own = spec.get("automountServiceAccountToken")
        account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        if own is True:
            yield Finding(ref(obj), "sets automountServiceAccountToken: true")
        elif own is None and accounts.get((namespace(obj), account)) is not False:
            yield Finding(ref(obj), f"mounts the token of ServiceAccount {account}")


def _digest_required(policy: KubernetesPolicy) -> str | None:
    return None if policy.require_digest else "kubernetes.require_digest is false"


PF45, PF44, PF13 = ("PF-45",), ("PF-44",), ("PF-44", "PF-13")
RULES: tuple[Rule, ...] = (
    Rule("pod-run-as-non-root", "HIGH", "container-security-context-user-group-id", "runAsRootAllowed",
         "a process running as root in the container is root on the node once it escapes", PF45,
         "containers that may run as root",
         "set securityContext.runAsNonRoot: true (and a non-zero runAsUser) on the pod or container", run_as_non_root),
    Rule("pod-privileged", "CRITICAL", "container-security-context-privileged", "runAsPrivileged",
         "a privileged container has every device and capability of the node", PF45,
         "privileged containers", "remove securityContext.privileged: true", privileged),
    Rule("pod-privilege-escalation", "HIGH", "-", "privilegeEscalationAllowed",
         "setuid binaries can gain more privileges than the process started with", PF45,
         "containers allowing privilege escalation", "set securityContext.allowPrivilegeEscalation: false",
         privilege_escalation),
    Rule("pod-read-only-root", "MEDIUM", "container-security-context-readonlyrootfilesystem",
         "notReadOnlyRootFilesystem", "an attacker cannot drop tools into a read-only root filesystem", PF45,
         "containers with a writable root filesystem",
         "set securityContext.readOnlyRootFilesystem: true (emptyDir volumes for scratch paths)", read_only_root),
    Rule("pod-capabilities-drop-all", "MEDIUM", "-", "insecureCapabilities",
         "the runtime's default capabilities (NET_RAW, CHOWN, …) are more than an application needs", PF45,
         "containers not dropping all capabilities", "set securityContext.capabilities.drop: [ALL]", drop_all),
    Rule("pod-dangerous-capabilities", "HIGH", "-", "dangerousCapabilities",
         "SYS_ADMIN, NET_ADMIN, ALL and the like give a container control over the node", PF45,
         "containers adding dangerous capabilities", "remove them from securityContext.capabilities.add",
         dangerous_capabilities),
    Rule("pod-host-namespaces", "HIGH", "-", "hostNetworkSet, hostPIDSet, hostIPCSet",
         "sharing the node's network, process or IPC namespace lets a pod see and reach the node's own", PF45,
         "pods sharing the node's namespaces", "remove hostNetwork, hostPID and hostIPC", host_namespaces),
    Rule("pod-host-path", "HIGH", "-", "-",
         "a hostPath volume exposes the node's filesystem to the pod", PF45,
         "pods mounting hostPath volumes", "use a PersistentVolumeClaim, emptyDir or ConfigMap volume instead",
         host_path),
    Rule("pod-host-port", "MEDIUM", "-", "hostPortSet",
         "a hostPort binds the node's own port and bypasses the Service and NetworkPolicies", PF45,
         "containers binding a hostPort", "remove ports[].hostPort and expose the pod through a Service", host_port),
    Rule("pod-seccomp", "MEDIUM", "container-seccomp-profile", "linuxHardening",
         "without a seccomp profile every syscall of the kernel is reachable", PF45,
         "containers without a seccomp profile",
         "set securityContext.seccompProfile.type: RuntimeDefault on the pod or container", seccomp),
    Rule("pod-resources", "MEDIUM", "container-resources",
         "cpuRequestsMissing, memoryRequestsMissing, cpuLimitsMissing, memoryLimitsMissing",
         "a container without limits can starve its node; without requests it is scheduled blind", PF45,
         "containers without resource requests and limits", "set resources.requests and resources.limits "
         "for cpu and memory", resources),
    Rule("pod-probes", "MEDIUM", "pod-probes", "livenessProbeMissing, readinessProbeMissing",
         "without probes a hung container keeps receiving traffic and is never restarted", PF45,
         "containers without liveness and readiness probes", "add a livenessProbe and a readinessProbe", probes),
    Rule("image-tag-not-latest", "HIGH", "container-image-tag", "tagNotSpecified",
         "latest or no tag runs whatever was pushed last, not the reviewed image", PF45,
         "containers with a latest or missing image tag", "pin a version tag (or a @sha256 digest)",
         image_not_latest),
    Rule("image-digest", "MEDIUM", "-", "-",
         "a tag can be moved to another image; a digest cannot", PF45,
         "containers with an image not pinned by digest", "reference the image as name@sha256:<digest>",
         image_digest, requires=_digest_required),
    Rule("namespace-default-deny", "HIGH", "pod-networkpolicy", "missingNetworkPolicy",
         "without a default-deny NetworkPolicy every pod accepts traffic from every other pod", PF45,
         "namespaces with workloads but no default-deny NetworkPolicy",
         "add a NetworkPolicy with podSelector: {} and policyTypes: [Ingress] (then allow rules)",
         default_deny, per="set"),
    Rule("env-secret-literal", "HIGH", "-", "sensitiveContainerEnvVar",
         "a secret written into the manifest is readable by everyone who can read the Deployment", PF45,
         "containers with secret-looking env literals", "move the value into a Secret and use valueFrom.secretKeyRef",
         env_secrets),
    Rule("configmap-secrets", "HIGH", "-", "sensitiveConfigmapContent",
         "ConfigMaps are not protected like Secrets (RBAC, encryption at rest)", PF45,
         "ConfigMaps holding secret-looking keys or values", "move those entries into a Secret", configmap_secrets),
    Rule("automount-service-account-token", "MEDIUM", "-", "automountServiceAccountToken",
         "a mounted API token is a credential an attacker in the pod can use against the cluster", PF44,
         "pods mounting a service-account token",
         "set automountServiceAccountToken: false on the pod or its ServiceAccount (exempt pods that call the API)",
         automount_token, per="set"),
    Rule("rbac-wildcard", "HIGH", "-", "-",
         "'*' grants every present and future verb, resource or API group", PF13,
         "Roles or ClusterRoles with '*' rules outside kubernetes.wildcard_roles",
         "list the verbs, resources and apiGroups needed (or add the role to kubernetes.wildcard_roles)",
         rbac_wildcards),
    Rule("rbac-cluster-admin", "CRITICAL", "-", "clusterrolebindingClusterAdmin, rolebindingClusterAdminClusterRole",
         "cluster-admin can do anything anywhere in the cluster", PF13,
         "cluster-admin bindings to subjects outside kubernetes.cluster_admin_subjects",
         "bind a narrower role (or add the subject to kubernetes.cluster_admin_subjects)", cluster_admin),
)
BY_ID = {rule.id: rule for rule in RULES}


def exempt(rule: Rule, finding: Finding, policy: KubernetesPolicy) -> bool:
    return any(fnmatchcase(finding.ref, glob) for glob in policy.exemptions.get(rule.id, []))


def evaluate(rule: Rule, objects: list[Obj], policy: KubernetesPolicy) -> list[Finding]:
    """The findings of ``rule`` over the objects, the policy's exemptions removed."""
    if rule.per == "set":
        found = list(rule.check(objects, policy))
    else:
        found = [finding for obj in objects for finding in rule.check(obj, policy)]
    return [f for f in dict.fromkeys(found) if not exempt(rule, f, policy)]


@dataclass(frozen=True)
class Manifests:
    """The objects of one manifest set, or why they could not be read."""

    objects: list[Obj]
    files: int
    error: str | None = None


def load_manifests(path: Path) -> Manifests:
    """Every object of the file or directory at ``path``; ``error`` names the first file that does not parse."""
    if not path.exists():
        return Manifests([], 0, f"{path} does not exist")
    files = manifest_files(path)
    objects: list[Obj] = []
    for file in files:
        try:
            objects += load_objects(file)
        except CorruptBackup as exc:
            return Manifests(objects, len(files), f"{file} does not parse: {exc}")
        except OSError as exc:
            return Manifests(objects, len(files), f"{file} cannot be read: {exc.strerror or exc}")
    if not objects:
        return Manifests([], len(files), f"{path} holds no Kubernetes objects ({len(files)} YAML/JSON file(s))")
    return Manifests(objects, len(files))


def describe(findings: list[Finding], cap: int = 5) -> str:
    """``A, B, C and 4 more``."""
    shown = ", ".join(str(f) for f in findings[:cap])
    return f"{shown} and {len(findings) - cap} more" if len(findings) > cap else shown
