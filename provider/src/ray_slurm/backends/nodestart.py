"""How a Ray node of a type starts, whatever runs it: one description for the job script
(``jobscript``) and the pod manifest (``podspec``).

Ray is told exactly the resources the job or pod asks for, runs with token authentication and
without usage reporting, and knows its node type (autoscaler v2 matches nodes to launches by
``RAY_NODE_TYPE_NAME`` and ``RAY_CLOUD_INSTANCE_ID``). What differs is only how each backend
delivers what it has at run time: the node's address, its temp dir, its ports, the token and
its instance id (a job id or a pod name).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ray_slurm.config import NodeTypeSpec
from ray_slurm.config.provider import DEFAULT_AUTOSCALER_INTERVAL_S, DEFAULT_DEMAND_POLL_MS

# The free ports a node's script asks ``ray-slurm-node`` for: a head's own (GCS, dashboard, Ray
# client), then every agent's (dashboard agent listen and gRPC, metrics export, runtime env
# agent). Given all, the raylet need not wait for its agents to report the ports they picked.
AGENT_PORTS = 4
HEAD_PORTS = 3 + AGENT_PORTS

# A worker whose head is gone holds an allocation (or a pod) for nothing: it leaves this soon.
HEADLESS_EXIT_S = 15


@dataclass(frozen=True)
class RayStart:
    """The environment and ``ray start`` arguments every node of one type gets."""

    env: dict[str, str]  # in the order they are set
    args: list[str]  # resources and fixed flags, after the address/ip/temp-dir/port arguments


def ray_start(
    spec: NodeTypeSpec,
    autoscaler_interval_s: int = DEFAULT_AUTOSCALER_INTERVAL_S,
    demand_poll_ms: int = DEFAULT_DEMAND_POLL_MS,
    metrics_export: bool = False,
) -> RayStart:
    """``autoscaler_interval_s``, ``demand_poll_ms``: how often a head's autoscaler loops, and
    how fresh its view of new demand is between loops; ``metrics_export``: whether each node
    opens its Prometheus port (the provider's settings)."""
    env = {
        "RAY_NODE_TYPE_NAME": spec.name,
        "RAY_AUTH_MODE": "token",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    if not metrics_export:
        # Each node's metrics export port (Prometheus text: task and actor names, job ids,
        # resource use) answers anyone, without token or TLS: off, so it is never opened.
        env["RAY_enable_metrics_collection"] = "0"
    if spec.kind == "head":
        # Ray's autoscaler v2 (`ray up` sets this only for the start commands it runs itself);
        # a head being stopped has nothing to drain to: it stops at once.
        env["RAY_enable_autoscaler_v2"] = "1"
        env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"
        # New demand waits for the autoscaler's next loop: a short loop starts nodes sooner
        # (the provider's squeue_interval_s keeps SLURM's load what it was).
        env["AUTOSCALER_UPDATE_INTERVAL_S"] = str(autoscaler_interval_s)
        if demand_poll_ms:
            # The GCS learns each node's queued tasks by pulling them (every 1 s in Ray): the
            # autoscaler's wake-up on new demand (``demandwake``) is only as quick as that pull.
            env["RAY_gcs_pull_resource_loads_period_milliseconds"] = str(demand_poll_ms)
    else:
        env["RAY_gcs_rpc_server_reconnect_timeout_s"] = str(HEADLESS_EXIT_S)
    args = [
        "--disable-usage-stats",
        f"--num-cpus={int(spec.resources.get('CPU', 0))}",
        f"--num-gpus={int(spec.resources.get('GPU', 0))}",
    ]
    if "memory" in spec.resources:
        args.append(f"--memory={int(spec.resources['memory'])}")
    if spec.object_store_bytes:
        args.append(f"--object-store-memory={spec.object_store_bytes}")
    if spec.custom_resources:
        args.append(f"--resources={json.dumps(spec.custom_resources, sort_keys=True)}")
    return RayStart(env=env, args=args)
