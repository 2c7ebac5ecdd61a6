"""``Listing``: the provider's view of its nodes, renewed by a thread in the head's autoscaler.

The backend is a fake whose listing can be held mid-way (an ``squeue`` that takes its time);
the state directory, the reconciliation and the node watch are real.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from ray_slurm import config
from ray_slurm.backends.nodes import Ended, JobState, Node, Seen
from ray_slurm.cluster.listing import Listing
from ray_slurm.cluster.policy import TypeBackoff
from ray_slurm.cluster.watch import NodeWatch
from ray_slurm.host.state import ClusterDir

WAIT_S = 10  # generous: only a broken listing makes a test wait this long


class SlowBackend:
    """Lists ``nodes``; while ``gate`` is clear, a listing waits for it (a slow squeue)."""

    name = "slurm"

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.gate = threading.Event()
        self.gate.set()
        self.inside = threading.Event()  # a listing is waiting at the gate
        self.listings = 0
        self.threads: set[str] = set()
        self.fail_next = False
        self.ended: list[Ended] = []  # told at the next listing

    def list_nodes(self) -> Seen:
        self.threads.add(threading.current_thread().name)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("a bug in a listing")
        self.inside.set()
        assert self.gate.wait(WAIT_S)
        self.inside.clear()
        self.listings += 1
        ended, self.ended = self.ended, []
        return Seen(list(self.nodes.values()), ended)

    def add(self, node_id: str) -> None:
        self.nodes[node_id] = Node(node_id, self.name, "worker", "cpu", JobState.RUNNING, "n1")


@pytest.fixture
def backend() -> SlowBackend:
    return SlowBackend()


@pytest.fixture
def make_listing(
    settings: config.Settings, cluster: ClusterDir, backend: SlowBackend
) -> Iterator[object]:
    made: list[Listing] = []

    def make(interval_s: float) -> Listing:
        watch = NodeWatch(settings, cluster, TypeBackoff())
        listing = Listing({"slurm": backend}, cluster, "c", watch, lambda: interval_s)
        made.append(listing)
        return listing

    yield make
    for listing in made:
        listing.stop()


def wait_for(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_the_loop_lists_itself_when_no_thread_renews_the_listing(make_listing, backend):
    """`ray up`/`ray down`: a listing is reused for one interval, then made in the call."""
    listing = make_listing(60)
    backend.add("1")
    assert list(listing.current()) == ["1"]
    backend.add("2")
    assert list(listing.current()) == ["1"]  # reused
    assert list(listing.current(force=True)) == ["1", "2"]
    assert backend.listings == 2 and backend.threads == {threading.current_thread().name}


def test_the_thread_renews_the_listing_every_interval_and_calls_never_list(make_listing, backend):
    listing = make_listing(0.05)
    backend.add("1")
    listing.start()
    wait_for(lambda: backend.listings >= 1, "the first listing")
    backend.add("2")
    wait_for(lambda: "2" in listing.current(), "the thread to list the new node")
    for _ in range(20):  # the autoscaler's loop, faster than the interval
        listing.current()
        time.sleep(0.01)
    assert backend.threads == {"ray-slurm-listing"}
    assert listing.listings == backend.listings >= 3
    listing.stop()
    stopped = backend.listings
    time.sleep(0.2)
    assert backend.listings == stopped


def test_a_call_does_not_wait_for_the_threads_slow_listing(make_listing, backend):
    """The slow part (squeue) runs outside the lock: the loop answers from the last listing."""
    listing = make_listing(0.05)
    backend.add("1")
    listing.start()
    wait_for(lambda: backend.listings >= 1, "the first listing")
    backend.gate.clear()
    wait_for(backend.inside.is_set, "the thread's next listing to begin")
    t0 = time.monotonic()
    assert list(listing.current()) == ["1"]
    with listing.lock:  # the provider's own changes do not wait for the listing either
        pass
    assert time.monotonic() - t0 < 1
    backend.gate.set()


def test_a_listing_begun_before_a_launch_does_not_count_as_fresh(make_listing, backend):
    """The launched job may be missing from that listing: the next call lists again."""
    listing = make_listing(60)
    backend.gate.clear()
    before = threading.Thread(target=listing.current)
    before.start()
    wait_for(backend.inside.is_set, "the listing to begin")
    backend.add("7")  # sbatch answered while squeue ran; the provider records it:
    listing.invalidate()
    backend.gate.set()
    before.join(WAIT_S)
    assert backend.listings == 1
    assert list(listing.current()) == ["7"]
    assert backend.listings == 2


def test_the_thread_survives_a_failed_listing_and_tries_again(make_listing, backend, caplog):
    listing = make_listing(0.05)
    backend.fail_next = True
    listing.start()
    wait_for(lambda: backend.listings >= 1, "a listing after the failure")
    assert "the background listing failed" in caplog.text


def test_a_new_provider_of_the_cluster_stops_the_earlier_ones_thread(make_listing, backend):
    """Ray's v1 autoscaler makes a new provider when the provider section changes."""
    old, new = make_listing(0.05), make_listing(0.05)
    old.start()
    new.start()
    running = [t for t in threading.enumerate() if t.name == "ray-slurm-listing"]
    assert len(running) == 1 and old._thread is None and new._thread is not None


def test_what_the_threads_listings_teach_is_handed_over_once_in_the_callers_thread(
    make_listing, backend
):
    """Not in the thread: the autoscaler's loop learns of a failed job in its own order, and
    an end told by one listing is kept until taken, even if more listings come first."""
    listing = make_listing(0.05)
    backend.add("1")
    backend.add("2")
    gone = backend.nodes.pop("2")
    backend.ended.append(Ended(gone, "job 2 ended FAILED", failed=True, types_fault=True))
    listing.start()
    wait_for(lambda: backend.listings >= 3, "three listings")
    news = listing.news()
    assert news is not None and news.complete and sorted(news.nodes) == ["1"]
    assert [end.why for end in news.ended] == ["job 2 ended FAILED"]
    wait_for(lambda: backend.listings >= 4, "another listing")
    later = listing.news()
    assert later is not None and later.ended == []  # told once
