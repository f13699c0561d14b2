"""The loader's value limit: 1,000,000 values refuse a profile at once; a 20,000-source profile stays far below it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from opsverify.errors import ProfileError
from opsverify.profile import load_profile
from opsverify.profile.loader import MAX_BYTES

ROOT = Path(__file__).resolve().parents[1]


def test_a_profile_of_more_than_a_million_values_is_refused_in_one_sentence(tmp_path: Path) -> None:
    path = tmp_path / "many.yaml"
    path.write_text("name: x\nhosts:\n  - [" + "0," * 1_000_000 + "0]\n")
    assert path.stat().st_size < MAX_BYTES  # the value limit, not the size cap, refuses it
    with pytest.raises(ProfileError) as caught:
        load_profile(path, {})
    assert caught.value.problems == ["not a usable profile: line 3: more than 1,000,000 values: a profile is smaller"]


def test_a_20000_source_profile_still_loads_under_the_limit(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from bench_profile import big_profile
    finally:
        sys.path.remove(str(ROOT / "bench"))
    path = tmp_path / "big.yaml"
    path.write_text(big_profile(20_000))
    assert len(load_profile(path, {}).backups) == 20_000
