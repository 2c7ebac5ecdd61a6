"""A head's life as its clients must see it: published, holding its ports, gone.

Clients are sent to the address in ``head.json``. That is safe only while the head's own Ray
listens there: a port the head published but another account took first, or one a head released
when it ended, would have the client's token sent to that account (the dashboard's HTTP port
carries it in clear). So:

- ``hold_ports`` (the head's script, after ``ray start``): the record is marked as holding its
  ports once Ray listens on each of them as this user (``/proc/net/tcp`` names each listener's
  uid); a port another account holds ends the head with a message naming port and uid
  (``head.failed``, which ``ray-slurm wait-head`` reports at once), instead of a head that runs
  with part of its address in someone else's hands.
- ``head_ended`` (the head's script, as it exits, however): the record goes, and the workers'
  jobs and pods are cancelled, pending ones included (they could never join a later head: every
  head has a new token and TLS CA).
- ``head_is_gone`` (``ray-slurm env``): a record whose head was killed without the chance to take
  it is caught by asking the head's backend.
"""

from __future__ import annotations

import logging
import os
import time

import yaml

from ray_slurm import backends, config
from ray_slurm.backends.base import Backend
from ray_slurm.errors import BackendError
from ray_slurm.net import listeners
from ray_slurm.nodes import JobState
from ray_slurm.slurm import Slurm, SlurmError
from ray_slurm.state import ClusterDir, Head

logger = logging.getLogger(__name__)

POLL_S = 0.1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # the pid is someone else's now
    return True


def port_problem(head: Head, ray_pid: int) -> tuple[bool, str | None]:
    """(all held by this user, why the head cannot hold them) for the head's published ports."""
    uid = os.geteuid()
    ports = {"GCS": head.gcs_port, "dashboard": head.dashboard_port, "Ray Client": head.client_port}
    holders = listeners([p for p in ports.values() if p])
    for name, port in ports.items():
        others = sorted(holders.get(port, set()) - {uid})
        if others:
            who = ", ".join(f"uid {u}" for u in others)
            return False, (f"the head's {name} port {port} is held by another account ({who}); "
                           "run `ray up` again: a new head picks other ports")  # fmt: skip
    if all(uid in holders[p] for p in ports.values() if p):
        return True, None
    if not _alive(ray_pid):
        return False, "Ray stopped before it held the head's ports (see the head's log)"
    return False, None


def hold_ports(cluster: ClusterDir, temp_dir: str, ray_pid: int, timeout_s: float) -> bool:
    """Wait until Ray holds every published port of this head, then mark its record so."""
    deadline = time.monotonic() + timeout_s
    while True:
        head = cluster.head()
        if head is None or head.temp_dir != temp_dir:
            logger.error("the head's record is gone or another head's: not marking it")
            return False
        held, why = port_problem(head, ray_pid)
        if held:
            cluster.mark_head_holding(temp_dir)
            return True
        if why is None and time.monotonic() > deadline:
            why = f"Ray did not listen on the head's ports within {timeout_s:g} s"
        if why is not None:
            logger.error("%s", why)
            cluster.fail_head(temp_dir, why)
            return False
        time.sleep(POLL_S)


def running_backends(cluster: ClusterDir) -> dict[str, Backend] | None:
    """The backends of the cluster as its head runs them (from the config it reads), or None
    if no head has read one yet."""
    try:
        uploaded = yaml.safe_load(cluster.autoscaling_config.read_text())
    except FileNotFoundError:
        return None
    settings = config.load_settings(uploaded["provider"], uploaded["cluster_name"])
    return backends.make(settings, cluster, Slurm(settings.slurm_bin, settings.slurm_timeout_s))


def head_ended(cluster: ClusterDir, temp_dir: str) -> None:
    """The head whose temp dir was ``temp_dir`` is gone: its record goes, so that no client is
    sent to its address, and its workers' jobs and pods are cancelled. A newer head's record
    and workers are left alone."""
    if not cluster.unpublish_head(temp_dir):
        logger.info("a newer head runs: its record and workers stay")
        return
    held = running_backends(cluster)
    if held is None:
        return  # the head ended before its autoscaler could start a worker
    for name, backend in held.items():
        workers = [n.node_id for n in backend.list_nodes() if n.kind == "worker"]
        if workers:
            logger.warning("the head ended: cancelling %s of its workers: %s", name,
                           ", ".join(workers))  # fmt: skip
            backend.terminate(workers)


def head_is_gone(cluster: ClusterDir, head: Head) -> str | None:
    """Why the published head does not run any more (its job or process is gone: killed
    without a chance to take its record), or None if its backend lists it running."""
    held = running_backends(cluster)
    if held is None:
        return "it has not started yet"
    for backend in held.values():
        try:
            nodes = backend.list_nodes()
        except (SlurmError, BackendError) as exc:  # SLURM is away: the record is all we have
            logger.warning("cannot check that the head still runs: %s", exc)
            return None
        for node in nodes:
            if node.node_id == head.node_id and node.kind == "head":
                return None if node.state is JobState.RUNNING else f"it is {node.state.value}"
    return f"its {head.node_id} is gone"
