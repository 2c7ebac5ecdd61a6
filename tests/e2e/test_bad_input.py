"""Issue #4: bad input is refused before anything is submitted, naming the field and value."""

import pytest
import yaml
from conftest import ALICE, EXAMPLE


def ray_up(workdir, change) -> str:
    cfg = yaml.safe_load(EXAMPLE.read_text())
    cfg["cluster_name"] = "f-bad"
    cfg["provider"]["state_dir"] = str(workdir / "state")
    change(cfg)
    path = ALICE.write(workdir / "bad.yaml", yaml.safe_dump(cfg))
    before = {j.job_id for j in ALICE.jobs()}
    proc = ALICE.run([ALICE.bin("ray"), "up", "-y", str(path)], timeout=120, check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stdout + proc.stderr, "a user's mistake is not a crash"
    assert {j.job_id for j in ALICE.jobs()} == before, "a job was submitted for a bad config"
    assert not (workdir / "state" / "f-bad" / "jobs").exists() or not any(
        (workdir / "state" / "f-bad" / "jobs").iterdir()
    )
    return proc.stdout + proc.stderr


def cpu(cfg):
    return cfg["available_node_types"]["cpu"]


CASES = {
    "shell metacharacters in a node type name": (
        lambda c: c["available_node_types"].update({"cpu;touch /tmp/pwned": cpu(c)}),
        "available_node_types.cpu;touch /tmp/pwned: node type name",
    ),
    "resources that disagree with the job's request": (
        lambda c: cpu(c).update(resources={"CPU": 4}),
        "resources.CPU=4 disagrees with node_config.cpus=2",
    ),
    "a negative worker count": (
        lambda c: cpu(c).update(max_workers=-1),
        "max_workers",
    ),
    "a missing memory request": (
        lambda c: cpu(c)["node_config"].pop("memory"),
        "available_node_types.cpu.node_config.memory: required",
    ),
    "an unknown key": (
        lambda c: cpu(c)["node_config"].update(partiton="debug"),
        "unknown key 'partiton'",
    ),
    "a partition with shell syntax": (
        lambda c: cpu(c)["node_config"].update(partition="debug$(id)"),
        "node_config.partition: invalid value 'debug$(id)'",
    ),
    "an unreadable node map": (
        lambda c: c["provider"].update(node_map="/nonexistent/node-map.yaml"),
        "provider.node_map: node map /nonexistent/node-map.yaml: cannot read",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_config_is_refused_before_anything_is_submitted(case, workdir):
    change, message = CASES[case]
    assert message in ray_up(workdir, change)
