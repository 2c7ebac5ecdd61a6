"""How a job ended: SLURM's record (scontrol, else sacct) and the end of the job's log."""

from __future__ import annotations

import dataclasses

from ray_slurm.backends.nodes import PORTS_TAKEN_EXIT, START_FAILED_EXIT
from ray_slurm.backends.slurm.client import Slurm
from ray_slurm.backends.slurm.ended import (
    JobEnd,
    how_job_ended,
    log_tail,
    parse_sacct,
    parse_scontrol_job,
)

# Real output of `scontrol show job -o` on the local site (Slurm 22.05) for `exit 3`, shortened.
SCONTROL = (
    "JobId=41 JobName=ray.c.worker.cpu UserId=rsl-alice(1001) JobState=FAILED "
    "Reason=NonZeroExitCode Dependency=(null) ExitCode=3:0 RunTime=00:00:02 TimeLimit=UNLIMITED "
    "NodeList=n2 BatchHost=n2 StdErr={log} StdIn=/dev/null StdOut={log} Power= "
)


def test_scontrol_gives_state_exit_code_node_run_time_and_the_log(fake_bin, tmp_path):
    log = tmp_path / "job.log"
    log.write_text("ray-slurm: setup of node type cpu:\n+ module load nosuch\n\n+ exit 3\n")
    fake_bin("scontrol", f"echo '{SCONTROL.format(log=log)}'")
    end = how_job_ended(Slurm(bin_dir=str(tmp_path / "bin")), "41", "FAILED", "/elsewhere.log")
    assert end == JobEnd("41", "FAILED", "3:0", "NonZeroExitCode", "n2", 2.0, str(log),
                         ("ray-slurm: setup of node type cpu:", "+ module load nosuch",
                          "+ exit 3"))  # fmt: skip
    assert end.types_fault
    assert not dataclasses.replace(end, run_time_s=3600.0).types_fault  # lost after a working life
    # Ray ended at start in each of its attempts, however long they took together
    assert dataclasses.replace(
        end, run_time_s=158.0, exit_code=f"{START_FAILED_EXIT}:0"
    ).types_fault
    # another account held one of its ports (the script's PORTS_TAKEN_EXIT): not the type's fault
    assert not dataclasses.replace(end, exit_code=f"{PORTS_TAKEN_EXIT}:0").types_fault
    text = end.describe()
    assert text.startswith("job 41 ended FAILED (exit code 3:0) on n2 after 2 s; last lines of ")
    assert text.endswith("+ module load nosuch | + exit 3")


def test_a_job_the_controller_forgot_is_read_from_accounting(fake_bin, tmp_path):
    fake_bin("scontrol", "echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1")
    fake_bin("sacct", "echo 'OUT_OF_MEMORY|0:125|None|n3|7'")
    end = how_job_ended(Slurm(bin_dir=str(tmp_path / "bin")), "42", "FAILED", str(tmp_path / "x"))
    assert (end.state, end.exit_code, end.node, end.run_time_s) == ("OUT_OF_MEMORY", "0:125", "n3",
                                                                     7.0)  # fmt: skip
    assert end.describe().endswith("its log " + str(tmp_path / "x") + " is empty or unreadable")


def test_without_scontrol_or_accounting_squeue_state_stands(fake_bin, tmp_path):
    fake_bin("scontrol", "exit 1")
    fake_bin("sacct", "echo 'sacct: error: Slurm accounting storage is disabled' >&2; exit 1")
    end = how_job_ended(Slurm(bin_dir=str(tmp_path / "bin")), "43", "NODE_FAIL", "")
    assert end == JobEnd("43", "NODE_FAIL")
    assert not end.types_fault  # the node failed, not the type
    assert end.describe() == "job 43 ended NODE_FAIL"


def test_parsers_take_the_leading_fields_only():
    fields = parse_scontrol_job("JobId=5 JobState=TIMEOUT Command=/a b=c WorkDir=/x")
    assert fields["JobState"] == "TIMEOUT" and fields["Command"] == "/a"
    assert parse_sacct("") == {}
    assert parse_sacct("CANCELLED by 1001|0:15|None|n1|3\n")["JobState"] == "CANCELLED"


def test_log_tail_reads_only_the_end_of_a_large_log(tmp_path):
    log = tmp_path / "big.log"
    log.write_text("x" * 100_000 + "\n" + "\n".join(f"line {i}" for i in range(10)) + "\n")
    assert log_tail(str(log), 3) == ("line 7", "line 8", "line 9")
    assert log_tail(str(tmp_path / "missing")) == ()
