"""Render the one node script (``templates/ray-node.sh.j2``) for a node type.

The same template makes a worker job, a head job and the login-node head's start script (the
SLURM and login backends); how Ray starts is ``nodestart``'s, shared with the pod manifest. Every
value from the config is either validated (``config``) or shell-quoted here, so no user string
reaches a shell unquoted.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass

import jinja2

from ray_slurm.backends.nodes import (
    DRAIN_STOP_MARGIN_S,
    PORTS_TAKEN_EXIT,
    START_FAILED_EXIT,
    START_WINDOW_S,
)
from ray_slurm.backends.nodestart import AGENT_PORTS, HEAD_PORTS, ray_start
from ray_slurm.config import NodeTypeSpec, Settings
from ray_slurm.host import tls
from ray_slurm.host.state import ClusterDir

CONFIG_WAIT_S = 600  # how long a new head waits for `ray up` to copy the cluster config
# How long Ray may take to stop after the job is signalled, before the job kills it and cleans
# up: below the login head's grace (login.LoginBackend.terminate) and SLURM's KillWait default.
# A head stops without draining (a few seconds); a worker drains its tasks first.
STOP_GRACE_S = {"head": 8, "worker": 15}
# A worker's `ray start` that fails saying this (Ray 2.60's node.py: its raylet did not register
# within 30 s) within START_WINDOW_S is run again in its allocation, up to this many times in all
# (the template says why).
START_TIMEOUT_SAID = "The current node timed out during startup"
START_ATTEMPTS = 3
START_PAUSE_S = 5  # before attempt n+1: n times this, plus up to this again at random


def job_name(cluster_name: str, kind: str, node_type: str) -> str:
    """The SLURM job name: finds every job of a cluster, and its node type, from squeue alone."""
    return f"ray.{cluster_name}.{kind}.{node_type}"


def job_log(cluster: ClusterDir, cluster_name: str, kind: str, node_type: str, job_id: str) -> str:
    """Where a job's output goes: the template's ``--output=<logs>/%x-%j.log``."""
    name = job_name(cluster_name, kind, node_type)
    return os.path.join(cluster.logs_dir, f"{name}-{job_id}.log")


def parse_job_name(name: str, cluster_name: str) -> tuple[str, str] | None:
    """``(kind, node_type)`` if the job belongs to this cluster, else None."""
    parts = name.split(".")
    if len(parts) == 4 and parts[:2] == ["ray", cluster_name] and parts[2] in ("head", "worker"):
        return parts[2], parts[3]
    return None


@dataclass(frozen=True)
class Identity:
    """How a node script names its node, as shell words: given by the backend that runs it."""

    sbatch: bool  # an sbatch script (SLURM runs it), or a plain one the backend starts itself
    instance_id: str  # the node's cloud instance id (RAY_CLOUD_INSTANCE_ID)
    port_seed: str  # what the node's Ray ports are derived from
    temp_template: str  # mktemp template of the node's private temp dir


def batch_identity(settings: Settings) -> Identity:
    """A SLURM job's: its job id names the node and seeds its ports and temp dir."""
    job = '"$SLURM_JOB_ID"'
    temp = shlex.quote(os.path.join(settings.temp_root, "rs-")) + job + ".XXXXXX"
    return Identity(sbatch=True, instance_id=job, port_seed=job, temp_template=temp)


@dataclass(frozen=True)
class NodeScript:
    path: str
    text: str
    node_type: str
    kind: str


_env = jinja2.Environment(
    loader=jinja2.PackageLoader("ray_slurm.backends.slurm", "templates"),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,  # noqa: S701 - a shell script, values are shell-quoted with the q filter
)
_env.filters["q"] = lambda value: shlex.quote(str(value))
_env.filters["qopt"] = lambda option: _quoted_option(str(option))


def _quoted_option(option: str) -> str:
    """``--name=value`` with the value shell-quoted (``--resources='{"a": 1}'``)."""
    name, eq, value = option.partition("=")
    return f"{name}={shlex.quote(value)}" if eq else shlex.quote(name)


def render(
    settings: Settings,
    cluster: ClusterDir,
    spec: NodeTypeSpec,
    head_address: str = "",
    node_ip: str = "",
    identity: Identity | None = None,
) -> NodeScript:
    """The script for ``spec``: by default an sbatch script (``batch_identity``); a backend that
    starts the script itself passes its own ``identity`` (the login head)."""
    identity = identity or batch_identity(settings)
    if spec.kind == "worker" and not head_address:
        raise ValueError("a worker script needs the head's address")
    bin_dir = os.path.join(settings.ray_env, "bin")
    text = _env.get_template("ray-node.sh.j2").render(
        sbatch=identity.sbatch,
        spec=spec,
        start=ray_start(
            spec, settings.autoscaler_interval_s, settings.demand_poll_ms, settings.metrics_export
        ),  # fmt: skip
        metrics_export=settings.metrics_export,
        cluster_name=settings.cluster_name,
        job_name=job_name(settings.cluster_name, spec.kind, spec.name),
        log_dir=str(cluster.logs_dir),
        instance_id=identity.instance_id,
        temp_template=identity.temp_template,
        port_seed=identity.port_seed,
        token_file=str(cluster.token_file),
        ca_file=str(cluster.ca_file),
        tls=tls,
        cluster_dir=str(cluster.root),
        bootstrap_config=str(cluster.bootstrap_config),
        autoscaling_config=str(cluster.autoscaling_config),
        config_wait_s=CONFIG_WAIT_S,
        stop_grace_s=STOP_GRACE_S[spec.kind],
        # A worker drains when its end is near (USR1: ``cluster.rollover``); a head stops (TERM).
        warning_signal="USR1" if spec.kind == "worker" else "TERM",
        drain_fallback_s=max(0, spec.walltime_warning_s - DRAIN_STOP_MARGIN_S),
        start_attempts=START_ATTEMPTS if spec.kind == "worker" else 1,
        start_timeout_said=START_TIMEOUT_SAID,
        start_window_s=int(START_WINDOW_S),
        start_pause_s=START_PAUSE_S,
        node_ip=node_ip,
        node_map=settings.node_map,
        head_address=head_address,
        cli=shlex.quote(os.path.join(bin_dir, "ray-slurm")),
        node_helper=shlex.quote(os.path.join(bin_dir, "ray-slurm-node")),
        ports=HEAD_PORTS if spec.kind == "head" else AGENT_PORTS,
        ports_taken_exit=PORTS_TAKEN_EXIT,
        start_failed_exit=START_FAILED_EXIT,
        ray=os.path.join(bin_dir, "ray"),
    )
    path = os.path.join(cluster.jobs_dir, f"{spec.kind}-{spec.name}.sh")
    return NodeScript(path=path, text=text, node_type=spec.name, kind=spec.kind)
