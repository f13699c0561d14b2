"""Kubernetes objects from manifests follow the security rules (``opsverify.rules.kubernetes``).

Each declared manifest set (``kubernetes.manifests``: deploy files or the runbooks' ``kubectl get …
-o yaml`` exports) is checked once per rule, ids ``<set>:<rule-id>``. Runbook: PF-45 security
configuration review (pod securityContext, NetworkPolicies, secrets not in ConfigMaps), PF-44 access
control review (RBAC wildcards, cluster-admin bindings, service-account tokens), PF-13 security audit
review for the rules judged against the profile's allow-lists. A manifest that does not parse fails
every rule of its set, naming the file and line.
"""

from __future__ import annotations

import pytest

from fixtures.expect import expect, fail
from fixtures.kubernetes import ManifestsOf
from fixtures.reporting import Recorder
from opsverify.profile import Profile
from opsverify.profile.security import KubernetesPolicy, ManifestSet
from opsverify.rules.kubernetes import Rule, describe, evaluate

pytestmark = [pytest.mark.security, pytest.mark.kubernetes, pytest.mark.monthly]
Pair = tuple[ManifestSet, Rule]


def follows(pair: Pair, profile: Profile, manifests_of: ManifestsOf, evidence: Recorder) -> None:
    """Fail naming the objects of the set that break the rule (at most five), and the fix."""
    __tracebackhide__ = True
    manifest_set, rule = pair
    assert profile.kubernetes is not None  # the pair exists only when the section does
    policy: KubernetesPolicy = profile.kubernetes
    loaded = manifests_of(manifest_set)
    if loaded.error is not None:
        fail(f"manifests {manifest_set.name}: {loaded.error}; fix the file (every rule of the set fails until it does)")
    reason = rule.requires(policy)
    if reason is not None:
        pytest.skip(f"{rule.id} not required: {reason}")
    findings = evaluate(rule, loaded.objects, policy)
    evidence.record(
        rule=rule.id, severity=rule.severity, kube_score=rule.kube_score, polaris=rule.polaris,
        objects=len(loaded.objects), files=loaded.files, findings=len(findings),
    )
    expect(
        not findings,
        f"manifests {manifest_set.name}: {rule.counted(len(findings))} ({rule.id}, {rule.severity}): "
        f"{describe(findings)}; fix: {rule.fix}",
    )


@pytest.mark.runbook("PF-45")
def test_workloads_follow_rule(
    workload_rule: Pair, profile: Profile, manifests_of: ManifestsOf, evidence: Recorder
) -> None:
    """PF-45: pod security contexts, images, resources, probes, NetworkPolicies and secrets of the set."""
    follows(workload_rule, profile, manifests_of, evidence)


@pytest.mark.runbook("PF-44")
def test_access_follows_rule(
    access_rule: Pair, profile: Profile, manifests_of: ManifestsOf, evidence: Recorder
) -> None:
    """PF-44: service-account tokens are mounted only where the pod needs them."""
    follows(access_rule, profile, manifests_of, evidence)


@pytest.mark.runbook("PF-44", "PF-13")
def test_access_follows_allow_list(
    allowlist_rule: Pair, profile: Profile, manifests_of: ManifestsOf, evidence: Recorder
) -> None:
    """PF-44, PF-13: RBAC wildcards and cluster-admin bindings only where the profile's allow-lists say."""
    follows(allowlist_rule, profile, manifests_of, evidence)
