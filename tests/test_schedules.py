"""The scheduling examples (examples/schedule/) parse as their tools read them, give every cadence marker exactly
one schedule, and the pytest command each names selects that cadence's checks on the test sandbox."""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "schedule"
CADENCES = ("daily", "weekly", "monthly", "quarterly")
GITHUB_CADENCE = "${{ steps.cadence.outputs.cadence }}"


def valid_cron(expression: str) -> bool:
    from croniter import croniter

    return len(expression.split()) == 5 and bool(croniter.is_valid(expression))


def schema_check(schema: str, path: Path) -> None:
    """check-jsonschema with its vendored schema (no network), as CI linting would run it."""
    tool = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "check-jsonschema"
    done = subprocess.run([str(tool), "--builtin-schema", schema, str(path)], capture_output=True, text=True,
                          timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, "ok -- validation done"), done.stdout + done.stderr


def selected(args: list[str] | str, env: dict[str, str], cadence: str, log: Path | None = None) -> list[str]:
    """Run an example's pytest command (argv, or a shell line) with ``--collect-only``; the node ids it selects."""
    full = {**os.environ, **env}
    if isinstance(args, str):
        done = subprocess.run(["sh", "-c", args], cwd=ROOT, env=full, capture_output=True, text=True, timeout=240)
    else:
        done = subprocess.run([*args, "--collect-only", "-q"], cwd=ROOT, env=full, capture_output=True, text=True,
                              timeout=240)
    output = log.read_text() if log is not None else done.stdout
    assert done.returncode == 0, output + done.stderr
    ids = [line for line in output.splitlines() if "::" in line]
    assert ids, f"-m {cadence} selected nothing: {output}"
    summary = re.search(r"(\d+)/\d+ tests? collected", output)
    assert summary is not None, output
    assert int(summary.group(1)) == len(ids)
    return ids


