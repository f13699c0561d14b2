"""opsverify's command-line options, registered through the ``pytest11`` entry point.

They must be known before pytest picks its rootdir: ``pytest --profile /elsewhere/profile.yaml``
would otherwise take the profile's path for a test path and look for the configuration there.
Everything else of the pytest side lives in ``fixtures/`` (listed by the root ``conftest.py``).
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("opsverify")
    group.addoption(
        "--profile",
        metavar="PATH",
        help="environment profile (YAML); default: $OPSVERIFY_PROFILE, else the sandbox's .sandbox/profile.yaml. "
        "Write it in one word, --profile=PATH: as two words, a PATH outside the checkout makes pytest take that "
        "path's folder for the project (its rootdir), and the run stops, finding no opsverify configuration",
    )
    group.addoption(
        "--allow-maintenance",
        action="store_true",
        help="let state-changing fixtures run against a profile with role: production",
    )
    group.addoption("--report-dir", metavar="DIR",
                    help="write this run's reports into DIR (default: reports/<UTC>); one word, --report-dir=DIR")
    group.addoption("--reports-root", metavar="DIR",
                    help="parent of the per-run report folders (default: reports/); one word, --reports-root=DIR")
    group.addoption("--no-reports", action="store_true", help="write no report files (the suite's own tests)")
