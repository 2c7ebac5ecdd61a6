"""rayhpc.slurm.node_map against the real local SLURM site, through ansible-playbook.

Runs on the site's login node (``make e2e``): the module reads the site with
``scontrol show node -o`` and must accept SLURM's own NodeAddr map and refuse, naming the entry,
a map with a duplicate IP, an unknown node or a wrong IP.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = Path(__file__).parent / "playbooks" / "node_map.yml"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
RECAP = re.compile(
    r"^localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M
)
FAILED = re.compile(r"^fatal: \[localhost\]: FAILED! => (\{.*\})$", re.M)


class PlaybookRun:
    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.rc = proc.returncode
        self.output = proc.stdout + proc.stderr
        recap = RECAP.search(proc.stdout)
        assert recap, f"no PLAY RECAP for localhost:\n{self.output}"
        self.ok, self.changed, self.unreachable, self.failed = map(int, recap.groups())
        failure = FAILED.search(proc.stdout)
        self.failure: dict[str, Any] = json.loads(failure.group(1)) if failure else {}


@pytest.fixture
def playbook(tmp_path: Path) -> Callable[..., PlaybookRun]:
    """Run the playbook with the repository as the collection rayhpc.slurm."""
    collections = tmp_path / "collections"
    (collections / "ansible_collections" / "rayhpc").mkdir(parents=True)
    (collections / "ansible_collections" / "rayhpc" / "slurm").symlink_to(REPO)
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=str(collections),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"),
        ANSIBLE_RETRY_FILES_ENABLED="0",
    )
    env.pop("ANSIBLE_CONFIG", None)

    def run(**extra_vars: Any) -> PlaybookRun:
        vars_file = tmp_path / "vars.json"
        vars_file.write_text(json.dumps(extra_vars))
        args = [
            str(ANSIBLE_PLAYBOOK),
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            "-e",
            f"@{vars_file}",
            str(PLAYBOOK),
        ]
        # cwd outside the repository: no ansible.cfg but the defaults.
        proc = subprocess.run(
            args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        return PlaybookRun(proc)

    return run


def test_good_map_is_written_once(
    playbook: Callable[..., PlaybookRun], site_nodes: dict[str, str], tmp_path: Path
) -> None:
    dest = tmp_path / "node_map.yaml"
    first = playbook(node_map_nodes=site_nodes, node_map_dest=str(dest))
    assert (first.rc, first.failed, first.changed) == (0, 0, 1), first.output
    assert yaml.safe_load(dest.read_text()) == site_nodes
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644

    again = playbook(node_map_nodes=site_nodes, node_map_dest=str(dest))
    assert (again.rc, again.changed) == (0, 0), again.output
    # Without a map the module writes SLURM's NodeAddr: the same file.
    from_slurm = playbook(node_map_partitions=["debug"], node_map_dest=str(dest))
    assert (from_slurm.rc, from_slurm.changed) == (0, 0), from_slurm.output


def with_duplicate_ip(nodes: dict[str, str]) -> tuple[dict[str, str], set[tuple[str, str, str]]]:
    first, second = sorted(nodes)[:2]
    bad = dict(nodes, **{second: nodes[first]})
    return bad, {
        (first, nodes[first], "duplicate_ip"),
        (second, nodes[first], "duplicate_ip"),
        (second, nodes[first], "slurm_mismatch"),
    }


def with_unknown_node(nodes: dict[str, str]) -> tuple[dict[str, str], set[tuple[str, str, str]]]:
    return dict(nodes, n99="10.77.0.199"), {("n99", "10.77.0.199", "unknown_node")}


def with_wrong_ip(nodes: dict[str, str]) -> tuple[dict[str, str], set[tuple[str, str, str]]]:
    last = sorted(nodes)[-1]
    return dict(nodes, **{last: "10.77.0.250"}), {(last, "10.77.0.250", "slurm_mismatch")}


@pytest.mark.parametrize("make_bad", [with_duplicate_ip, with_unknown_node, with_wrong_ip])
def test_bad_map_fails_naming_the_entry(
    playbook: Callable[..., PlaybookRun],
    site_nodes: dict[str, str],
    tmp_path: Path,
    make_bad: Callable[[dict[str, str]], tuple[dict[str, str], set[tuple[str, str, str]]]],
) -> None:
    nodes, expected = make_bad(site_nodes)
    dest = tmp_path / "node_map.yaml"
    run = playbook(node_map_nodes=nodes, node_map_dest=str(dest))
    assert (run.rc, run.failed) == (2, 1), run.output
    findings = {(f["name"], f["value"], f["problem"]) for f in run.failure["findings"]}
    assert findings == expected
    for name, value, _problem in expected:
        assert f"'{name}' = '{value}': " in run.failure["msg"]
    assert not dest.exists()
