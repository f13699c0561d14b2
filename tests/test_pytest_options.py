"""pytest's --help names the one-word forms of opsverify's path options, and why."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_help_names_the_one_word_profile_form_and_why() -> None:
    done = subprocess.run([sys.executable, "-m", "pytest", "--help", "-p", "no:randomly"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=True)
    text = " ".join(done.stdout.split())
    assert re.search(r"--profile=PATH environment profile \(YAML\); default: \$OPSVERIFY_PROFILE, else the sandbox's "
                     r"\.sandbox/profile\.yaml\. Write it in one word, --profile=PATH: as two words, a PATH outside "
                     r"the checkout makes pytest take that path's folder for the project \(its rootdir\), and the run "
                     r"stops, finding no opsverify configuration", text), text
    assert "one word, --report-dir=DIR" in text
    assert "one word, --reports-root=DIR" in text


def test_readme_runs_pytest_with_the_one_word_profile_form() -> None:
    readme = (ROOT / "README.md").read_text()
    assert [line for line in readme.splitlines() if re.search(r"\bpytest\b.*--profile ", line)] == []
