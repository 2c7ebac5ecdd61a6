"""A head's life as its clients must see it: published, holding its ports, gone.

Clients are sent to the address in ``head.json``. That is safe only while the head's own Ray
listens there: a port the head published but another account took first, or one a head released
when it ended, would have the client's token sent to that account (the dashboard's HTTP port
carries it in clear). So:

- ``hold_ports`` (the head's script, after ``ray start``): the record is marked as holding its
  ports once Ray listens on each of them as this user (``/proc/net/tcp`` names each listener's
  uid): the published ones and its agents'; a port another account holds ends the head with a
  message naming port and uid (``head.failed``, which ``ray-slurm wait-head`` reports at once),
  instead of a head that runs with part of its address in someone else's hands.
  ``hold_node_ports`` is the same check for a worker's agents.
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import yaml

from ray_slurm import config
from ray_slurm.backends import factory as backends
from ray_slurm.backends.base import Backend
from ray_slurm.backends.errors import BackendError
from ray_slurm.backends.nodes import JobState
from ray_slurm.backends.slurm.client import Slurm, SlurmError
from ray_slurm.host.net import listeners
from ray_slurm.host.state import ClusterDir, Head

logger = logging.getLogger(__name__)

POLL_S = 0.1
# The ports a node's script gives Ray's agents, in the order it passes them to hold-ports (the
# metrics export port is not opened: nodestart turns metrics collection off).
AGENT_PORT_NAMES = ("dashboard agent", "dashboard agent gRPC", "runtime env agent")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # the pid is someone else's now
    return True


@dataclass(frozen=True)
class PortCheck:
    """Whether Ray holds a node's ports; if not, why, and whether another account took one."""

    held: bool
    why: str | None = None
    taken: bool = False  # another account holds one: not the node type's fault, nor Ray's


def agent_ports(ports: Sequence[int], metrics_port: int = 0) -> dict[str, int]:
    """The ports every node's Ray binds besides a head's, by name, as the script passes them.

    The dashboard agent's HTTP port matters most: the head's dashboard sends job submissions
    there with the token, in clear (Ray 2.60), and Ray keeps a node running when another
    account holds it ("the HTTP service will be disabled"). ``metrics_port``: the metrics export
    port, where the site opens it (``provider.metrics_export``).
    """
    named = dict(zip(AGENT_PORT_NAMES, ports, strict=True)) if ports else {}
    return {**named, "metrics export": metrics_port} if metrics_port else named


def port_problem(ports: dict[str, int], ray_pid: int, what: str) -> PortCheck:
    """Whether this user's Ray holds every one of ``ports`` (name -> port) of ``what``."""
    uid = os.geteuid()
    holders = listeners([p for p in ports.values() if p])
    for name, port in ports.items():
        others = sorted(holders.get(port, set()) - {uid})
        if others:
            who = ", ".join(f"uid {u}" for u in others)
            return PortCheck(False, f"the {what}'s {name} port {port} is held by another "
                             f"account ({who})", taken=True)  # fmt: skip
    if all(uid in holders[p] for p in ports.values() if p):
        return PortCheck(True)
    if not _alive(ray_pid):
        return PortCheck(False, f"Ray stopped before it held the {what}'s ports (see its log)")
    return PortCheck(False)


def _wait(ports: dict[str, int], ray_pid: int, what: str, timeout_s: float,
          still_wanted: Callable[[], bool] = lambda: True) -> PortCheck:  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while still_wanted():
        check = port_problem(ports, ray_pid, what)
        if check.held or check.why is not None:
            return check
        if time.monotonic() > deadline:
            return PortCheck(False, f"Ray did not listen on the {what}'s ports within "
                             f"{timeout_s:g} s")  # fmt: skip
        time.sleep(POLL_S)
    return PortCheck(False, "the head's record is gone or another head's: not marking it")


def hold_ports(cluster: ClusterDir, temp_dir: str, ray_pid: int, timeout_s: float,
               agents: Sequence[int] = (), metrics_port: int = 0) -> PortCheck:  # fmt: skip
    """Wait until Ray holds every port of this head (published and its agents'), then mark its
    record so; a port another account holds fails the head, naming it."""

    def record() -> Head | None:
        head = cluster.head()
        return head if head is not None and head.temp_dir == temp_dir else None

    head = record()
    ports = (
        {}
        if head is None
        else {
            "GCS": head.gcs_port,
            "dashboard": head.dashboard_port,
            "Ray Client": head.client_port,
        }
    )
    check = _wait({**ports, **agent_ports(agents, metrics_port)}, ray_pid, "head", timeout_s,
                  lambda: record() is not None)  # fmt: skip
    if check.held:
        cluster.mark_head_holding(temp_dir)
        return check
    why = check.why or ""
    if check.taken:
        why += "; run `ray up` again: a new head picks other ports"
    logger.error("%s", why)
    if record() is not None:
        cluster.fail_head(temp_dir, why)
    return check


def hold_node_ports(agents: Sequence[int], ray_pid: int, timeout_s: float,
                    metrics_port: int = 0) -> PortCheck:  # fmt: skip
    """A worker's check: its Ray holds its agents' ports (nothing to mark: no client is sent to
    a worker by a record). A port another account holds ends the node, naming it; the
    provider replaces it (a new job picks other ports) without backing its type off."""
    check = _wait(agent_ports(agents, metrics_port), ray_pid, "node", timeout_s)
    if check.taken:
        logger.error("%s; this node's job ends, the next one picks other ports", check.why)
    elif not check.held and _alive(ray_pid):  # slow, or a Ray without its dashboard agent
        logger.warning("%s: going on (nobody else holds them)", check.why)
        return PortCheck(True)
    return check


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
        seen = backend.list_nodes()
        # its workers, and what is left of ended ones (a pod that ended is still an object)
        workers = [n.node_id for n in seen.nodes if n.kind == "worker"] + seen.leftovers
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
            nodes = backend.list_nodes().nodes
        except (SlurmError, BackendError) as exc:  # SLURM is away: the record is all we have
            logger.warning("cannot check that the head still runs: %s", exc)
            return None
        for node in nodes:
            if node.node_id == head.node_id and node.kind == "head":
                return None if node.state is JobState.RUNNING else f"it is {node.state.value}"
    return f"its {head.node_id} is gone"
