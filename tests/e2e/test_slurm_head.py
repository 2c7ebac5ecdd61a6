"""Issue #2, test 2: the head in a SLURM job of its own; `ray up`/`ray exec` reach it with srun."""

from conftest import parse_result, start_driver, wait_for


def test_slurm_head_scales_slurm_workers_up_and_down(make_cluster, site_nodes):
    cluster = make_cluster("e2e-slurmhead", head_mode="slurm")
    cluster.up()
    heads = cluster.jobs("head")
    assert len(heads) == 1 and heads[0].slurm_state == "RUNNING"
    assert heads[0].name == "ray.e2e-slurmhead.head.head"
    head_ip = cluster.env()["RAY_ADDRESS"].split(":")[0]
    assert head_ip == site_nodes[heads[0].node], "the head must use its node's NodeAddr"
    assert cluster.ray("get-head-ip", str(cluster.config_path)).stdout.split()[-1] == head_ip

    # The driver runs inside the head's job (ray exec -> srun --overlap), as users do it.
    driver = start_driver(cluster, tasks=2, seconds=8, on_head=True)
    workers = wait_for(lambda: cluster.jobs("worker"), 120, "worker jobs in squeue")
    assert all(j.name == "ray.e2e-slurmhead.worker.cpu" for j in workers)
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err[-3000:]

    results = parse_result(out)
    assert len(results) == 2
    worker_nodes = {j.node for j in cluster.jobs("worker")} | {j.node for j in workers}
    for host, ip in results:
        assert host in site_nodes
        assert ip == site_nodes[host]
        assert host in worker_nodes, f"a 2-CPU task ran on {host}, which has no worker job"

    wait_for(lambda: not cluster.jobs("worker"), 240, "idle worker jobs to be cancelled")
    assert len(cluster.jobs("head")) == 1

    # `ray attach` opens a shell inside the head's job (srun --overlap), on the head's node.
    attach = cluster.ray("attach", str(cluster.config_path), timeout=120,
                         input="echo ATTACHED-$(hostname)\nexit\n")  # fmt: skip
    assert f"ATTACHED-{heads[0].node}" in attach.stdout

    # Even with its state lost, `ray down` finds the cluster's jobs by name and cancels them.
    (cluster.state_dir / "state.json").unlink()
    cluster.down()
    assert cluster.jobs() == []
