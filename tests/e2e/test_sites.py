"""Issue #13, part 1: several local sites side by side, each from its layout file.

`make test` brings up the GPU centre (scripts/sites/gpu-centre.yaml) beside the campus site these
tests run on, and deploys it with its own inventory. Here: each site has the shape its layout
gives, and the two do not trust each other (a munge key each). A user's cluster on each site
(on the GPU centre a `num_gpus=1` task on a GPU worker; SLURM allocates the GPU on placeholder
devices, no real GPU exists) is the verify step of the molecule scenario `ssh-sites`, which
deploys both sites over SSH.
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
