"""Issue #10: a shared login node — users side by side, and a neighbour who attacks.

Every user copies the site's rendered ray-slurm.yaml unchanged and types the README's commands
(no --no-config-cache). rsl-eve is the neighbour: an ordinary account of the same site who plants
files at every path of the victim's she can predict, before the victim's commands run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from conftest import ALICE, BOB, CLUSTER, EVE, User, mode, parse_result, run, wait_for


def test_two_users_with_the_sites_yaml_unchanged(site_cluster, site_nodes):
    a, b = site_cluster(ALICE), site_cluster(BOB)
    a.up()
    b.up()
    assert a.head()["gcs_port"] != b.head()["gcs_port"], "two heads on one login node"
    for c in (a, b):
        ((host, ip),) = parse_result(c.driver(seconds=3).stdout)
        assert site_nodes[host] == ip, f"{c.user.name}'s task ran at {host} {ip}"

    # Neither can read the other's token, state or Ray session.
    for reader, owner in ((BOB, a), (ALICE, b)):
        for path in (owner.state / "token", owner.state / "head.json", owner.head()["temp_dir"]):
            proc = reader.run(["cat" if "token" in str(path) else "ls", str(path)], check=False)
            assert proc.returncode != 0 and "Permission denied" in proc.stderr, (reader, path)
    # Bob's token and TLS certificate (his cluster's CA) do not open Alice's cluster: the TLS
    # handshake fails both ways (Ray's driver retries it for a minute: 40 s are enough).
    probe = "import ray; ray.init(); print('JOINED', ray.cluster_resources())"
    bobs = b.env()
    env = {**bobs, "RAY_ADDRESS": f"{a.head()['ip']}:{a.head()['gcs_port']}"}
    assert env["RAY_USE_TLS"] == "1" and env["RAY_AUTH_TOKEN_PATH"] == str(b.state / "token")
    proc = BOB.run(["timeout", "40", BOB.bin("python"), "-c", probe], env=env, timeout=120,
                   check=False)  # fmt: skip
    assert proc.returncode != 0 and "JOINED" not in proc.stdout

    a.down()
    assert a.jobs() == []
    ((host, _),) = parse_result(b.driver().stdout)  # Bob's cluster lives on
    assert host in site_nodes
    b.down()
    assert b.jobs() == []


# What Eve runs (in the site's Ray environment, as herself): the config cache Ray's launcher
# would load for the site's yaml (the key is computed as commands.py _bootstrap_config does),
# with her command first in every list of commands Ray runs; Ray's default temp dir with a
# ray_current_cluster of hers; the victim's next job temp dirs by their old names; with
# "root", also the victim's private temp root itself, holding the same cache.
PLANT = r"""
import hashlib, json, os, sys, yaml
from ray.autoscaler._private.commands import CONFIG_CACHE_VERSION
from ray.autoscaler._private.util import prepare_config
uid, first_job, victim_yaml, root_too = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
config = prepare_config(yaml.safe_load(open(victim_yaml)))
key = hashlib.sha256(json.dumps([config], sort_keys=True).encode()).hexdigest()
evil = json.loads(json.dumps(config))
for k in ("initialization_commands", "setup_commands", "head_setup_commands",
          "head_start_ray_commands"):
    evil[k] = ["touch /tmp/eve-ran-as-$(id -un)"] + evil[k]
def plant_dir(path):
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o777)
dirs = ["/tmp"]
if root_too == "root":
    dirs.append("/tmp/ray-slurm-" + uid)
    plant_dir(dirs[-1])
for d in dirs:
    path = os.path.join(d, "ray-config-" + key)
    with open(path, "w") as f:
        json.dump({"_version": CONFIG_CACHE_VERSION, "config": evil}, f)
    os.chmod(path, 0o666)
plant_dir("/tmp/ray")
with open("/tmp/ray/ray_current_cluster", "w") as f:
    f.write("10.77.0.1:1\n")
for job in range(first_job, first_job + 15):
    plant_dir(f"/tmp/rs-{job}")
print(key)
"""


@pytest.fixture
def eve_plants():
    """Eve plants her files; everything she made is removed afterwards (by the harness)."""
    planted: list[str] = []

    def plant(victim: User, config: Path, root_too: bool) -> str:
        """Eve reads the victim's copy of the config (homes are world-readable, as usual)."""
        probe = EVE.run(["sbatch", "--parsable", "--wrap", "true", "-o", "/dev/null"])
        next_job = int(probe.stdout.strip().split(";")[0]) + 1  # job ids are sequential
        # the old, predictable login-head temp dir name (rs-h + digest of the cluster dir)
        digest = hashlib.sha256(str(victim.home / ".ray-slurm" / CLUSTER).encode()).hexdigest()
        planted.extend(["/tmp/ray", f"/tmp/rs-h{digest[:10]}",
                        *(f"/tmp/rs-{j}" for j in range(next_job, next_job + 15))])  # fmt: skip
        if root_too:
            planted.append(f"/tmp/ray-slurm-{victim.uid}")
        argv = [EVE.bin("python"), "-c", PLANT, str(victim.uid), str(next_job), str(config),
                "root" if root_too else "-"]  # fmt: skip
        key = EVE.run(argv).stdout.strip()
        planted.append(f"/tmp/ray-config-{key}")
        EVE.run(["bash", "-c", f"mkdir -m 777 /tmp/rs-h{digest[:10]}"])
        return key

    yield plant
    for path in planted:
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            Path(path).unlink(missing_ok=True)
    for marker in Path("/tmp").glob("eve-ran-as-*"):
        marker.unlink()


