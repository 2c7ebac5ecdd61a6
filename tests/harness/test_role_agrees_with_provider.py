"""What the site role restates of the provider agrees with it: the role's defaults for provider
settings are the provider's own defaults (a site that changes nothing gets what `ray up` would
give a config without them). The job scripts' names are not restated: the role lets
`ray-slurm render --prune` name and remove them."""

from __future__ import annotations

from pathlib import Path

import yaml

from ray_slurm.cluster import policy
from ray_slurm.config import provider as provider_config

ROLE = Path(__file__).resolve().parents[2] / "roles" / "site"


def test_the_site_roles_defaults_are_the_providers() -> None:
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    provider = {
        "site_head_mode": provider_config.DEFAULT_HEAD_MODE,
        "site_state_dir": provider_config.DEFAULT_STATE_DIR,
        "site_temp_root": provider_config.DEFAULT_TEMP_ROOT,
        "site_autoscaler_interval_s": provider_config.DEFAULT_AUTOSCALER_INTERVAL_S,
        "site_squeue_interval_s": provider_config.DEFAULT_SQUEUE_INTERVAL_S,
        "site_demand_poll_ms": provider_config.DEFAULT_DEMAND_POLL_MS,
        "site_metrics_export": provider_config.DEFAULT_METRICS_EXPORT,
        "site_upscaling_speed": policy.DEFAULT_UPSCALING_SPEED,
    }
    assert {k: defaults[k] for k in provider} == provider
    burst = defaults["site_kubernetes_node_types"]["burst"]
    assert burst["idle_timeout_s"] == provider_config.DEFAULT_BURST_IDLE_TIMEOUT_S


def test_the_role_does_not_restate_the_job_scripts_names() -> None:
    role = "\n".join(p.read_text() for p in ROLE.rglob("*.yml"))
    assert "--prune" in role
    assert "'worker-'" not in role and "'head-'" not in role
