"""The SLURM wrapper: parsing of squeue/sbatch/sinfo output, the clean environment, and how
failures and timeouts of SLURM commands become SlurmError."""

from __future__ import annotations

import time

import pytest

from ray_slurm.backends.nodes import JobState
from ray_slurm.backends.slurm.client import (
    Job,
    Slurm,
    SlurmError,
    first_node,
    job_state,
    parse_sbatch,
    parse_sinfo_nodes,
    parse_squeue,
    parse_version,
)
from ray_slurm.backends.slurm.jobenv import clean_env
from ray_slurm.host.private import user_name

# ------------------------------------------------------------------------------------- states


@pytest.mark.parametrize(
    ("slurm_state", "expected"),
    [
        ("PENDING", JobState.PENDING),
        ("CONFIGURING", JobState.PENDING),
        ("SUSPENDED", JobState.PENDING),
        ("RUNNING", JobState.RUNNING),
        ("COMPLETING", JobState.STOPPING),
        ("COMPLETED", JobState.GONE),
        ("CANCELLED", JobState.GONE),
        ("FAILED", JobState.GONE),
        ("TIMEOUT", JobState.GONE),
        ("NODE_FAIL", JobState.GONE),
        ("PREEMPTED", JobState.GONE),
        ("OUT_OF_MEMORY", JobState.GONE),
        # decorations squeue/sacct may add still map by the state word
        ("CANCELLED by 1000", JobState.GONE),
        ("COMPLETING+", JobState.STOPPING),
    ],
)
def test_job_state_maps_every_documented_state(slurm_state, expected):
    assert job_state(slurm_state) is expected


@pytest.mark.parametrize("slurm_state", ["SOMETHING_NEW", "", "weird state"])
def test_unknown_state_is_pending_so_the_job_is_never_forgotten(slurm_state):
    assert job_state(slurm_state) is JobState.PENDING


# ------------------------------------------------------------------------------------- squeue


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("slurm 22.05.8\n", (22, 5, 8)),
        ("slurm-wlm 24.11.5\n", (24, 11, 5)),
        ("slurm 25.11", (25, 11, 0)),
    ],
)
def test_parse_version_of_each_release(text, expected):
    assert parse_version(text) == expected


def test_parse_version_refuses_what_is_no_version():
    with pytest.raises(SlurmError, match="no SLURM version"):
        parse_version("sinfo: command not understood")


def test_parse_squeue_fields():
    text = (
        "101|RUNNING|n[1-3],m2|59:30|ray.example.worker.cpu|None\n"
        "\n"
        "102|PENDING||1:00:00|ray.example.worker.cpu|Resources\n"
    )
    running, pending = parse_squeue(text)
    assert running == Job(
        job_id="101",
        name="ray.example.worker.cpu",
        slurm_state="RUNNING",
        node="n1",
        time_left="59:30",
        reason="",  # squeue says "None" for a running job: no reason
    )
    assert running.state is JobState.RUNNING
    assert pending.job_id == "102"
    assert pending.node == ""
    assert pending.reason == "Resources"
    assert pending.state is JobState.PENDING


def test_parse_squeue_job_name_with_pipes():
    (job,) = parse_squeue("7|COMPLETING|c5|0:10|my|odd|name|NonZeroExitCode\n")
    assert job.job_id == "7"
    assert job.name == "my|odd|name"
    assert job.reason == "NonZeroExitCode"
    assert job.node == "c5"
    assert job.state is JobState.STOPPING


def test_parse_squeue_null_nodelist():
    (job,) = parse_squeue("8|PENDING|(null)|1:00|ray.example.worker.cpu|Priority\n")
    assert job.node == ""


def test_parse_squeue_empty_output():
    assert parse_squeue("") == []
    assert parse_squeue("\n  \n") == []


@pytest.mark.parametrize(
    "line",
    [
        "garbage",
        "1|RUNNING|n1|1:00",  # too few fields
        "1|RUNNING|n1|1:00|name-without-reason",  # name and reason not separated
    ],
)
def test_parse_squeue_malformed_line_raises(line):
    with pytest.raises(SlurmError, match="cannot parse squeue line"):
        parse_squeue("1|RUNNING|n1|1:00|ok|None\n" + line + "\n")


@pytest.mark.parametrize(
    ("nodelist", "first"),
    [
        ("n[1-3],m2", "n1"),
        ("n[07-09]", "n07"),
        ("n[4,6-8]", "n4"),
        ("gpu-a[12-13]", "gpu-a12"),
        ("m2,n[1-3]", "m2"),
        ("c5", "c5"),
        ("", ""),
        ("(null)", ""),
        ("None", ""),
    ],
)
def test_first_node(nodelist, first):
    assert first_node(nodelist) == first


# ------------------------------------------------------------------------------- sbatch, sinfo


