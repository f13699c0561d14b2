"""The disaster-recovery document is kept current.

Runbook: QP-16 DR documentation update (quarterly: `git add docs/runbooks/disaster-recovery.md`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from fixtures.expect import expect
from fixtures.reporting import Recorder
from opsverify.durations import format_duration as fmt
from opsverify.probes.document import last_review
from opsverify.profile import Profile

pytestmark = [pytest.mark.recovery, pytest.mark.quarterly]

FIX = {
    "review line": "review it and update that line",
    "git commit": "review it and commit the update",
    "mtime": "review it and add a 'Last reviewed: YYYY-MM-DD' line (a checkout resets the mtime)",
}


@pytest.mark.runbook("QP-16")
def test_dr_document_was_reviewed_within_max_age(profile: Profile, now: datetime, evidence: Recorder) -> None:
    """QP-16: the declared ``dr_document.file`` was reviewed within ``max_age`` (default 92d).

    Its review date, in this order of trust: a ``Last reviewed: YYYY-MM-DD`` line (or ``Last updated:``,
    ``Reviewed:``) in the document; else, in a git work tree, the last commit that touched it; else its mtime,
    which a checkout resets. Which one was used is recorded (``reviewed_from``). A date in the future fails (a
    typo); a missing file fails.
    """
    document = profile.dr_document
    if document is None:
        pytest.skip("no dr_document declared: declare dr_document.file (the disaster-recovery document) in the "
                    "profile to verify QP-16")
    path, limit = document.file, document.max_age
    evidence.record(file=str(path), max_age=fmt(limit))
    review = last_review(path, profile.timeouts.request.total_seconds())
    expect(review.exists, f"the DR document {path} does not exist: write it there, or point dr_document.file at "
           "it (QP-16)")
    expect(review.error is None, f"the DR document {path}: {review.error}: fix it (QP-16)")
    assert review.when is not None
    if review.day is not None:  # a review line names a day: whole days, from the run's UTC date
        age = timedelta(days=(now.date() - review.day).days)
        future = review.day > (now + timedelta(days=1)).date()  # a day of slack for time zones east of UTC
    else:
        age = now - review.when
        future = age < -timedelta(minutes=5)
    shown = review.when.date().isoformat()
    evidence.record(reviewed=shown, reviewed_from=review.detail, age=fmt(age) if age.days < 1 else f"{age.days}d")
    evidence.metric(dr_document_age_seconds=age.total_seconds())
    expect(not future, f"the DR document {path} says it was reviewed on {shown} ({review.detail}), a date in the "
           "future: correct the date (QP-16)")
    expect(
        age <= limit,
        f"the DR document {path} was last reviewed {age.days}d ago (on {shown}, {review.detail}; max "
        f"{fmt(limit)}): {FIX[review.source]} (QP-16)",
    )
