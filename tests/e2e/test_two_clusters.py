"""Issue #2, test 3: two clusters on the same nodes at once; `ray down` of one spares the other."""

import yaml
from conftest import ALICE, parse_result, where_tasks


def test_two_clusters_share_nodes_and_stop_independently(make_cluster, site_nodes, workdir):
    # Cluster B takes its node addresses from a site map file instead of SLURM's NodeAddr.
    node_map = ALICE.write(workdir / "node-map.yaml", yaml.safe_dump(site_nodes))
    a = make_cluster("e2e-a", max_workers=1)
    b = make_cluster("e2e-b", max_workers=1, node_map=str(node_map))
    a.up()
    b.up()
    env_a, env_b = a.env(), b.env()
    assert env_a["RAY_ADDRESS"] != env_b["RAY_ADDRESS"], "two heads on one host need own ports"

    drivers = [
        ALICE.popen([ALICE.bin("python"), "-c", where_tasks(tasks=1, seconds=5)], env=env)
        for env in (env_a, env_b)
    ]
    for driver in drivers:
        out, err = driver.communicate(timeout=300)
        assert driver.returncode == 0, err[-3000:]
        ((host, ip),) = parse_result(out)
        assert host in site_nodes and ip == site_nodes[host]

    a.down()
    assert a.jobs() == []
    # B still works after A is gone: its head answers and it can scale again.
    out = b.driver(where_tasks(tasks=1, seconds=1), env=env_b).stdout
    ((host, _),) = parse_result(out)
    assert host in site_nodes
    b.down()
    assert b.jobs() == []