@pytest.mark.parametrize(("text", "job_id"), [("123", "123"), ("123;cluster\n", "123")])
def test_parse_sbatch(text, job_id):
    assert parse_sbatch(text) == job_id


@pytest.mark.parametrize("text", ["", "Submitted batch job 123", "abc;cluster", "12a"])
def test_parse_sbatch_garbage_raises(text):
    with pytest.raises(SlurmError, match="no job id"):
        parse_sbatch(text)


def test_parse_sinfo_node_listed_twice():
    text = "n1|10.0.0.1|n1.cluster\nn1|10.0.0.1|n1.cluster\nn2|10.0.0.2|n2.cluster\n\n"
    nodes = parse_sinfo_nodes(text)
    assert sorted(nodes) == ["n1", "n2"]
    assert nodes["n1"].addr == "10.0.0.1"
    assert nodes["n2"].hostname == "n2.cluster"


def test_parse_sinfo_malformed_raises():
    with pytest.raises(SlurmError, match="cannot parse sinfo line"):
        parse_sinfo_nodes("n1|10.0.0.1\n")


# ------------------------------------------------------------------------------------ clean_env


def test_clean_env_drops_job_and_ray_identity_keeps_site_vars():
    base = {
        "SLURM_JOB_ID": "5",
        "SLURM_CPUS_PER_TASK": "2",
        "SQUEUE_FORMAT": "%i",
        "SINFO_FORMAT": "%N",
        "RAY_CLOUD_INSTANCE_ID": "5",
        "RAY_OVERRIDE_RESOURCES": "{}",
        "RAY_NODE_TYPE_NAME": "cpu",
        "RAY_ADDRESS": "1.2.3.4:6379",
        "SLURM_CONF": "/etc/slurm/slurm.conf",
        "PATH": "/usr/bin",
        "RAY_AUTH_MODE": "token",
        # the user's shell must not rename or move the jobs, nor replace the cluster's token
        "SBATCH_JOB_NAME": "x",
        "SBATCH_PARTITION": "long",
        "SBATCH_ACCOUNT": "someone-else",
        "SALLOC_PARTITION": "long",
        "SRUN_CPUS_PER_TASK": "9",
        "SCONTROL_FEDERATION": "1",
        "RAY_AUTH_TOKEN": "not-the-clusters",
        "RAY_AUTH_TOKEN_PATH": "/tmp/planted",
        "RAY_TMPDIR": "/tmp/private-root",
    }
    env = clean_env(base)
    assert env == {
        "SLURM_CONF": "/etc/slurm/slurm.conf",
        "PATH": "/usr/bin",
        "RAY_TMPDIR": "/tmp/private-root",
    }
    assert "SLURM_JOB_ID" in base  # the caller's mapping is not changed


def test_clean_env_defaults_to_os_environ(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "99")
    monkeypatch.setenv("SLURM_CONF", "/x/slurm.conf")
    env = clean_env()
    assert "SLURM_JOB_ID" not in env
    assert env["SLURM_CONF"] == "/x/slurm.conf"


# ------------------------------------------------------------------------ running the commands


def test_squeue_call_uses_fixed_format_and_clean_env(fake_bin, tmp_path, monkeypatch):
    record = tmp_path / "squeue.args"
    fake_bin(
        "squeue",
        f'printf "%s\\n" "$@" "job=${{SLURM_JOB_ID-unset}}" "fmt=${{SQUEUE_FORMAT-unset}}" '
        f'"conf=${{SLURM_CONF-unset}}" > {record}\n'
        "echo '11|RUNNING|n[2-4]|5:00|ray.example.worker.cpu|None'",
    )
    fake_bin("scontrol", "true")  # show federation: none
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    monkeypatch.setenv("SQUEUE_FORMAT", "%j")
    monkeypatch.setenv("SLURM_CONF", "/site/slurm.conf")
    slurm = Slurm(str(tmp_path / "bin"), timeout_s=10)
    (job,) = slurm.squeue(user="alice")
    assert (job.job_id, job.node, job.state) == ("11", "n2", JobState.RUNNING)
    args = record.read_text().splitlines()
    assert "--noheader" in args
    assert "--states=all" in args
    assert "--user=alice" in args
    assert "--format=%i|%T|%N|%L|%j|%r" in args
    assert "job=unset" in args
    assert "fmt=unset" in args
    assert "conf=/site/slurm.conf" in args
    assert "--local" in args  # no federation: squeue need not look one up
    assert slurm.calls == 2  # the federation asked once, then squeue
    slurm.squeue(user="alice")
    assert slurm.calls == 3


