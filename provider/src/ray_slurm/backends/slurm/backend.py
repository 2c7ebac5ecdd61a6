"""The SLURM backend: each Ray node is one batch job named ``ray.<cluster>.<kind>.<type>``.

One ``squeue`` lists every job of the cluster; ``sbatch`` submits the type's job script
(``jobscript``); one ``scancel`` ends any number of jobs. Commands reach a job's node with
``srun --jobid=<id> --overlap``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ray_slurm.backends.base import LaunchRequest, Preview
from ray_slurm.backends.nodes import Ended, JobState, Node, Seen
from ray_slurm.backends.slurm.client import Job, Slurm
from ray_slurm.backends.slurm.ended import FAILED_STATES, LOST_STATES, how_job_ended
from ray_slurm.backends.slurm.formats import parse_duration
from ray_slurm.backends.slurm.jobscript import job_log, parse_job_name, render
from ray_slurm.backends.slurm.nodemap import NodeAddresses
from ray_slurm.config import NodeTypeSpec, Settings
from ray_slurm.host.state import ClusterDir, write_private

if TYPE_CHECKING:
    from ray_slurm.backends.command_runner import CommandContext, LocalCommandRunner

logger = logging.getLogger(__name__)


# A job cancelled less than this long ago is not cancelled again: `ray down` (every 5 s) and the
# autoscaler ask again while a job drains (up to Ray's 30 s drain window), one scancel is enough.
RECANCEL_S = 60.0


class SlurmBackend:
    """Each node is one SLURM batch job named ``ray.<cluster>.<kind>.<type>``.

    Its listing reports, besides the jobs that are nodes, the jobs this process launched or saw
    alive that then ended in failure (``ended``): how, whether through the type's fault, and
    whether the job was taken from under its running Ray node (NODE_FAIL, PREEMPTED: its Ray
    processes may live on). Jobs that ended before this process watched them (a previous
    head's) are not reported.

    A job seen running that SLURM then requeues (same id, pending again) or suspends has lost
    its Ray node: it is reported lost, and then as a leftover for as long as it exists, never
    re-adopted — a node started again under the same id would be a new Ray node under an old
    identity, counted twice while Ray forgets the old one. Jobs are submitted ``--no-requeue``
    so that SLURM cancels rather than requeues them; this catches a site's or user's
    ``--requeue`` and an admin's ``scontrol requeue``.

    A watched job that is gone from squeue without having been seen ended (the controller forgot
    it first: a short ``MinJobAge``, or no tick in between) is looked up once in SLURM's records
    (``sacct`` where the site keeps accounting) and reported as if it had been seen ending.
    """

    name = "slurm"
    noun = "job"

    def __init__(
        self,
        settings: Settings,
        slurm: Slurm,
        cluster: ClusterDir,
        addresses: NodeAddresses | None = None,
    ) -> None:
        self.settings = settings
        self.slurm = slurm
        self.cluster = cluster
        self.addresses = addresses or NodeAddresses(slurm, settings.node_map)
        self._cancelled: dict[str, float] = {}  # job id -> when we cancelled it (monotonic)
        # jobs launched or seen alive by this process -> their (kind, node type)
        self._watched: dict[str, tuple[str, str]] = {}
        self._ran: set[str] = set()  # jobs seen running by this process
        self._requeued: set[str] = set()  # of those, the ones pending again: being cancelled

    def list_nodes(self) -> Seen:
        """One squeue call for every job of this cluster (every state but terminal ones)."""
        nodes: list[Node] = []
        ended: list[Ended] = []
        leftovers: list[str] = []
        seen: set[str] = set()
        # Only jobs watched before squeue ran must be in its answer (a launcher thread may
        # submit one meanwhile).
        watched = dict(self._watched)
        for job in self.slurm.squeue():
            owner = parse_job_name(job.name, self.settings.cluster_name)
            if owner is None:
                continue
            kind, node_type = owner
            seen.add(job.job_id)
            node = Node(job.job_id, self.name, kind, node_type, job.state, job.node, job.reason,
                        job.time_left, time_left_s=_seconds(job), what=self.noun)  # fmt: skip
            if job.state is JobState.GONE:
                if self._watched.pop(job.job_id, None):
                    ended += self._ended(node, job.slurm_state.split()[0])
                self._ran.discard(job.job_id)
                continue
            self._watched[job.job_id] = (kind, node_type)
            if job.state is JobState.RUNNING:
                self._ran.add(job.job_id)
            elif job.state is JobState.PENDING and job.job_id in self._ran | self._requeued:
                if job.job_id not in self._requeued:  # said once, even if Ray cancelled it first
                    self._requeued.add(job.job_id)
                    how = "suspended" if job.slurm_state.startswith("SUSPENDED") else "requeued"
                    ended.append(Ended(node, f"{kind} job {job.job_id} (node type {node_type}) "
                                       f"was {how} by SLURM after it ran ({job.reason}): its Ray "
                                       "node is gone; the job is cancelled, a new one replaces "
                                       "it if still needed", lost=True))  # fmt: skip
                leftovers.append(job.job_id)
                continue
            nodes.append(node)
        for job_id in sorted(watched.keys() - seen):
            # Ended and forgotten by the controller between two looks: ask SLURM's records.
            owner = self._watched.pop(job_id, None)
            if owner is None or job_id in self._cancelled:  # ours: no need to ask how it ended
                continue
            ended += self._ended(Node(job_id, self.name, *owner, JobState.GONE, what=self.noun), "")
        self._ran &= seen  # forget the jobs SLURM forgot
        self._requeued &= seen
        return Seen(nodes, ended, leftovers)

    def _ended(self, node: Node, state: str) -> list[Ended]:
        """A watched job ended in ``state`` (squeue's; "" if it was gone before it was seen
        ended): how, if it failed (else nothing to report)."""
        job_id = node.node_id
        log = job_log(self.cluster, self.settings.cluster_name, node.kind, node.node_type, job_id)
        end = None
        if not state:
            end = how_job_ended(self.slurm, job_id, state, log)
            if not end.state:
                logger.info("%s job %s (node type %s) ended and SLURM forgot it before it was "
                            "seen ended; the site keeps no record of how (no accounting)",
                            node.kind, job_id, node.node_type)  # fmt: skip
            state = end.state
        # Ray may ask to cancel a job whose node it saw die (preempted, node failed) before
        # SLURM's verdict is in: only a FAILED after our own scancel is ours.
        if state not in FAILED_STATES or (state == "FAILED" and job_id in self._cancelled):
            return []
        end = end or how_job_ended(self.slurm, job_id, state, log)
        return [Ended(node, end.describe(), failed=True,
                      types_fault=node.kind == "worker" and end.types_fault,
                      lost=end.state in LOST_STATES and job_id in self._ran)]  # fmt: skip

    def launch(self, request: LaunchRequest) -> str:
        script = render(self.settings, self.cluster, request.spec, request.head_address)
        write_private(Path(script.path), script.text, 0o700)
        # The job runs in the cluster's private directory, not in whatever directory `ray up` or
        # the autoscaler happened to be in (Python puts the working directory on sys.path).
        extra_args = [f"--chdir={self.cluster.root}"]
        if request.time_limit_minutes is not None:
            extra_args.append(f"--time={request.time_limit_minutes}")
        job_id = self.slurm.sbatch(script.path, extra_args)
        self._watched[job_id] = (request.spec.kind, request.spec.name)
        return job_id

    def terminate(self, node_ids: Sequence[str]) -> None:
        """One scancel for all the jobs not already cancelled in the last RECANCEL_S."""
        now = time.monotonic()
        self._cancelled = {i: t for i, t in self._cancelled.items() if now - t < RECANCEL_S}
        fresh = [i for i in node_ids if i not in self._cancelled]
        if len(fresh) < len(node_ids):
            logger.info("already cancelled, still ending: %s",
                        ", ".join(i for i in node_ids if i in self._cancelled))  # fmt: skip
        if fresh:
            self.slurm.scancel(fresh)
            self._cancelled.update(dict.fromkeys(fresh, now))

    def drain(self, node_ids: Sequence[str]) -> None:
        """One signal for all: each job's script hears USR1 (as at its walltime warning) and
        drains its Ray node until its end (``cli.drain``)."""
        self.slurm.scancel(node_ids, signal="USR1", batch=True)

    def cleanup(self) -> None:
        """Jobs are nodes: nothing else to remove."""

    def address(self, node: Node) -> str:
        """SLURM's NodeAddr of the job's node (or the site's node map): what ``ray start`` got."""
        return self.addresses.ip(node.host) if node.host else ""

    def command_runner(self, node_id: str, ctx: CommandContext) -> LocalCommandRunner:
        """A step in the node's job (``srun --overlap``), once the job runs."""
        # Ray's command runner (and Ray) are imported only when Ray asks for a runner: the job
        # script's `ray-slurm` helpers import this module and must start fast.
        from ray_slurm.backends.command_runner import SrunCommandRunner, runner_options

        return SrunCommandRunner(job_id=node_id, srun=self.slurm.command("srun"),
                                 not_ready=ctx.not_ready,
                                 **runner_options(self.cluster, ctx))  # fmt: skip

    def preview(self, spec: NodeTypeSpec, head_address: str) -> Preview:
        script = render(self.settings, self.cluster, spec, head_address)
        return Preview(f"sbatch --parsable {script.path}", script.text, Path(script.path).name)


def _seconds(job: Job) -> float | None:
    """Seconds until the job's time limit; None without one (or while it is pending)."""
    if job.state is not JobState.RUNNING:
        return None
    try:
        return parse_duration(job.time_left)
    except ValueError:
        return None
