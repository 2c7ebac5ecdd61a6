"""Issue #4: slurmctld goes away for a while and comes back (its process is really stopped)."""

import os
import signal
import time
from pathlib import Path

from conftest import REPO, parse_result, run, start_driver, wait_for
from support.accounts import SITE_STATE


def slurmctld_pid() -> int | None:
    """The campus site's slurmctld (by its pid file: the GPU centre runs one too), if alive."""
    try:
        pid = int((SITE_STATE / "run" / "slurmctld.pid").read_text())
        alive = Path(f"/proc/{pid}/comm").read_text().startswith("slurmctld")
    except (OSError, ValueError):
        return None
    return pid if alive else None


def test_slurmctld_outage_neither_loses_nor_duplicates_nodes(make_cluster, site_nodes):
    cluster = make_cluster("f-ctld", max_workers=1)
    cluster.up()
    driver = start_driver(cluster, tasks=1, seconds=40)
    worker = wait_for(lambda: {j.job_id for j in cluster.jobs("worker")}, 60, "a worker").pop()
    monitor = int(run(["pgrep", "-f", f"monitor.py.*{cluster.head()['temp_dir']}/"],
                      timeout=10).stdout.split()[0])  # fmt: skip

    os.kill(slurmctld_pid(), signal.SIGTERM)
    wait_for(lambda: slurmctld_pid() is None, 30, "slurmctld to stop")
    try:
        time.sleep(20)  # four autoscaler ticks without SLURM
        os.kill(monitor, 0)  # the autoscaler is still alive
        # `ray exec` still finds the head: from the state, since SLURM cannot answer.
        assert "Autoscaler status" in cluster.exec("ray status").stdout
    finally:
        run([str(REPO / "scripts" / "localsite"), "up"], timeout=120)  # restarts slurmctld
    log = cluster.autoscaler_log()
    assert "cannot list slurm nodes, keeping the last known" in log
    assert {j.job_id for j in cluster.jobs("worker")} == {worker}, "a node was lost or duplicated"

    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err[-3000:]
    ((host, ip),) = parse_result(out)
    assert site_nodes[host] == ip
    cluster.down()
