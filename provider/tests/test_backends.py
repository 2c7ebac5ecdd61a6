"""The backends: the SLURM backend cancels a job once, the login head is found without a record."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ray_slurm.backends.base import LaunchRequest
from ray_slurm.backends.login import LoginBackend
from ray_slurm.backends.nodes import Node
from ray_slurm.backends.slurm import backend as slurm_backend
from ray_slurm.backends.slurm.backend import SlurmBackend
from ray_slurm.backends.slurm.client import Slurm, SlurmError
from ray_slurm.host.private import user_name


def test_a_job_is_cancelled_once_while_it_drains(
    settings, cluster, fake_bin, tmp_path, monkeypatch
):
    calls = tmp_path / "calls"
    fake_bin("scancel", f'echo "$*" >> {calls}')
    backend = SlurmBackend(settings, Slurm(bin_dir=str(tmp_path / "bin")), cluster)
    now = [1000.0]
    monkeypatch.setattr(slurm_backend.time, "monotonic", lambda: now[0])

    backend.terminate(["11", "12"])
    now[0] += 5  # ray down lists the draining jobs again 5 s later
    backend.terminate(["11", "12", "13"])
    backend.terminate(["11", "12", "13"])
    me = f"--user={user_name()}"  # only ever the user's own jobs, whatever the ids
    assert calls.read_text().splitlines() == [f"{me} 11 12", f"{me} 13"]

    now[0] += slurm_backend.RECANCEL_S  # still there a minute later: ask SLURM again
    backend.terminate(["11"])
    assert calls.read_text().splitlines() == [f"{me} 11 12", f"{me} 13", f"{me} 11"]


def test_a_failed_scancel_is_retried(settings, cluster, fake_bin, tmp_path):
    fake_bin("scancel", 'echo "scancel: error: Unable to contact slurm controller" >&2; exit 1')
    backend = SlurmBackend(settings, Slurm(bin_dir=str(tmp_path / "bin")), cluster)
    for _ in range(2):
        with pytest.raises(SlurmError, match="Unable to contact"):
            backend.terminate(["21"])
    assert backend.slurm.calls == 2  # not remembered as cancelled


def _squeue_lines(*jobs: tuple[str, str, str]) -> str:
    """squeue lines (our format) for (job id, state, job name) of cluster jobs."""
    return "".join(f"{i}|{state}|n1|UNLIMITED|{name}|None\n" for i, state, name in jobs)


@dataclass
class Queue:
    """A SLURM backend over a fake queue: squeue prints ``file``, scancel appends its arguments
    to ``calls``; the lost jobs and the failures the backend reports are collected."""

    file: Path
    calls: Path
    backend: SlurmBackend
    lost: list[list[str]] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)  # every end reported, in the backend's words
    leftovers: list[list[str]] = field(default_factory=list)

    def list_nodes(self) -> list[Node]:
        """One listing; what it reported (the core's input) is kept by kind."""
        seen = self.backend.list_nodes()
        self.ended += [end.why for end in seen.ended]
        self.failures += [(e.node.node_type, e.why) for e in seen.ended if e.types_fault]
        if lost := [e.node.node_id for e in seen.ended if e.lost]:
            self.lost.append(lost)
        self.leftovers.append(seen.leftovers)
        return seen.nodes

    def shows(self, text: str) -> None:
        self.file.write_text(text)

    def cancelled(self) -> list[str]:
        return self.calls.read_text().split() if self.calls.exists() else []


@pytest.fixture
def queue(settings, cluster, fake_bin, tmp_path) -> Queue:
    file, calls = tmp_path / "queue", tmp_path / "calls"
    file.write_text("")
    fake_bin("squeue", f"cat {file}")
    fake_bin("scancel", f'echo "$*" >> {calls}')
    fake_bin("scontrol", "exit 1")  # how a job ended: from squeue's state alone
    fake_bin("sacct", "exit 1")
    return Queue(file, calls, SlurmBackend(settings, Slurm(bin_dir=str(tmp_path / "bin")), cluster))


def test_a_watched_job_that_fails_reports_its_type_once(settings, queue, fake_bin):
    """The job dies of its setup line: the provider hears state, exit code and log tail once;
    jobs it cancelled, jobs of another head and nodes that failed are not the type's fault."""
    fake_bin("scontrol", '[ "$4" = 33 ] && s=NODE_FAIL || s=FAILED\n'
                         'echo "JobId=$4 JobState=$s ExitCode=3:0 RunTime=00:00:01 '
                         'NodeList=n1 StdOut=/nonexistent"')  # fmt: skip
    worker = f"ray.{settings.cluster_name}.worker.cpu"
    queue.shows(_squeue_lines(("31", "RUNNING", worker), ("32", "RUNNING", worker),
                              ("33", "RUNNING", worker)))  # fmt: skip
    assert [n.node_id for n in queue.list_nodes()] == ["31", "32", "33"]
    queue.backend.terminate(["32"])
    queue.shows(
        _squeue_lines(
            ("30", "FAILED", worker),
            ("31", "FAILED", worker),
            ("32", "CANCELLED", worker),
            ("33", "NODE_FAIL", worker),
        )
    )
    assert queue.list_nodes() == []
    assert queue.list_nodes() == []  # listed again: reported once
    assert queue.failures == [("cpu", "job 31 ended FAILED (exit code 3:0) on n1 after 1 s; "
                                      "its log /nonexistent is empty or unreadable")]  # fmt: skip


def test_a_login_head_without_a_record_is_found_and_stopped(settings, cluster):
    """`ray up` interrupted between starting the login head and recording it, or a state file
    moved aside: the head is found from the process table, so `ray down` stops it."""
    cluster.create()
    script = cluster.jobs_dir / "head-head.sh"
    script.write_text("sleep 300 &\nsleep 0.01 & wait\nwait\n")  # a subshell-making script
    impostor = cluster.jobs_dir / "worker-cpu.sh"  # not a head: never taken for one
    impostor.write_text("sleep 300\n")
    head = subprocess.Popen(["bash", str(script)], start_new_session=True)
    other = subprocess.Popen(["bash", str(impostor)], start_new_session=True)
    try:
        backend = LoginBackend(settings, cluster)
        deadline = time.monotonic() + 10
        while not backend.list_nodes().nodes and time.monotonic() < deadline:
            time.sleep(0.05)
        [node] = backend.list_nodes().nodes
        assert (node.node_id, node.kind, node.node_type) == ("login-head", "head", "head")
        assert "login_head" not in cluster.read_state()  # nothing was recorded

        backend.terminate([node.node_id], grace_s=5)
        assert head.wait(timeout=10) is not None
        assert backend.list_nodes().nodes == []
        assert other.poll() is None  # only the head's process group was stopped
    finally:
        for proc in (head, other):
            proc.kill()
            proc.wait()


def test_a_requeued_job_is_reported_lost_left_over_and_never_listed_again(queue):
    """Running, then pending again under the same id (scontrol requeue, preemption with
    REQUEUE): its Ray node is gone. The copy is cancelled and the lost job reported once."""
    name = "ray.example.worker.cpu"
    queue.shows(f"21|RUNNING|n1|58:00|{name}|None\n22|PENDING||1:00:00|{name}|Priority\n")
    assert [(n.node_id, n.state.value) for n in queue.list_nodes()] == [
        ("21", "running"), ("22", "pending")]  # fmt: skip
    queue.shows(f"21|PENDING||1:00:00|{name}|BeginTime\n22|PENDING||1:00:00|{name}|None\n")
    assert [n.node_id for n in queue.list_nodes()] == ["22"]  # pending, never ran
    assert queue.lost == [["21"]]
    assert queue.ended == [
        "worker job 21 (node type cpu) was requeued by SLURM after it ran (BeginTime): its Ray "
        "node is gone; the job is cancelled, a new one replaces it if still needed"
    ]
    # still pending a moment later (the core's scancel is under way): not listed, reported
    # lost once, and left over (to be removed) for as long as it exists
    for _ in range(2):
        assert [n.node_id for n in queue.list_nodes()] == ["22"]
    assert queue.lost == [["21"]]
    assert queue.leftovers == [[], ["21"], ["21"], ["21"]]
    assert queue.cancelled() == []  # a listing cancels nothing: the core removes leftovers


def test_a_running_job_that_ends_node_fail_is_reported_lost(queue):
    name = "ray.example.worker.cpu"
    queue.shows(f"31|RUNNING|n2|58:00|{name}|None\n32|RUNNING|n3|58:00|{name}|None\n")
    queue.list_nodes()
    queue.shows(f"31|NODE_FAIL|n2|0:00|{name}|None\n32|COMPLETED|n3|0:00|{name}|None\n")
    assert queue.list_nodes() == []
    assert queue.lost == [["31"]]  # a job that completed lost nothing


def test_a_preempted_job_is_reported_even_after_ray_asked_to_cancel_it(queue):
    """Ray sees the preempted node's raylet die and terminates the instance before squeue
    shows PREEMPTED: how the job ended is still SLURM's verdict, not our scancel."""
    name = "ray.example.worker.cpu"
    queue.shows(f"51|RUNNING|n1|58:00|{name}|None\n")
    queue.list_nodes()
    queue.backend.terminate(["51"])  # Ray, on the dead raylet
    queue.shows(f"51|PREEMPTED|n1|0:00|{name}|None\n")
    assert queue.list_nodes() == []
    assert [why.split(";")[0] for why in queue.ended] == ["job 51 ended PREEMPTED"]


def test_a_requeue_is_said_even_when_ray_cancelled_the_job_first(queue):
    name = "ray.example.worker.rq"
    queue.shows(f"61|RUNNING|n1|58:00|{name}|None\n")
    queue.list_nodes()
    queue.backend.terminate(["61"])  # Ray saw the raylet die
    queue.shows(f"61|PENDING||1:00:00|{name}|BeginTime\n")
    for _ in range(2):
        assert queue.list_nodes() == []
    assert [why.split(":")[0] for why in queue.ended] == [
        "worker job 61 (node type rq) was requeued by SLURM after it ran (BeginTime)"]  # fmt: skip
    assert queue.lost == [["61"]]


def test_a_job_the_controller_forgot_before_it_was_seen_ended_is_read_from_accounting(
    settings, queue, fake_bin, caplog, tmp_path
):
    """MinJobAge passed between two looks: squeue no longer lists the job at all. Its end is
    read from sacct once and handled as if squeue had shown it; without accounting it is said
    that nobody knows how it ended. A job submitted while squeue runs is not taken as gone."""
    fake_bin("sacct", f'echo "$2" >> {tmp_path}/sacct-asked\n'
                      '[ "$2" = 52 ] && echo "FAILED|3:0|None|n2|1"; '
                      '[ "$2" = 53 ] && echo "NODE_FAIL|0:0|None|n3|500"; exit 0')  # fmt: skip
    worker = f"ray.{settings.cluster_name}.worker.cpu"
    queue.shows(_squeue_lines(("51", "PENDING", worker), ("52", "RUNNING", worker),
                              ("53", "RUNNING", worker)))  # fmt: skip
    assert len(queue.list_nodes()) == 3
    queue.shows("")
    caplog.set_level("INFO")
    assert queue.list_nodes() == []
    assert queue.list_nodes() == []  # asked once
    log = f"{queue.backend.cluster.logs_dir}/{worker}-52.log"
    assert queue.failures == [("cpu", f"job 52 ended FAILED (exit code 3:0) on n2 after 1 s; "
                                      f"its log {log} is empty or unreadable")]  # fmt: skip
    assert queue.lost == [["53"]]  # it ran: its processes may live on
    assert "job 51 (node type cpu) ended and SLURM forgot it" in caplog.text
    assert "no accounting" in caplog.text
    assert (tmp_path / "sacct-asked").read_text().split() == ["51", "52", "53"]


def test_a_job_launched_while_squeue_ran_is_not_taken_for_gone(settings, queue, monkeypatch):
    squeue = queue.backend.slurm.squeue

    def squeue_then_a_launch(user=None):
        jobs = squeue(user)
        queue.backend._watched["61"] = ("worker", "cpu")  # sbatch answered in another thread
        return jobs

    monkeypatch.setattr(queue.backend.slurm, "squeue", squeue_then_a_launch)
    assert queue.list_nodes() == []
    assert queue.backend._watched == {"61": ("worker", "cpu")}
    assert queue.failures == [] and queue.lost == []


def test_a_job_runs_in_the_clusters_directory(settings, queue, fake_bin, tmp_path, monkeypatch):
    """sbatch is told the job's directory: not the one `ray up` or the autoscaler ran in (a
    job would inherit /tmp from a user who typed `ray up` there)."""
    fake_bin("sbatch", f'echo "$*" > {tmp_path}/sbatch-args; echo 71')
    monkeypatch.chdir("/tmp")
    queue.backend.cluster.create()
    spec = settings.node_types["cpu"]
    assert queue.backend.launch(LaunchRequest(spec, head_address="10.0.0.1:1")) == "71"
    args = (tmp_path / "sbatch-args").read_text().split()
    assert f"--chdir={queue.backend.cluster.root}" in args