def eve_ran() -> list[str]:
    return [str(p) for p in Path("/tmp").glob("eve-ran-as-*")]


@pytest.mark.parametrize("head_mode", ["login", "slurm"])
def test_nothing_the_neighbour_planted_is_used(site_cluster, eve_plants, site_nodes, head_mode):
    shutil.rmtree(f"/tmp/ray-slurm-{BOB.uid}", ignore_errors=True)  # Bob's first login here
    bob = site_cluster(BOB, head_mode=head_mode)
    key = eve_plants(BOB, bob.config, root_too=False)
    bob.up()
    # Ray's launcher looked for its cache where Eve put hers, but in Bob's private temp root.
    private = Path(f"/tmp/ray-slurm-{BOB.uid}")
    assert (private / f"ray-config-{key}").exists(), "Ray's cache key is what Eve computed"
    assert mode(private) == 0o700 and os.stat(private).st_uid == BOB.uid
    # The head's Ray temp dir (which Ray makes world-writable) lies in a new private directory.
    head_dir = Path(bob.head()["temp_dir"]).parent
    assert mode(head_dir) == 0o700 and os.stat(head_dir).st_uid == BOB.uid
    ((host, ip),) = parse_result(bob.driver().stdout)
    assert site_nodes[host] == ip

    # Every launcher command goes through the same cache: exec, attach, submit, down.
    out = bob.sh(
        "ray exec ray-slurm.yaml 'python -c \"import ray._common.utils as u; "
        'print(\\"ADDRESS_FILE\\", u.get_ray_address_file(None))"\''
    ).stdout
    address_file = next(ln for ln in out.splitlines() if ln.startswith("ADDRESS_FILE"))
    assert "/tmp/ray/" not in address_file and str(private) in address_file, address_file
    attach = bob.sh("ray attach ray-slurm.yaml <<< 'echo ATTACHED-$(hostname); exit'")
    head_host = "login" if head_mode == "login" else bob.jobs("head")[0].node
    assert f"ATTACHED-{head_host}" in attach.stdout
    BOB.write(BOB.home / "job.py", "import sys; print('SUBMITTED', *sys.argv[1:])\n")
    submit = bob.sh("ray submit ray-slurm.yaml job.py one two")
    assert "SUBMITTED one two" in submit.stdout
    workers = {j.job_id for j in bob.jobs("worker")}
    bob.down()
    assert bob.jobs() == []
    assert eve_ran() == [], "a command Eve planted ran as Bob"
    # Eve's predicted temp dirs were never used (still empty, still hers).
    for job in workers:
        planted = Path(f"/tmp/rs-{job}")
        if planted.exists():
            assert os.stat(planted).st_uid == EVE.uid and not any(planted.iterdir())


def test_a_planted_private_root_is_refused_naming_it(site_cluster, eve_plants):
    shutil.rmtree(f"/tmp/ray-slurm-{BOB.uid}", ignore_errors=True)
    bob = site_cluster(BOB)
    eve_plants(BOB, bob.config, root_too=True)  # Eve also made the directory Bob's Ray would use
    proc = bob.up(check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert f"/tmp/ray-slurm-{BOB.uid} is owned by uid {EVE.uid}, not by you" in out, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert bob.jobs() == [] and not (bob.state / "head.json").exists()
    assert eve_ran() == []


def test_the_users_environment_does_not_retarget_jobs_or_tokens(site_cluster, site_nodes):
    """SBATCH_*, SRUN_* and RAY_AUTH_TOKEN in the shell, and a group-writable umask."""
    hostile_env = {"SBATCH_JOB_NAME": "x", "SBATCH_PARTITION": "long", "SBATCH_TIMELIMIT": "1",
                   "SALLOC_PARTITION": "long", "SRUN_PARTITION": "long",
                   "RAY_AUTH_TOKEN": "not-the-clusters-token"}  # fmt: skip
    bob = site_cluster(BOB, env=hostile_env, umask="002")
    bob.up()
    result = bob.driver(seconds=20, check=False)  # the worker is listed while the task runs
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    ((host, ip),) = parse_result(result.stdout)
    assert site_nodes[host] == ip
    jobs = run(["squeue", "--states=all", f"--user={BOB.name}", "--noheader",
                "--format=%j|%P|%l"], timeout=30).stdout.split()  # fmt: skip
    ours = [j for j in jobs if j.startswith(f"ray.{CLUSTER}.worker.")]
    assert ours, jobs
    for line in ours:
        name, partition, limit = line.split("|")
        assert (name, partition) == (f"ray.{CLUSTER}.worker.cpu", "debug"), line
        assert limit != "1:00", line  # not SBATCH_TIMELIMIT's minute
    assert not [j for j in jobs if j.startswith("x|")], jobs

    # Private whatever the umask: directories 0700, files 0600, scripts 0700.
    assert mode(bob.state.parent) == mode(bob.state) == 0o700
    for d in ("jobs", "logs"):
        assert mode(bob.state / d) == 0o700
    for f in ("token", "state.json", "head.json"):
        assert mode(bob.state / f) == 0o600, f
    assert all(mode(p) == 0o700 for p in (bob.state / "jobs").iterdir())
    logs = list((bob.state / "logs").iterdir())  # the login head's, and SLURM's job output
    assert any(p.name.startswith(f"ray.{CLUSTER}.worker.") for p in logs), logs
    assert all(mode(p) == 0o600 for p in logs), [(p.name, oct(mode(p))) for p in logs]
    assert mode(Path(bob.head()["temp_dir"]).parent) == 0o700
    bob.down()
    wait_for(lambda: not bob.jobs(), 60, "no job of Bob's cluster")
