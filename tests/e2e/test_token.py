"""Issue #2, test 4: token authentication is on; a driver without the cluster's token is refused."""

import os
import stat

from conftest import BIN, run

PROBE = "import ray; ray.init(); print('CPUS', ray.cluster_resources().get('CPU', 0))"


def test_driver_without_token_is_refused(make_cluster, tmp_path):
    cluster = make_cluster("e2e-token", max_workers=0)
    cluster.up()
    env = cluster.env()
    token_file = env["RAY_AUTH_TOKEN_PATH"]
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(token_file)).st_mode) == 0o700

    assert "CPUS" in cluster.driver(PROBE, env=env, timeout=120).stdout

    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token\n")
    for bad_env in (
        {**env, "RAY_AUTH_TOKEN_PATH": str(wrong)},  # a wrong token
        {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")},  # no token at all
    ):
        proc = cluster.driver(PROBE, env=bad_env, timeout=180, check=False)
        assert proc.returncode != 0 and "CPUS" not in proc.stdout, proc.stdout

    no_token = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
    status = run([str(BIN / "ray"), "status", f"--address={env['RAY_ADDRESS']}"], timeout=120,
                 check=False, env=no_token)  # fmt: skip
    assert status.returncode != 0
    cluster.down()
