"""slurmctld's rate limiter as the provider sees it: ``squeue -v`` on a release that has it,
its options dump left out of the parsed jobs, and the listing paced by what stderr said.

The squeue and sinfo here are fakes that print what 24.11's print (checked on the local 24.11
site with rl_enable: docs/admin-guide.md, SLURM releases)."""

from __future__ import annotations

import logging

import pytest

from ray_slurm.backends.errors import BackendBusy
from ray_slurm.backends.slurm import ratelimit
from ray_slurm.backends.slurm.client import Slurm, SlurmError, Throttled

# squeue -v of 24.11 (its options dump goes to stdout, then the jobs).
VERBOSE_STDOUT = """\
-----------------------------
all         = false
users       = rsl-bob
verbose     = 1
-----------------------------


last_update_time=0 records=1
7|RUNNING|n1|59:00|ray.c.worker.cpu|None
"""
THROTTLED = "squeue: RPC rate limited 1 time(s). Sleeping then trying again.\n"


@pytest.fixture
def site(fake_bin, tmp_path):
    """A 24.11 site whose squeue prints ``VERBOSE_STDOUT`` and, while ``throttled`` exists, the
    rate limiter's line; it logs its arguments to ``args``."""

    def make(version: str = "slurm-wlm 24.11.5") -> Slurm:
        fake_bin("sinfo", f'echo "{version}"')
        fake_bin(
            "squeue",
            f'echo "$*" >> {tmp_path}/args; '
            f'case "$*" in *-v*) printf %s "$STDOUT_V";; *) printf "%s" "$PLAIN";; esac; '
            f'[ -e {tmp_path}/throttled ] && echo "{THROTTLED.strip()}" >&2; true',
        )
        return Slurm(bin_dir=str(tmp_path / "bin"))

    return make


def test_the_jobs_are_parsed_after_the_options_dump(site, tmp_path, monkeypatch):
    monkeypatch.setenv("STDOUT_V", VERBOSE_STDOUT)
    slurm = site()
    jobs = slurm.squeue(user="rsl-bob")
    assert [(j.job_id, j.name) for j in jobs] == [("7", "ray.c.worker.cpu")]
    assert "-v" in (tmp_path / "args").read_text().split()
    assert slurm.calls == 2  # sinfo -V is no RPC and not counted; scontrol show federation is


def test_a_release_without_the_limiter_gets_no_v(site, tmp_path, monkeypatch):
    monkeypatch.setenv("PLAIN", VERBOSE_STDOUT.splitlines()[-1] + "\n")
    slurm = site("slurm 22.05.8")
    assert [j.job_id for j in slurm.squeue(user="rsl-bob")] == ["7"]
    assert "-v" not in (tmp_path / "args").read_text().split()


def test_throttled_listings_halve_the_rate_and_unthrottled_ones_restore_it_slowly(
    site, tmp_path, monkeypatch, caplog
):
    monkeypatch.setenv("STDOUT_V", VERBOSE_STDOUT)
    slurm = site()
    (tmp_path / "throttled").touch()
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            slurm.squeue(user="rsl-bob")
    assert slurm.pace.factor == ratelimit.MAX_FACTOR  # 2, 4, 8, then capped
    assert (slurm.pace.throttled, slurm.pace.throttled_calls) == (5, 5)
    assert "rate limiter made squeue wait 1 time(s)" in caplog.text
    (tmp_path / "throttled").unlink()
    factors = []
    for _ in range(8):
        slurm.squeue(user="rsl-bob")
        factors.append(round(slurm.pace.factor, 2))
    # the rate grows back by an eighth of the configured one per listing: 1/8, 2/8, 3/8 … 8/8
    assert factors == [4.0, 2.67, 2.0, 1.6, 1.33, 1.14, 1.0, 1.0]


def test_an_unknown_release_is_listed_plainly(fake_bin, tmp_path, monkeypatch):
    fake_bin("sinfo", "echo 'no version here'")
    fake_bin("squeue", "echo '7|RUNNING|n1|59:00|ray.c.worker.cpu|None'")
    slurm = Slurm(bin_dir=str(tmp_path / "bin"))
    assert slurm.version() == (0, 0, 0)
    assert [j.job_id for j in slurm.squeue(user="u")] == ["7"]


def test_a_squeue_starved_past_its_timeout_is_named_throttled_and_paces(fake_bin, tmp_path):
    """The user's other commands take the whole bucket: the provider's squeue waits past
    ``slurm_timeout_s`` and is killed; what it printed before says why, and counts."""
    fake_bin("sinfo", 'echo "slurm-wlm 24.11.5"')
    fake_bin("squeue", f'echo "{THROTTLED.strip()}" >&2; echo "{THROTTLED.strip()}" >&2; sleep 5')
    slurm = Slurm(bin_dir=str(tmp_path / "bin"), timeout_s=1)
    with pytest.raises(Throttled, match=r"squeue gave up after \d+ s: slurmctld's RPC rate "
                       r"limiter made it wait 2 time\(s\)"):  # fmt: skip
        slurm.squeue(user="u")
    assert slurm.pace.factor == 2.0 and slurm.pace.throttled == 2


def test_refusals_are_counted_one_per_line_not_summed():
    """The client numbers the refusals of one RPC (1, 2, 3 …): three lines are three waits."""
    lines = "".join(f"squeue: RPC rate limited {n} time(s). Sleeping then trying again.\n"
                    for n in (1, 2, 3))  # fmt: skip
    assert ratelimit.count(lines) == 3