def test_github_actions_workflow(sandbox_profile: Path, tmp_path: Path) -> None:
    path = EXAMPLES / "github-actions.yml"
    schema_check("vendor.github-workflows", path)
    workflow = yaml.safe_load(path.read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    crons = [entry["cron"] for entry in triggers["schedule"]]
    assert all(valid_cron(cron) for cron in crons)
    steps = workflow["jobs"]["checks"]["steps"]
    chooser = next(step for step in steps if step.get("id") == "cadence")["run"]

    def cadence_of(schedule: str, chosen: str = "") -> tuple[int, str]:
        output = tmp_path / "github_output"
        output.write_text("")
        done = subprocess.run(["bash", "-e", "-c", chooser], env={"SCHEDULE": schedule, "CHOSEN": chosen,
                              "GITHUB_OUTPUT": str(output), "PATH": os.environ["PATH"]}, capture_output=True,
                              text=True, timeout=30)
        return done.returncode, output.read_text() or done.stderr

    assert sorted(cadence_of(cron)[1] for cron in crons) == sorted(f"cadence={c}\n" for c in CADENCES)
    assert cadence_of("", "weekly") == (0, "cadence=weekly\n")  # workflow_dispatch
    assert cadence_of("15 * * * *") == (1, "no cadence for the schedule '15 * * * *': add it to this case\n")
    runs = [step.get("run", "") for step in steps]
    assert runs.index("make setup") < next(i for i, run in enumerate(runs) if "pytest" in run)
    upload = next(step for step in steps if str(step.get("uses", "")).startswith("actions/upload-artifact@"))
    assert (upload["if"], upload["with"]["path"]) == ("always()", "reports/latest/")
    command = next(run for run in runs if "pytest" in run)
    assert command == f".venv/bin/pytest -m {GITHUB_CADENCE} --profile=$OPSVERIFY_PROFILE"
    for cadence in CADENCES:
        line = command.replace(GITHUB_CADENCE, cadence) + " --collect-only -q"
        selected(line, {"OPSVERIFY_PROFILE": str(sandbox_profile)}, cadence)


def test_gitlab_ci_schedule(sandbox_profile: Path) -> None:
    path = EXAMPLES / "gitlab-ci.yml"
    schema_check("vendor.gitlab-ci", path)
    job = yaml.safe_load(path.read_text())["opsverify"]
    rule = job["rules"][0]["if"]
    assert rule.startswith('$CI_PIPELINE_SOURCE == "schedule" && $CADENCE =~ /')
    allowed = re.compile(rule.split("=~ /", 1)[1].rstrip("/"))
    assert [c for c in (*CADENCES, "hourly", "") if allowed.search(c)] == list(CADENCES)
    assert job["artifacts"]["when"] == "always"
    # the pipeline schedules to create, listed in the header: one interval pattern per CADENCE
    table = re.findall(r"^#\s+opsverify \w+\s+(.+?)\s+CADENCE=(\w+)$", path.read_text(), re.MULTILINE)
    assert all(valid_cron(pattern) for pattern, _ in table)
    assert sorted(cadence for _, cadence in table) == sorted(CADENCES)
    command = next(line for line in job["script"] if "pytest" in line)
    assert command == '.venv/bin/pytest -m "$CADENCE" --profile="$OPSVERIFY_PROFILE"'
    for cadence in CADENCES:
        selected(f"{command} --collect-only -q", {"CADENCE": cadence, "OPSVERIFY_PROFILE": str(sandbox_profile)},
                 cadence)


def test_kubernetes_cronjobs(sandbox_profile: Path) -> None:
    from kubernetes.client import ApiClient

    api = ApiClient()
    documents = list(yaml.safe_load_all((EXAMPLES / "kubernetes-cronjob.yaml").read_text()))
    by_cadence: dict[str, Any] = {}
    for document in documents:
        job = api.deserialize(json.dumps(document), "V1CronJob", "application/json")  # the client's own models
        assert api.sanitize_for_serialization(job) == document  # no key the API does not know (it would be dropped)
        assert (job.api_version, job.spec.concurrency_policy) == ("batch/v1", "Forbid")
        assert valid_cron(job.spec.schedule)
        pod = job.spec.job_template.spec.template.spec
        volumes = {v.name: v for v in pod.volumes}
        assert volumes["profile"].config_map.name == "opsverify-profile"
        assert volumes["secrets"].secret.secret_name == "opsverify-secrets"
        assert volumes["reports"].persistent_volume_claim.claim_name == "opsverify-reports"
        container = pod.containers[0]
        mounts = {m.name: m.mount_path for m in container.volume_mounts}
        assert mounts["profile"] == "/etc/opsverify/profile.yaml"
        command = container.command
        assert "--profile=/etc/opsverify/profile.yaml" in command
        assert "--reports-root=/reports" in command
        assert mounts["reports"] == "/reports"
        by_cadence[command[command.index("-m") + 1]] = command
    assert sorted(by_cadence) == sorted(CADENCES)
    assert len(documents) == len(CADENCES)
    for cadence, command in by_cadence.items():
        argv = [a.replace("/opt/opsverify", str(ROOT)) for a in command]
        argv = [f"--profile={sandbox_profile}" if a.startswith("--profile=") else a for a in argv]
        selected(argv, {}, cadence)


def test_systemd_service_and_timer(sandbox_profile: Path, tmp_path: Path) -> None:
    service = (EXAMPLES / "opsverify@.service").read_text()
    timer = (EXAMPLES / "opsverify@.timer").read_text()
    units = configparser.ConfigParser(interpolation=None, strict=True)
    units.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    units.read_string(timer)
    assert (units["Timer"]["OnCalendar"], units["Timer"]["Persistent"]) == ("%i", "true")
    units = configparser.ConfigParser(interpolation=None, strict=True)
    units.optionxform = str  # type: ignore[assignment,method-assign]
    units.read_string(service)
    exec_start = units["Service"]["ExecStart"]
    environment = dict([units["Service"]["Environment"].split("=", 1)])
    analyze = shutil.which("systemd-analyze")
    for cadence in CADENCES:  # the instance name is both the calendar shorthand and the marker
        if analyze is not None:
            for name, text in ((f"opsverify@{cadence}.service", service), (f"opsverify@{cadence}.timer", timer)):
                (tmp_path / name).write_text(text.replace("/opt/opsverify", str(ROOT)))
            done = subprocess.run([analyze, "verify", str(tmp_path / f"opsverify@{cadence}.timer"),
                                   str(tmp_path / f"opsverify@{cadence}.service")], capture_output=True, text=True,
                                  timeout=60)
            assert (done.returncode, done.stderr) == (0, "")
            calendar = subprocess.run([analyze, "calendar", cadence], capture_output=True, text=True, timeout=30)
            assert calendar.returncode == 0, calendar.stderr
        else:
            assert cadence in ("daily", "weekly", "monthly", "quarterly", "yearly", "hourly", "minutely")
    assert environment == {"OPSVERIFY_PROFILE": "/etc/opsverify/profile.yaml"}
    for cadence in CADENCES:
        argv = shlex.split(exec_start.replace("%i", cadence).replace("${OPSVERIFY_PROFILE}", str(sandbox_profile)))
        selected([a.replace("/opt/opsverify", str(ROOT)) for a in argv], {}, cadence)


def crontab_lines() -> list[tuple[str, str]]:
    """(schedule, command) of each job line of examples/schedule/crontab."""
    jobs = []
    for line in (EXAMPLES / "crontab").read_text().splitlines():
        if not line.strip() or line.startswith("#") or re.match(r"^[A-Z_]+=", line):
            continue
        fields = line.split(None, 5)
        jobs.append((" ".join(fields[:5]), fields[5]))
    return jobs


def test_crontab_gives_each_cadence_one_line(sandbox_profile: Path, tmp_path: Path) -> None:
    jobs = crontab_lines()
    assert all(valid_cron(schedule) for schedule, _ in jobs)
    cadences = [re.search(r"pytest -m (\w+)", command).group(1) for _, command in jobs]  # type: ignore[union-attr]
    assert sorted(cadences) == sorted(CADENCES)
    for (_, command), cadence in zip(jobs, cadences, strict=True):
        line = command.replace("/opt/opsverify", str(ROOT)).replace("/var/log/opsverify", str(tmp_path))
        line = line.replace(" >>", " --collect-only >>", 1)
        selected(line, {"OPSVERIFY_PROFILE": str(sandbox_profile)}, cadence, log=tmp_path / f"{cadence}.log")


def test_the_daily_cron_line_runs_and_writes_reports(sandbox_profile: Path, tmp_path: Path) -> None:
    """The cron line itself, restricted to the health endpoint checks, passes and leaves its reports."""
    command = next(command for _, command in crontab_lines() if " -m daily " in command)
    reports = tmp_path / "reports"
    line = command.replace("/opt/opsverify", str(ROOT)).replace("/var/log/opsverify", str(tmp_path))
    line = line.replace(" >>", f" -k health_endpoint -p no:randomly --reports-root={reports} >>", 1)
    env = {**os.environ, "OPSVERIFY_PROFILE": str(sandbox_profile)}
    done = subprocess.run(["sh", "-c", line], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    log = (tmp_path / "daily.log").read_text()
    assert done.returncode == 0, log
    evidence = json.loads((reports / "latest" / "evidence.json").read_text())
    outcomes = {check["nodeid"].split("::")[1]: check["outcome"] for check in evidence["checks"]}
    services = ("photonic-foundry", "quantum-planner")
    assert outcomes == {f"test_health_endpoint_answers_2xx[{s}]": "passed" for s in services}
    assert evidence["run"]["selection"]["markexpr"] == "daily"
    assert (reports / "latest" / "report.html").is_file()
    assert re.search(r"^2 passed, \d+ deselected in ", log.splitlines()[-1]), log
