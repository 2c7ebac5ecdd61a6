"""Issue #11, part 4: the head starts once, and damaged state never stops `ray down`.

- Two `ray up` of one cluster at once (head in a SLURM job): one head job is ever submitted.
- A login head whose record is lost (what a `ray up` interrupted between starting the head and
  recording it leaves: the process runs, the state does not know it; produced here by removing
  the record, since the window is too short to hit with a signal) is found from the process
  table: `ray up` does not start a second one, `ray-slurm status` shows it.
- A truncated state file is moved aside with a message; `ray down` finds the jobs from SLURM by
  name and the login head from the process table, and stops them all.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import Cluster, gcs_open, wait_for
from support.procs import WaitTimeout


def head_jobs_ever(cluster: Cluster) -> list[str]:
    """Head jobs of the cluster SLURM still knows, finished ones included (MinJobAge 300 s)."""
    name = f"ray.{cluster.name}.head.head"
    return [j.job_id for j in cluster.user.jobs() if j.name == name]


HOLD_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()  # until the test closes stdin
"""


def flock_waiters(path: Path) -> int:
    """Processes blocked on a flock of ``path`` (/proc/locks marks waiters with ``->``)."""
    inode = f":{path.stat().st_ino} "
    return sum(1 for ln in Path("/proc/locks").read_text().splitlines()
               if "->" in ln and "FLOCK" in ln and inode in ln)  # fmt: skip


def test_two_ray_up_at_once_start_one_head(make_cluster):
    """Both `ray up`s are held at the head-start lock until both have found no head (the race
    made certain), then let go: one starts the head, the other says so and stops."""
    cluster = make_cluster("e2e-twoup", head_mode="slurm")
    user = cluster.user
    user.run(["mkdir", "-p", "-m", "700", str(cluster.state_dir)])
    lock = cluster.state_dir / "head.lock"
    holder = subprocess.Popen(user.argv([user.bin("python"), "-c", HOLD_LOCK, str(lock)]),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert holder.stdout and holder.stdout.readline().strip() == "locked"
    cluster.is_up = True
    command = [user.bin("ray"), "up", "-y", str(cluster.config_path)]
    ups = [user.popen(command), user.popen(command)]

    def both_waiting() -> bool:
        ended = [p for p in ups if p.poll() is not None]
        assert not ended, [(out + err)[-3000:] for out, err in (p.communicate() for p in ended)]
        return flock_waiters(lock) == 2

    try:
        wait_for(both_waiting, 180, "both ray up to wait for the head lock")
    except WaitTimeout as exc:  # say where each one is instead
        for p in ups:
            p.kill()
        outputs = [(out + err)[-3000:] for out, err in (p.communicate() for p in ups)]
        raise AssertionError(f"/proc/locks:\n{Path('/proc/locks').read_text()}\n{outputs}") from exc
    holder.communicate(input="", timeout=30)

    outputs = [p.communicate(timeout=420) for p in ups]
    codes = sorted(p.returncode for p in ups)
    assert codes == [0, 1], [(out + err)[-2000:] for out, err in outputs]
    refused = next(out + err for p, (out, err) in zip(ups, outputs, strict=True) if p.returncode)
    assert "was started meanwhile by another `ray up`" in refused
    assert "Traceback" not in refused
    assert len(head_jobs_ever(cluster)) == 1, head_jobs_ever(cluster)
    assert "head" in cluster.exec("ray status").stdout
    cluster.down()
    assert cluster.jobs() == []


def test_lost_and_damaged_state_never_block_ray_down(make_cluster):
    def one_min_worker(cfg):
        cfg["available_node_types"]["cpu"]["min_workers"] = 1

    cluster = make_cluster("e2e-damage", head_mode="login", max_workers=1, change=one_min_worker)
    cluster.up()
    head = cluster.head()
    workers = wait_for(lambda: cluster.jobs("worker"), 180, "the min worker's job")
    state_file = cluster.state_dir / "state.json"

    # The login head's record is lost: it is found from the process table, not started twice.
    state = json.loads(state_file.read_text())
    del state["login_head"]
    cluster.user.write(state_file, json.dumps(state), 0o600)
    assert "login-head" in cluster.status()
    cluster.ray("up", "-y", str(cluster.config_path), timeout=420)
    assert cluster.head()["started"] == head["started"], "a second login head was started"

    # A truncated state file (a full quota, a crash mid-write on a filesystem without rename
    # atomicity): the running autoscaler moves it aside and goes on from SLURM's jobs.
    cluster.user.write(state_file, state_file.read_text()[:40], 0o600)
    wait_for(lambda: list(cluster.state_dir.glob("state.json.bad-*")), 60, "the file moved aside")
    wait_for(lambda: "moved to state.json.bad-" in cluster.autoscaler_log(), 30, "the warning")
    assert "login-head" in cluster.status() and "cpu" in cluster.status()
    # Damaged again just before `ray down`: whichever reads it first moves it, and `ray down`
    # still stops every node.
    cluster.user.write(state_file, "{", 0o600)
    cluster.down()
    wait_for(lambda: not cluster.jobs(), 120, "the worker jobs to be cancelled")
    assert not {j.job_id for j in workers} & {j.job_id for j in cluster.jobs()}
    assert not gcs_open(head["ip"], int(head["gcs_port"])), "the login head survived ray down"
