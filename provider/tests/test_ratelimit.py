"""slurmctld's rate limiter as the provider sees it: ``squeue -v`` on a release that has it,
its options dump left out of the parsed jobs, and the listing paced by what stderr said.

The squeue and sinfo here are fakes that print what 24.11's print (checked on the local 24.11
site with rl_enable: docs/admin-guide.md, SLURM releases)."""

from __future__ import annotations

import logging

import pytest

from ray_slurm import ratelimit
from ray_slurm.slurm import Slurm, SlurmError

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
    assert slurm.calls == 1  # sinfo -V is no RPC and not counted


def test_a_release_without_the_limiter_gets_no_v(site, tmp_path, monkeypatch):
    monkeypatch.setenv("PLAIN", VERBOSE_STDOUT.splitlines()[-1] + "\n")
    slurm = site("slurm 22.05.8")
    assert [j.job_id for j in slurm.squeue(user="rsl-bob")] == ["7"]
    assert "-v" not in (tmp_path / "args").read_text().split()


def test_throttled_listings_slow_the_pace_and_unthrottled_ones_restore_it(
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
    for _ in range(4):
        slurm.squeue(user="rsl-bob")
        factors.append(slurm.pace.factor)
    assert factors == [4.0, 2.0, 1.0, 1.0]


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
    with pytest.raises(SlurmError, match=r"did not answer within 1 s \(slurmctld's RPC rate "
                       r"limiter made it wait 2 time\(s\)\)"):  # fmt: skip
        slurm.squeue(user="u")
    assert slurm.pace.factor == 2.0 and slurm.pace.throttled == 2
