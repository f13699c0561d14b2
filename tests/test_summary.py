"""The runbook inventory, a team's own runbook IDs, and the run summary (summary.md, summary.html).

Procedure tables are read from real files; malformed ones and unlisted marker IDs stop real pytest runs at the
start.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from opsverify.reporting.inventory import InventoryError, load_inventory, read_procedures

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "runbooks" / "INVENTORY.md"
TEAM_INVENTORY = """# Payments runbook

Some prose, and a table that is not a procedure table:

| owner | rota |
|---|---|
| ops | weekly |

## Payments API

| ID | Cadence | Procedure | the check verifies |
|---|---|---|---|
| OPS-01 | daily | ping the payments API | the API answers |
| OPS-02 | weekly | rotate the signing key | the key is younger than 90 days |
| OPS-H1 | monthly | review the fraud rules | human |
"""


def test_the_shipped_inventory_is_read_by_group_with_its_human_rows() -> None:
    inventory = load_inventory([SHIPPED])
    assert len(inventory.procedures) == 48 + 3 + 31 + 1
    groups = inventory.groups()
    assert list(groups) == ["Photonic Neural Network Foundry (`photonic-foundry-runbook.md`)",
                            "Quantum Planner (`quantum-planner-runbook.md`)"]
    first = groups["Photonic Neural Network Foundry (`photonic-foundry-runbook.md`)"][0]
    assert (first.id, first.cadence, first.procedure, first.line, first.human) == (
        "PF-01", "daily", "health check verification", 14, False)
    assert [p.id for p in inventory.procedures if p.human] == ["PF-H1", "PF-H2", "PF-H3", "QP-H1"]


def test_a_teams_table_comes_first_and_keeps_its_rows(tmp_path: Path) -> None:
    team = tmp_path / "RUNBOOK.md"
    team.write_text(TEAM_INVENTORY + "| PF-01 | hourly | our own health check | the API answers |\n")
    inventory = load_inventory([team, SHIPPED, team])
    assert inventory.files == (team, SHIPPED)
    assert [p.id for p in inventory.procedures[:4]] == ["OPS-01", "OPS-02", "OPS-H1", "PF-01"]
    assert inventory.procedures[3].cadence == "hourly"  # the team's row of an ID both list
    assert [p.group for p in inventory.procedures[:4]] == ["Payments API"] * 4
    assert sum(1 for p in inventory.procedures if p.id == "PF-01") == 1


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("| ID | cadence | procedure | verifies |\n|---|---|---|---|\n| OPS-01 | daily | ping |\n",
         "{path}:5: the row has 3 columns, its table's header 4: give it 4 cells (write a | inside a cell as \\|)"),
        ("| ID | cadence | procedure | verifies |\n|---|---|---|---|\n| OPS-01 | daily | a | b |\n| OPS-01 | x | y | z |\n",
         "{path}:6: OPS-01 is listed twice (first on line 5): give each procedure its own ID"),
        ("| ID | cadence | procedure | verifies |\n| OPS-01 | daily | a | b |\n",
         "{path}:3: the procedure table's header is not followed by a delimiter row: add |---|---|---|---| on line 4"),
        ("| id | cadence | procedure | verifies |\n|---|---|---|---|\n| ops 1 | daily | a | b |\n",
         "{path}:5: 'ops 1' is no procedure ID: write it as capitals, a dash and capitals or digits, e.g. OPS-01"),
    ],
)
def test_a_malformed_procedure_table_names_file_line_and_fix(tmp_path: Path, table: str, message: str) -> None:
    path = tmp_path / "RUNBOOK.md"
    path.write_text(f"# Ops\n\n{table}")
    with pytest.raises(InventoryError) as raised:
        read_procedures(path)
    assert str(raised.value) == message.format(path=path)


def run_team(pytester: pytest.Pytester, profile: Path, *extra: str) -> pytest.RunResult:
    """pytest over the team's own directory (its conftest loads opsverify's plugins)."""
    return pytester.runpytest_subprocess(
        "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(pytester.path), f"--profile={profile}",
        "-p", "no:randomly", *extra, timeout=180,
    )


def team_profile(profile_variant: Callable[..., Path], inventory: Path) -> Path:
    def declare(data: dict[str, Any]) -> None:
        data["reporting"] = {"inventory": str(inventory)}

    return profile_variant(declare)


TEAM_CHECKS = """import pytest


@pytest.mark.daily
@pytest.mark.runbook({ids})
def test_payments_api_answers():
    pass
"""


def test_a_malformed_team_table_stops_the_run_at_the_start(
    pytester: pytest.Pytester, profile_variant: Callable[..., Path], team_conftest: Path
) -> None:
    inventory = pytester.path / "RUNBOOK.md"
    inventory.write_text(TEAM_INVENTORY.replace("| OPS-02 | weekly |", "| OPS-02 | weekly | extra |"))
    pytester.makepyfile(test_team=TEAM_CHECKS.format(ids='"OPS-01"'))
    result = run_team(pytester, team_profile(profile_variant, inventory), "--no-reports", "test_team.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.lines[0] == (f"ERROR: {inventory}:14: the row has 5 columns, its table's header 4: give it "
                                      "4 cells (write a | inside a cell as \\|)")
    assert "test_payments_api_answers" not in result.stdout.str()


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ('"OPS-77"', "runbook ID OPS-77 is listed in no runbook inventory ({team}, {shipped}): add its row to your "
                     "team's table and name that file as reporting.inventory in the profile, or correct the ID"),
        ('"ops-1"', "'ops-1': runbook IDs must look like PF-04 or QP-18 (see runbooks/INVENTORY.md), or a team's own "
                    "OPS-01"),
    ],
)
def test_a_team_check_naming_an_unlisted_id_is_refused(
    pytester: pytest.Pytester, profile_variant: Callable[..., Path], team_conftest: Path, ids: str, message: str
) -> None:
    inventory = pytester.path / "RUNBOOK.md"
    inventory.write_text(TEAM_INVENTORY)
    pytester.makepyfile(test_team=TEAM_CHECKS.format(ids=ids))
    result = run_team(pytester, team_profile(profile_variant, inventory), "--no-reports", "test_team.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    said = message.format(team=inventory, shipped=SHIPPED)
    assert result.stderr.lines[0] == f"ERROR: test_team.py::test_payments_api_answers: {said}"


def test_a_team_check_carrying_its_own_listed_id_runs(
    pytester: pytest.Pytester, profile_variant: Callable[..., Path], team_conftest: Path
) -> None:
    inventory = pytester.path / "RUNBOOK.md"
    inventory.write_text(TEAM_INVENTORY)
    pytester.makepyfile(test_team=TEAM_CHECKS.format(ids='"OPS-01"'))
    result = run_team(pytester, team_profile(profile_variant, inventory), "--no-reports", "test_team.py")
    result.assert_outcomes(passed=1)