@pytest.mark.parametrize(("scontrol", "local"), [
    ("echo 'Federation: fed1'; echo 'Self: c1:10.0.0.1:6817 ID:1 FedState:ACTIVE'", False),
    ("exit 1", False),  # unknown: as SLURM lists by default
    ("true", True),
])  # fmt: skip
def test_squeue_lists_locally_only_outside_a_federation(fake_bin, tmp_path, scontrol, local):
    """In a federation a job may run on a sibling while this cluster keeps a revoked copy."""
    record = tmp_path / "squeue.args"
    fake_bin("squeue", f'printf "%s\\n" "$@" > {record}')
    fake_bin("scontrol", scontrol)
    Slurm(str(tmp_path / "bin")).squeue(user="alice")
    assert ("--local" in record.read_text().splitlines()) is local


def test_sbatch_returns_job_id(fake_bin, tmp_path):
    record = tmp_path / "sbatch.args"
    fake_bin("sbatch", f'printf "%s\\n" "$@" > {record}; echo "4711;cluster"')
    slurm = Slurm(str(tmp_path / "bin"), timeout_s=10)
    assert slurm.sbatch("/x/job.sh") == "4711"
    assert record.read_text().splitlines() == ["--parsable", "/x/job.sh"]


def test_failing_command_raises_with_slurms_words(fake_bin, tmp_path):
    fake_bin("sbatch", "echo 'sbatch: error: invalid partition specified: nope' >&2; exit 1")
    slurm = Slurm(str(tmp_path / "bin"), timeout_s=10)
    with pytest.raises(SlurmError, match="sbatch failed: .*invalid partition specified: nope"):
        slurm.sbatch("/x/job.sh")


def test_missing_command_raises(tmp_path):
    slurm = Slurm(str(tmp_path / "nothing-here"), timeout_s=10)
    with pytest.raises(SlurmError, match="not found"):
        slurm.squeue(user="alice")


def test_run_timeout_raises_slurm_error_naming_the_command(fake_bin, tmp_path):
    fake_bin("squeue", "exec sleep 10")
    slurm = Slurm(str(tmp_path / "bin"), timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(SlurmError, match="squeue") as excinfo:
        slurm.squeue(user="alice")
    assert time.monotonic() - started < 5
    assert "did not answer" in str(excinfo.value)


def test_run_timeout_message_states_the_real_timeout(fake_bin, tmp_path):
    # BUG (slurm.py, Slurm.run): the message formats the timeout with ":.0f", so a 0.5 s timeout
    # is reported as "within 0 s" (and 2.5 s as "2 s"). Expected: the configured value.
    fake_bin("squeue", "exec sleep 10")
    slurm = Slurm(str(tmp_path / "bin"), timeout_s=0.5)
    with pytest.raises(SlurmError) as excinfo:
        slurm.squeue(user="alice")
    assert "0.5 s" in str(excinfo.value)


# ------------------------------------------------------------------------------------- scancel


def test_scancel_already_gone_jobs_are_not_an_error(fake_bin, tmp_path):
    record = tmp_path / "scancel.args"
    fake_bin(
        "scancel",
        f'printf "%s\\n" "$@" > {record}\n'
        'echo "scancel: error: Kill job error on job id 5: Invalid job id specified" >&2\n'
        'echo "scancel: error: Kill job error on job id 6: Invalid job id specified" >&2\n'
        "exit 1",
    )
    slurm = Slurm(str(tmp_path / "bin"), timeout_s=10)
    slurm.scancel(["5", "6"], signal="TERM")
    assert record.read_text().splitlines() == [f"--user={user_name()}", "--signal=TERM", "5", "6"]


def test_scancel_other_errors_raise(fake_bin, tmp_path):
    fake_bin(
        "scancel",
        'echo "scancel: error: Kill job error on job id 5: Invalid job id specified" >&2\n'
        'echo "scancel: error: Unable to contact slurm controller (connect failure)" >&2\n'
        "exit 1",
    )
    slurm = Slurm(str(tmp_path / "bin"), timeout_s=10)
    with pytest.raises(SlurmError, match="Unable to contact slurm controller"):
        slurm.scancel(["5", "6"])


def test_scancel_failure_without_message_raises(fake_bin, tmp_path):
    fake_bin("scancel", "exit 2")
    slurm = Slurm(str(tmp_path / "bin"), timeout_s=10)
    with pytest.raises(SlurmError, match="scancel failed"):
        slurm.scancel(["5"])


def test_scancel_nothing_runs_nothing(tmp_path):
    slurm = Slurm(str(tmp_path / "nothing-here"), timeout_s=10)
    slurm.scancel([])
    assert slurm.calls == 0


def test_node_lookup(fake_bin, tmp_path):
    fake_bin("sinfo", "echo 'n1|10.0.0.1|n1.local'; echo 'n1|10.0.0.1|n1.local'")
    slurm = Slurm(str(tmp_path / "bin"), timeout_s=10)
    assert slurm.node("n1").addr == "10.0.0.1"
    with pytest.raises(SlurmError, match="does not know node 'n9'"):
        slurm.node("n9")