def _refused(times: int, every_s: float, then: str) -> str:
    """A fake client refused ``times`` times, ``every_s`` apart, that then does ``then``."""
    return (f'for n in $(seq 1 {times}); do echo "sbatch: RPC rate limited $n time(s). Sleeping '
            f'then trying again." >&2; sleep {every_s}; done; {then}')  # fmt: skip


def test_a_command_the_limiter_keeps_refusing_is_not_killed_at_its_timeout(fake_bin, tmp_path):
    """4 refusals over 2 s with a 1 s timeout: slurmctld answers it, so it is let finish (it was
    killed at 1 s before, and the launch counted as the node type's failure)."""
    fake_bin("sinfo", 'echo "slurm-wlm 24.11.5"')
    fake_bin("sbatch", f'echo "$*" > {tmp_path}/args; ' + _refused(4, 0.5, "echo 42"))
    slurm = Slurm(bin_dir=str(tmp_path / "bin"), timeout_s=1)
    assert slurm.sbatch("job.sh") == "42"
    assert "-v" in (tmp_path / "args").read_text().split()
    assert (slurm.pace.throttled, slurm.pace.throttled_calls, slurm.pace.factor) == (4, 1, 2.0)


def test_a_command_whose_client_sleeps_longer_after_each_refusal_is_let_finish(fake_bin, tmp_path):
    """SLURM's client sleeps n s after its nth refusal: the waits outgrow ``slurm_timeout_s``
    (8 refusals, then an 8 s sleep, against a 5 s timeout on campus24). Each refusal gives the
    command its timeout plus that sleep (it was given up before: `squeue gave up after 35 s`)."""
    fake_bin("sinfo", 'echo "slurm-wlm 24.11.5"')
    fake_bin("sbatch", 'n=0; for s in 0.5 1 1.5; do n=$((n + 1)); echo "sbatch: RPC rate limited '
             '$n time(s). Sleeping then trying again." >&2; sleep $s; done; echo 42')  # fmt: skip
    slurm = Slurm(bin_dir=str(tmp_path / "bin"), timeout_s=0.5)
    assert slurm.sbatch("job.sh") == "42"


def test_a_command_refused_past_the_cap_is_given_up_as_busy(fake_bin, tmp_path, monkeypatch):
    monkeypatch.setattr(ratelimit, "THROTTLED_MAX_S", 1.5)
    fake_bin("sinfo", 'echo "slurm-wlm 24.11.5"')
    fake_bin("sbatch", _refused(100, 0.2, "echo 42"))
    slurm = Slurm(bin_dir=str(tmp_path / "bin"), timeout_s=0.5)
    with pytest.raises(BackendBusy, match=r"sbatch gave up after \d s: slurmctld's RPC rate "):
        slurm.sbatch("job.sh")


def test_a_command_that_hangs_without_being_refused_is_killed_at_its_timeout(fake_bin, tmp_path):
    fake_bin("sinfo", 'echo "slurm-wlm 24.11.5"')
    fake_bin("sbatch", "sleep 5")
    slurm = Slurm(bin_dir=str(tmp_path / "bin"), timeout_s=0.5)
    with pytest.raises(SlurmError, match="did not answer within 0.5 s") as raised:
        slurm.sbatch("job.sh")
    assert not isinstance(raised.value, BackendBusy)


VERBOSE_SCANCEL = "scancel: Terminating job 7\nscancel: Terminating job 8\n"


@pytest.mark.parametrize(("error", "raises"), [
    ("scancel: error: Kill job error on job id 8: Invalid job id specified", False),
    ("scancel: error: No active jobs match ALL job filters, including: user_name=u ", False),
    ("scancel: error: Kill job error on job id 8: Access/permission denied", True),
])  # fmt: skip
def test_scancel_v_reports_only_its_errors(fake_bin, tmp_path, error, raises):
    """Its ``-v`` lines on stderr are no error; a job that already ended is none either."""
    fake_bin("sinfo", 'echo "slurm-wlm 24.11.5"')
    fake_bin("scancel", f'printf "{VERBOSE_SCANCEL}" >&2; echo "{error}" >&2; exit 1')
    slurm = Slurm(bin_dir=str(tmp_path / "bin"))
    if raises:
        with pytest.raises(SlurmError, match="permission denied"):
            slurm.scancel(["7", "8"])
    else:
        slurm.scancel(["7", "8"])


def test_a_refused_sbatch_v_is_named_by_slurms_words_without_the_options_dump(fake_bin, tmp_path):
    """24.11's ``sbatch -v`` prints its options before the error: the message keeps the error
    (it was the whole dump, and the log line users read began with it)."""
    fake_bin("sinfo", 'echo "slurm-wlm 24.11.5"')
    fake_bin("sbatch", 'printf "sbatch: defined options\\nsbatch: account : nosuch\\n" >&2; '
             'echo "sbatch: error: Batch job submission failed: Invalid account or '
             'account/partition combination specified" >&2; exit 1')  # fmt: skip
    slurm = Slurm(bin_dir=str(tmp_path / "bin"))
    with pytest.raises(SlurmError) as raised:
        slurm.sbatch("job.sh")
    assert str(raised.value) == (
        "sbatch failed: sbatch: error: Batch job submission failed: "
        "Invalid account or account/partition combination specified"
    )
