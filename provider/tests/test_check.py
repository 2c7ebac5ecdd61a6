"""``ray-slurm check``: every problem of a config and of the site, one line each, with its fix.

SLURM is a pair of fake ``sinfo`` answers in a tmp bin dir; the Ray environment is a tmp dir whose
``bin/python`` reports versions. Everything else (state dir, token, addresses) is real.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import tempfile
from pathlib import Path

import pytest
import yaml

from ray_slurm.backends.slurm.client import Slurm
from ray_slurm.cli import check
from ray_slurm.cli.main import build_parser, main

PARTITIONS = """\
debug*|up|2|4000|(null)|idle
debug*|up|2|4000|(null)|alloc
long|up|2|4000|(null)|idle
gpu|up|8|64000|gpu:a100:4(S:0-1)|mix
off|down|2|4000|(null)|idle
"""
NODES = "n1|10.77.0.11|n1\nn2|10.77.0.12|n2\nn3|10.77.0.13|n3\n"


@pytest.fixture
def slurm(fake_bin, tmp_path: Path) -> Slurm:
    """A site with partitions debug (default), long, gpu, off (DOWN) and nodes n1..n3."""
    (tmp_path / "partitions").write_text(PARTITIONS)
    (tmp_path / "nodes").write_text(NODES)
    fake_bin(
        "sinfo",
        f'case "$*" in -V) echo "slurm-wlm 24.11.5";; *%P*) cat {tmp_path}/partitions;;'
        f" *) cat {tmp_path}/nodes;; esac",
    )
    return Slurm(bin_dir=str(tmp_path / "bin"))


def fake_env(root: Path, versions: dict[str, str | None] | None = None) -> Path:
    """A Ray environment: bin/ray, bin/ray-slurm and a bin/python that reports ``versions``."""
    versions = versions or {d: importlib.metadata.version(d) for d in ("ray", "ray-slurm")}
    (root / "bin").mkdir(parents=True)
    for name, body in (
        ("ray", "true"),
        ("ray-slurm", "true"),
        ("python", f"echo '{json.dumps(versions)}'"),
    ):
        path = root / "bin" / name
        path.write_text(f"#!/bin/bash\n{body}\n")
        path.chmod(0o755)
    return root


@pytest.fixture
def write_config(raw_config, tmp_path: Path):
    """Write the example (head_ip 127.0.0.1, a fake Ray env) after ``change(cfg)``."""
    env = fake_env(tmp_path / "env")

    def write(change=None) -> Path:
        cfg = json.loads(json.dumps(raw_config))
        cfg["provider"].update(head_ip="127.0.0.1", ray_env=str(env))
        if change:
            change(cfg)
        path = tmp_path / "cluster.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    return write


def run(path: Path, slurm: Slurm, capsys) -> tuple[int, list[str]]:
    code = check.main(str(path), slurm)
    out = capsys.readouterr().out.splitlines()
    return code, out


def problems(out: list[str]) -> list[str]:
    return [line for line in out if line.startswith("problem: ")]


def cpu(cfg):
    return cfg["available_node_types"]["cpu"]["node_config"]


# ---------------------------------------------------------------------------------- passing


def test_the_example_is_ready(write_config, slurm, capsys):
    code, out = run(write_config(), slurm, capsys)
    assert code == check.EXIT_OK, out
    assert problems(out) == []
    assert "ready for `ray up`" in out[-1]
    for passed in ("Ray's schema", "SLURM 24.11.5 (rate limiter watched with squeue -v);",
                   "partitions debug", "head address 127.0.0.1", "state dir"):  # fmt: skip
        assert passed in out[-1]


def test_site_checks_cost_two_sinfo_calls(write_config, slurm, capsys):
    run(write_config(), slurm, capsys)
    assert slurm.calls == 2  # partitions, nodes; sinfo -V (no RPC) is not counted


def test_default_partition_and_a_gpu_type_that_fits(write_config, slurm, capsys):
    def change(cfg):
        cpu(cfg).pop("partition")
        cfg["available_node_types"]["a100"] = {
            "node_config": {"partition": "gpu", "cpus": 8, "memory": "32G", "gpus": 4},
            "max_workers": 1,
        }

    code, out = run(write_config(change), slurm, capsys)
    assert code == 0, out
    assert "partitions gpu" in out[-1]


# ------------------------------------------------------------------------------- the site


@pytest.mark.parametrize(
    ("partition", "message"),
    [
        (
            "nosuch",
            "partition 'nosuch' does not exist on this site -- fix: use one of debug, "
            "gpu, long, off",
        ),
        ("off", "partition 'off' is DOWN"),
        ("debug,nosuch", "partition 'nosuch' does not exist"),
    ],
)
def test_a_partition_that_cannot_run_the_jobs(write_config, slurm, capsys, partition, message):
    code, out = run(write_config(lambda c: cpu(c).update(partition=partition)), slurm, capsys)
    assert code == check.EXIT_PROBLEMS
    [line] = problems(out)
    assert line.startswith("problem: available_node_types.cpu.node_config.partition: ")
    assert message in line


def test_a_type_larger_than_any_node_of_its_partition(write_config, slurm, capsys):
    def change(cfg):
        cpu(cfg).update(cpus=4)
        cfg["available_node_types"]["g"] = {
            "node_config": {"partition": "gpu", "cpus": 2, "memory": "4G", "gpus": 8},
            "max_workers": 1,
        }

    code, out = run(write_config(change), slurm, capsys)
    assert code == 1
    lines = problems(out)
    assert len(lines) == 2
    assert any(
        "cpu: asks for 4 CPUs, 1500 MB on one node, but the largest node in partition "
        "'debug' has 2 CPUs, 4000 MB" in ln
        for ln in lines
    )
    assert any("g: asks for 2 CPUs, 4096 MB, 8 GPUs" in ln and "4 GPUs" in ln for ln in lines)


def test_no_default_partition(write_config, slurm, capsys, tmp_path):
    (tmp_path / "partitions").write_text("long|up|2|4000|(null)|idle\n")
    code, out = run(write_config(lambda c: cpu(c).pop("partition")), slurm, capsys)
    assert code == 1
    assert (
        "not set, and the site has no default partition -- fix: set it to one of long"
        in (problems(out)[0])
    )


def test_drained_nodes_do_not_fit(write_config, slurm, capsys, tmp_path):
    (tmp_path / "partitions").write_text(
        "debug*|up|2|4000|(null)|drain\ndebug*|up|2|4000|(null)|idle*\n"
    )
    code, out = run(write_config(), slurm, capsys)
    assert code == 1
    assert "(and none is usable: down or drained)" in problems(out)[0]


def test_slurm_that_does_not_answer_is_one_problem(write_config, fake_bin, tmp_path, capsys):
    fake_bin(
        "sinfo", 'echo "slurm_load_partitions: Unable to contact slurm controller" >&2; exit 1'
    )
    code, out = run(write_config(), Slurm(bin_dir=str(tmp_path / "bin")), capsys)
    assert code == 1
    [line] = [ln for ln in problems(out) if "SLURM" in ln]
    assert "Unable to contact slurm controller" in line
    assert "-- fix: run this on a login node" in line


def test_node_map_must_cover_slurms_nodes(write_config, slurm, capsys, tmp_path):
    node_map = tmp_path / "map.yaml"
    node_map.write_text("n1: 10.1.0.1\n")
    code, out = run(
        write_config(lambda c: c["provider"].update(node_map=str(node_map))), slurm, capsys
    )
    assert code == 1
    [line] = problems(out)
    assert f"{node_map} has no address for SLURM node(s) n2, n3" in line
    node_map.write_text("n1: 10.1.0.1\nn2: 10.1.0.2\nn3: 10.1.0.3\n")
    code, out = run(
        write_config(lambda c: c["provider"].update(node_map=str(node_map))), slurm, capsys
    )
    assert code == 0, out
    assert "node map (3 nodes)" in out[-1]


def test_ray_env_without_ray_slurm(write_config, slurm, capsys):
    def change(cfg):
        Path(cfg["provider"]["ray_env"], "bin", "ray-slurm").unlink()

    code, out = run(write_config(change), slurm, capsys)
    assert code == 1
    [line] = problems(out)
    assert "has no executable bin/ray-slurm -- fix: point ray_env at" in line


def test_ray_env_with_another_ray(write_config, slurm, capsys, tmp_path):
    env = fake_env(tmp_path / "old", {"ray": "2.9.3", "ray-slurm": None})
    code, out = run(write_config(lambda c: c["provider"].update(ray_env=str(env))), slurm, capsys)
    assert code == 1
    lines = problems(out)
    mine = importlib.metadata.version("ray")
    assert any(
        f"has ray 2.9.3, this ray is {mine}" in ln and f"install ray=={mine}" in ln for ln in lines
    )
    assert any("has ray-slurm not installed" in ln for ln in lines)


def test_head_ip_of_another_host(write_config, slurm, capsys):
    code, out = run(
        write_config(lambda c: c["provider"].update(head_ip="192.0.2.7")), slurm, capsys
    )
    assert code == 1
    [line] = problems(out)
    assert line.startswith("problem: provider.head_ip: 192.0.2.7 is not an address of this host")


def test_ports_held_by_other_accounts_are_not_blamed_on_stale_ray(
    write_config, slurm, capsys, monkeypatch
):
    """A neighbour holds the provider's whole port range: the check names the holders' uids,
    instead of telling the user to stop Ray processes they do not have."""
    from ray_slurm.cli.check import site

    def no_ports(count, seed):
        raise RuntimeError(f"fewer than {count} free ports in 24000-32000")

    monkeypatch.setattr(site, "free_ports", no_ports)
    monkeypatch.setattr(site, "listeners", lambda ports: {p: {1003} for p in ports})
    code, out = run(write_config(), slurm, capsys)
    assert code == 1
    [line] = problems(out)
    assert "ports for the head: fewer than 7 free ports" in line and "(0 held by you)" in line
    assert "other accounts (uids 1003) hold ports there" in "".join(out)
    assert "stale Ray" not in "".join(out)


def test_head_ip_is_not_checked_for_a_head_in_slurm(write_config, slurm, capsys):
    def change(cfg):
        cfg["provider"].update(head_mode="slurm", head_ip="192.0.2.7")
        cfg["available_node_types"]["head"] = {
            "node_config": {"partition": "long", "cpus": 1, "memory": "1G"},
            "max_workers": 0,
        }

    code, out = run(write_config(change), slurm, capsys)
    assert code == 0, out
    assert "partitions debug, long" in out[-1]


def test_state_dir_and_token_must_be_private(write_config, slurm, capsys, state_dir):
    root = state_dir / "example"
    root.mkdir(parents=True)
    root.chmod(0o755)
    code, out = run(write_config(), slurm, capsys)
    assert code == 1
    assert (
        f"provider.state_dir: {root} has mode 0755: others may use it (0700 is required) -- fix: "
        f"remove {root} if it is not yours, else chmod 700 it" in (problems(out)[0])
    )
    root.chmod(0o700)
    (root / "token").write_text("secret\n")
    (root / "token").chmod(0o644)
    code, out = run(write_config(), slurm, capsys)
    assert code == 1
    [line] = problems(out)
    assert f"token file {root / 'token'} has mode 0644" in line
    assert f"fix: chmod 600 {root / 'token'}" in line


def test_a_state_dir_another_account_made_or_below_theirs_is_named(write_config, slurm, capsys,
                                                                   state_dir):  # fmt: skip
    state_dir.mkdir(parents=True)
    os.chown(state_dir, 65534, 65534)  # nobody's: they could swap the cluster's directory
    code, out = run(write_config(), slurm, capsys)
    assert code == 1
    assert (
        f"provider.state_dir: {state_dir} is owned by uid 65534, neither root nor you"
        in (problems(out)[0])
    )


def test_a_planted_temp_root_is_named(write_config, slurm, capsys, fresh_tmp):
    planted = fresh_tmp / f"ray-slurm-{os.geteuid()}"
    planted.mkdir()
    os.chown(planted, 65534, 65534)
    code, out = run(write_config(), slurm, capsys)
    assert code == 1
    [line] = problems(out)
    assert f"private temp root {planted} is owned by uid 65534" in line
    assert "set TMPDIR to a directory of your own" in line


def test_a_temp_root_others_may_swap_things_in_is_named(write_config, slurm, capsys):
    loose = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))  # short: temp_root has a limit
    try:
        os.chmod(loose, 0o777)  # not sticky: anyone may rename a node's directory in it
        code, out = run(write_config(lambda c: c["provider"].update(temp_root=str(loose))),
                        slurm, capsys)  # fmt: skip
        assert code == 1
        [line] = problems(out)
        assert (
            f"provider.temp_root: {loose} has mode 0777: others may write to it and it is "
            "not sticky" in line
        )
    finally:
        loose.rmdir()


def test_state_dir_that_cannot_be_created(write_config, slurm, capsys, tmp_path):
    blocker = tmp_path / "a-file"  # not even root can make a directory below a file
    blocker.write_text("x")
    path = write_config(lambda c: c["provider"].update(state_dir=str(blocker / "s")))
    code, out = run(path, slurm, capsys)
    assert code == 1
    assert "does not exist and cannot be created" in problems(out)[0]
    assert f"({blocker} is not a writable directory)" in problems(out)[0]


# ----------------------------------------------------------------------------- the config


def test_every_problem_is_listed_config_and_site_together(write_config, slurm, capsys):
    def change(cfg):
        cfg["bogus"] = 1
        cpu(cfg).update(partition="nosuch", partiton="x")
        cfg["available_node_types"]["cpu"]["resources"] = {"CPU": 4}
        cfg["provider"]["head_ip"] = "192.0.2.7"

    code, out = run(write_config(change), slurm, capsys)
    assert code == 1
    lines = problems(out)
    expected = [
        "'bogus' was unexpected",
        "unknown key 'partiton' -- fix: remove the key or correct its spelling",
        "resources.CPU=4 disagrees with node_config.cpus=2",
        "partition 'nosuch' does not exist",
        "192.0.2.7 is not an address of this host",
    ]
    for text in expected:
        assert sum(text in ln for ln in lines) == 1, (text, lines)
    assert len(lines) == len(expected)
    assert out[-1].endswith(")") and f"{len(expected)} problems" in out[-1]
    assert all(" -- fix: " in ln for ln in lines)


def test_not_yaml_and_not_a_cluster_config(tmp_path, slurm, capsys):
    path = tmp_path / "x.yaml"
    path.write_text("a: [b\n")
    code, out = run(path, slurm, capsys)
    assert code == 1
    assert problems(out)[0].startswith(f"problem: {path} is not valid YAML")
    path.write_text("- 1\n")
    code, out = run(path, slurm, capsys)
    assert code == 1
    assert "not a Ray cluster config (no provider section)" in problems(out)[0]


# ---------------------------------------------------------------------------- the command


def test_unreadable_config_is_a_usage_error(tmp_path, capsys):
    assert main(["check", str(tmp_path / "missing.yaml")]) == check.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"ray-slurm check: cannot read {tmp_path / 'missing.yaml'}: No such file or directory"
    ]


def test_missing_argument_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["check"])
    assert exc.value.code == 2


def test_help_is_complete_for_every_subcommand():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    documented = {a.dest for a in sub._choices_actions if a.help}
    assert documented == set(sub.choices)
    for name, p in sub.choices.items():
        for action in p._actions:
            if action.dest != "help":
                assert action.help, f"ray-slurm {name}: {action.dest} has no help"
