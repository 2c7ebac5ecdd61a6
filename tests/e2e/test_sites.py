"""Issue #13, part 1: several local sites side by side, each from its layout file.

`make test` brings up the GPU centre (scripts/sites/gpu-centre.yaml) beside the campus site these
tests run on, and deploys it with its own inventory. Here: each site has the shape its layout
gives, the two do not trust each other (a munge key each), and a user of the GPU centre runs a
workload there with the site's own ray-slurm.yaml: the head in a SLURM job, a `num_gpus=1` task
on a GPU worker (SLURM allocates the GPU: placeholder devices, no real GPU), `ray down`, no job
left.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO, run

GPU_SITE = [str(REPO / "scripts" / "localsite"), "--site", "gpu-centre"]
GPU_STATE = Path("/var/tmp/rayhpc-gpu-centre")


@pytest.fixture(scope="module", autouse=True)
def _gpu_centre_up() -> None:
    """The GPU centre must be up and deployed (make site-tests does it): a failure, not a skip."""
    status = run([*GPU_SITE, "status"], check=False)
    assert status.returncode == 0, f"the GPU centre is not up: {status.stdout}{status.stderr}"
    assert (GPU_STATE / "shared" / "ray-slurm.yaml").exists(), "the GPU centre is not deployed"


def gpu(*args: str, timeout: float = 120) -> str:
    """A command on the GPU centre's login node, as root."""
    return run([*GPU_SITE, "login", *args], timeout=timeout).stdout


def nodes(out: str) -> dict[str, tuple[str, ...]]:
    """``sinfo -N -h -o '%N %P %f'`` as node -> (partitions..., features)."""
    seen: dict[str, tuple[str, ...]] = {}
    for line in out.split("\n"):
        if line.strip():
            name, partition, features = line.split()
            seen[name] = (*seen.get(name, ())[:-1], partition.rstrip("*"), features)
    return seen


def test_each_site_has_its_layouts_shape() -> None:
    campus = nodes(run(["sinfo", "-N", "-h", "-o", "%N %P %f"]).stdout)
    assert set(campus) == {"n1", "n2", "n3"}
    assert set(campus["n1"][:-1]) == {"debug", "long", "scavenger"}
    centre = nodes(gpu("sinfo", "-N", "-h", "-o", "%N %P %f"))
    assert set(centre) == {"cpu1", "gpu1", "gpu2"}
    assert set(centre["cpu1"][:-1]) == {"service", "cpu"} and centre["cpu1"][-1] == "cpu"
    assert centre["gpu1"] == ("gpu", "gpu,a100")
    gres = dict(ln.split() for ln in gpu("sinfo", "-N", "-h", "-o", "%N %G").splitlines())
    assert gres == {"cpu1": "(null)", "gpu1": "gpu:2", "gpu2": "gpu:2"}
    config = gpu("scontrol", "show", "config")
    assert "ClusterName             = gpu-centre" in config
    assert "Slurmctld(primary) at gpulogin is UP" in gpu("scontrol", "ping")


def test_the_sites_do_not_trust_each_other() -> None:
    """A credential of the campus munge key (the machine's munged) is refused by the GPU
    centre's slurmctld, which knows only its own key."""
    conf = GPU_STATE / "etc" / "slurm.conf"
    foreign = Path("/tmp/gpu-centre-with-campus-munge.conf")  # root's own, removed below
    foreign.write_text("".join(ln for ln in conf.read_text().splitlines(keepends=True)
                               if not ln.startswith("AuthInfo=")))  # fmt: skip
    try:
        refused = run([*GPU_SITE, "login", "env", f"SLURM_CONF={foreign}", "squeue"], check=False)
    finally:
        foreign.unlink()
    assert refused.returncode != 0
    assert "JOBID" not in refused.stdout
    log = (GPU_STATE / "log" / "slurmctld.log").read_text()
    assert "Protocol authentication error" in log
    # The GPU centre's own clients are answered (the same command, the site's own conf).
    assert "JOBID" in gpu("squeue")


WORKLOAD = """
set -euo pipefail
cp /var/tmp/rayhpc-gpu-centre/shared/ray-slurm.yaml gpu.yaml
trap 'ray down -y gpu.yaml >/dev/null 2>&1 || true' EXIT
ray up -y gpu.yaml >/dev/null
eval "$(ray-slurm env gpu.yaml)"
python - <<'PY'
import os
import socket
import ray
ray.init()

@ray.remote(num_gpus=1)
def where():
    return socket.gethostname(), os.environ.get("SLURM_JOB_GPUS", "-"), ray.get_gpu_ids()

host, slurm_gpus, ray_gpus = ray.get(where.remote(), timeout=600)
print("RAN_ON", host, slurm_gpus, ray_gpus)
PY
ray down -y gpu.yaml >/dev/null
trap - EXIT
echo "LEFT $(squeue --me --noheader --format=%i | wc -l)"
"""


def test_a_num_gpus_task_runs_on_a_gpu_worker_of_the_gpu_centre() -> None:
    out = run([*GPU_SITE, "user", "rsl-bob", "bash", "-c", WORKLOAD], timeout=900).stdout
    ran_on = next(ln.split(maxsplit=3)[1:] for ln in out.splitlines() if ln.startswith("RAN_ON "))
    host, slurm_gpus, ray_gpus = ran_on
    assert host in {"gpu1", "gpu2"}, out
    assert slurm_gpus in {"0", "1"}, out  # SLURM allocated the worker's job one GPU
    assert ray_gpus == "['0']", out  # and Ray gave the task the one GPU it has
    assert "LEFT 0" in out, out
    assert gpu("squeue", "--noheader", "--user", "rsl-bob") == ""
