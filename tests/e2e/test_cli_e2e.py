"""`ray-slurm check` against the real local site: the example is ready, a bad partition is named."""

import yaml
from conftest import ALICE, EXAMPLE


def check(path) -> tuple[int, list[str]]:
    proc = ALICE.run([ALICE.bin("ray-slurm"), "check", str(path)], timeout=120, check=False)
    assert not proc.stderr.strip(), proc.stderr
    return proc.returncode, proc.stdout.splitlines()


def test_the_example_config_passes_check():
    code, out = check(EXAMPLE)
    assert code == 0, out
    assert len(out) == 1
    assert "ready for `ray up`" in out[0]
    assert "partitions debug" in out[0]


def test_a_partition_the_site_lacks_fails_check_naming_it(workdir):
    cfg = yaml.safe_load(EXAMPLE.read_text())
    cfg["provider"]["state_dir"] = str(workdir / "state")
    cfg["available_node_types"]["cpu"]["node_config"]["partition"] = "nosuch"
    path = ALICE.write(workdir / "nosuch.yaml", yaml.safe_dump(cfg))
    code, out = check(path)
    assert code == 1, out
    problems = [line for line in out if line.startswith("problem: ")]
    assert problems == [
        "problem: available_node_types.cpu.node_config.partition: partition 'nosuch' does not "
        "exist on this site -- fix: use one of debug, long, scavenger (sinfo -s)"
    ]
    assert out[-1].startswith(f"{path}: 1 problem ")
