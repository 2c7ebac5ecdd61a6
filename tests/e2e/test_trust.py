"""Issue #24: trust goes both ways — what a neighbour plants or listens on is never used.

rsl-eve is the neighbour, an ordinary account of the site. Each test runs her attack against
a victim who types the README's commands, and checks that nothing she prepared ran, nothing
she logged opens the victim's cluster, and the victim's cluster works (or fails, naming why).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import BOB, EVE, parse_result

# Eve's `ray.py`: it records whose process imported it, then hands over to the real Ray so that
# the victim notices nothing (a real attacker's module would do its work here instead).
PLANTED_RAY = """\
import os, sys
open(f"/tmp/eve-ran-as-{os.getuid()}-" + os.path.basename(sys.argv[0] or "python"), "w").close()
here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
del sys.modules["ray"]
import ray
"""


def eve_ran() -> list[str]:
    return sorted(p.name for p in Path("/tmp").glob("eve-ran-as-*"))


@pytest.fixture
def eve_module_in_tmp():
    """Eve's ray.py in /tmp, the shared directory a user may well type `ray up` in (every node
    of the local site sees the host's /tmp, as a node-local /tmp where Eve has a job would)."""
    planted = Path("/tmp/ray.py")
    EVE.write(planted, PLANTED_RAY)
    yield planted
    planted.unlink(missing_ok=True)
    for marker in Path("/tmp").glob("eve-ran-as-*"):
        marker.unlink()


@pytest.mark.parametrize("head_mode", ["login", "slurm"])
def test_no_process_imports_code_from_where_ray_up_was_typed(
    site_cluster, eve_module_in_tmp, site_nodes, head_mode
):
    """Bob types `ray up` in /tmp, where Eve put a ray.py: his head (a job, or a process here),
    his workers, `ray exec` and `ray down` run, and her module is never imported."""
    assert os.stat(eve_module_in_tmp).st_uid == EVE.uid
    bob = site_cluster(BOB, head_mode=head_mode)
    bob.up(cwd="/tmp")
    ((host, ip),) = parse_result(bob.driver().stdout)  # a task on a worker job
    assert site_nodes[host] == ip
    # A command through the product's runner (on the head: a job step in head_mode slurm),
    # typed in /tmp too: Python's -c puts the working directory first on sys.path.
    probe = 'python -c "import ray; print(ray.__file__)"'
    out = bob.sh(f"cd /tmp && ray exec {bob.config} '{probe}'")
    assert "/tmp/ray.py" not in out.stdout, out.stdout[-2000:]
    bob.sh(f"cd /tmp && ray down -y {bob.config}", timeout=300)
    assert bob.jobs() == []
    assert eve_ran() == [], "a process of Bob's imported the ray.py Eve planted"
