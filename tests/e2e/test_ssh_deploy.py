"""Issue #13, part 2: one controller deploys both local sites over SSH, as a sysadmin would.

The controller is a namespace outside the sites (``scripts/localsite controller``); it reaches
each site's login node by SSH as the unprivileged ``rsl-admin`` with the key and host keys the
harness made, and becomes root by sudo (``inventories/localsite-ssh``: a group a site). One
``ansible-playbook`` run deploys every site: the wheel is built once on the controller and copied
to each; each site gets its own ``ray-slurm.yaml``, job scripts and node map; ``--check --diff``
after a change shows exactly that change and writes nothing; ``validate.yml`` runs remotely and
changes nothing. That the next run reports changed=0 (idempotence) and that each site's users
run clusters with what it deployed is the molecule scenario ``ssh-sites``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run

CONTROLLER = [str(REPO / "scripts" / "localsite"), "controller"]
INVENTORY = ["-i", "inventories/localsite-ssh"]
CAMPUS = Path("/var/tmp/rayhpc-localsite/shared")
CENTRE = Path("/var/tmp/rayhpc-gpu-centre/shared")


def playbook(*args: str, check: bool = True) -> str:
    """ansible-playbook on the controller; its output."""
    proc = run([*CONTROLLER, "ansible-playbook", *INVENTORY, *args], timeout=900,
               check=check, cwd=REPO)  # fmt: skip
    return proc.stdout


def recap(out: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP as host -> {ok, changed, failed, unreachable, ...}."""
    hosts = {}
    for host, counts in re.findall(r"^(\S+)\s+: (ok=.*)$", out, re.M):
        hosts[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counts)}
    return hosts


@pytest.fixture(scope="module", autouse=True)
def _both_sites_up() -> None:
    for site in ("campus", "gpu-centre"):
        status = run([str(REPO / "scripts" / "localsite"), "--site", site, "status"], check=False)
        assert status.returncode == 0, f"site {site} is not up: {status.stdout}{status.stderr}"


def test_the_controller_reaches_each_login_node_as_the_admin_and_becomes_root() -> None:
    def ids(*extra: str) -> dict[str, str]:
        out = run([*CONTROLLER, "ansible", *INVENTORY, "slurm_login", *extra,
                   "-m", "ansible.builtin.command", "-a", "id -un"], cwd=REPO).stdout  # fmt: skip
        return dict(re.findall(r"^(\S+) \| CHANGED \| rc=0 >>\n(\S+)$", out, re.M))

    assert ids("-e", "ansible_become=false") == {"campus-login": "rsl-admin",
                                                  "gpu-centre-login": "rsl-admin"}  # fmt: skip
    assert ids() == {"campus-login": "root", "gpu-centre-login": "root"}


def test_one_run_deploys_both_sites_with_the_wheel_built_once() -> None:
    # Drift on both sites: what --check --diff must show, and the real run must put back.
    campus_yaml = CAMPUS / "ray-slurm.yaml"
    campus_yaml.write_text(campus_yaml.read_text() + "# edited by hand\n")
    (CENTRE / "node-map.yaml").unlink()

    preview = playbook("--check", "--diff", "playbooks/site.yml")
    assert "+# edited by hand" not in preview and "-# edited by hand" in preview, preview[-3000:]
    assert str(CENTRE / "node-map.yaml") in preview
    assert not (CENTRE / "node-map.yaml").exists(), "--check wrote the node map"
    assert campus_yaml.read_text().endswith("# edited by hand\n"), "--check wrote ray-slurm.yaml"
    counts = recap(preview)
    assert counts["campus-login"]["changed"] == 1 and counts["gpu-centre-login"]["changed"] == 1

    first = playbook("playbooks/site.yml")
    # The wheel is built once, on the controller, for both sites.
    built = first.split("Build the wheel, without dependencies", 1)[1].split("TASK [", 1)[0]
    assert built.count("-> localhost") == 1, built
    assert not campus_yaml.read_text().endswith("# edited by hand\n")
    assert (CENTRE / "node-map.yaml").exists()
    assert recap(first)["gpu-centre-login"]["failed"] == 0

    # Each site got its own files.
    campus = yaml.safe_load(campus_yaml.read_text())
    centre = yaml.safe_load((CENTRE / "ray-slurm.yaml").read_text())
    assert (campus["cluster_name"], campus["provider"]["head_mode"]) == ("localsite", "login")
    assert (centre["cluster_name"], centre["provider"]["head_mode"]) == ("gpu", "slurm")
    assert yaml.safe_load((CENTRE / "node-map.yaml").read_text())["gpu1"] == "10.78.0.12"
    assert sorted(p.name for p in (CENTRE / "jobs").iterdir()) == [
        "head-head.sh", "worker-cpu.sh", "worker-gpu.sh"]  # fmt: skip


def test_validate_runs_on_both_sites_and_changes_nothing() -> None:
    counts = recap(playbook("playbooks/validate.yml"))
    assert set(counts) >= {"campus-login", "gpu-centre-login"}
    assert all(c["changed"] == 0 and c["failed"] == 0 for c in counts.values()), counts
