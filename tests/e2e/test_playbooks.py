"""The playbooks refuse an inventory without the site's login nodes, by name (issue #13).

Ansible only warns about a hosts pattern that matches nothing (``host_pattern_mismatch``'s
default, which plain ansible-lint needs), so the playbooks check it themselves.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import REPO, run

ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


@pytest.mark.parametrize("playbook", ["site.yml", "validate.yml"])
def test_an_inventory_without_login_nodes_is_refused(playbook):
    proc = run([str(ANSIBLE_PLAYBOOK), "-i", "elsewhere,", f"playbooks/{playbook}"],
               timeout=120, check=False, cwd=REPO)  # fmt: skip
    assert proc.returncode != 0
    assert "the inventory has no host in the group slurm_login" in proc.stdout
    assert "elsewhere" not in proc.stdout  # the run stopped there: no play reached any host
