"""``SlurmNodeProvider`` against fake backends: what Ray's autoscaler gets from each verb.

The backends (``backends.make``) are replaced by in-memory ones that record what the provider
asks of them; the state directory, the config, the back-off and the reconciliation are real.
What SLURM, the login node and Kubernetes do with those requests is tested in their own unit
tests and, for real, in tests/e2e.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
import time
from collections.abc import Sequence
from typing import Any

import click
import pytest
import yaml
from ray.autoscaler.tags import (
    NODE_KIND_HEAD,
    NODE_KIND_WORKER,
    STATUS_UP_TO_DATE,
    TAG_RAY_NODE_KIND,
    TAG_RAY_NODE_STATUS,
    TAG_RAY_USER_NODE_TYPE,
)

from ray_slurm import SlurmNodeProvider, config
from ray_slurm.autoscaler import provider as provider_module
from ray_slurm.autoscaler.launcher import HeadStartedElsewhere
from ray_slurm.backends.base import LaunchRequest, Preview
from ray_slurm.backends.errors import BackendBusy, BackendError
from ray_slurm.backends.nodes import Ended, JobState, Node, Seen
from ray_slurm.cluster import burst, raynodes
from ray_slurm.cluster.policy import LaunchRefused
from ray_slurm.hooks import demandwake

WORKER_TAGS = {TAG_RAY_NODE_KIND: NODE_KIND_WORKER, TAG_RAY_USER_NODE_TYPE: "cpu"}
HEAD_TAGS = {TAG_RAY_NODE_KIND: NODE_KIND_HEAD, TAG_RAY_USER_NODE_TYPE: "head"}


TERMINATED_IN_ORDER: list[str] = []  # across the fake backends of a test


class FakeBackend:
    """Nodes in a dict; every request recorded. ``down`` makes listing fail (unreachable).

    Its listing keeps the real contract (``nodes.Seen``): it only looks, and reports what ended
    since the last look (``end``) and what is left of nodes that are no longer nodes, until
    the core removes it with ``terminate``.
    """

    noun = "job"

    def __init__(self, name: str, settings: config.Settings, first_id: int) -> None:
        self.name = name
        self.settings = settings
        self.nodes: dict[str, Node] = {}
        self.launched: list[LaunchRequest] = []
        self.terminated: list[list[str]] = []
        self.drained: list[list[str]] = []
        self.listings = 0
        self.refuse = ""  # launch raises BackendError with this message
        self.busy = ""  # launch raises BackendBusy (throttled) with this message
        self.down = False
        self.cleaned = False
        self.ended: list[Ended] = []  # told at the next listing
        self.leftovers: set[str] = set()  # exist, are no node any more: until terminated
        self._next = first_id

    def list_nodes(self) -> Seen:
        self.listings += 1
        if self.down:
            raise BackendError(f"{self.name} does not answer")
        ended, self.ended = self.ended, []
        return Seen(list(self.nodes.values()), ended, sorted(self.leftovers))

    def launch(self, request: LaunchRequest) -> str:
        if self.refuse:
            raise BackendError(self.refuse)
        if self.busy:
            raise BackendBusy(self.busy)
        node_id = str(self._next)
        self._next += 1
        spec = request.spec
        self.nodes[node_id] = Node(node_id, self.name, spec.kind, spec.name, JobState.PENDING)
        self.launched.append(request)
        return node_id

    def terminate(self, node_ids: Sequence[str]) -> None:
        self.terminated.append(list(node_ids))
        TERMINATED_IN_ORDER.extend(node_ids)
        for node_id in node_ids:
            self.nodes.pop(node_id, None)
            self.leftovers.discard(node_id)

    def drain(self, node_ids: Sequence[str]) -> None:
        self.drained.append(list(node_ids))

    def cleanup(self) -> None:
        self.cleaned = True

    def address(self, node: Node) -> str:
        return f"{self.name}-address-of-{node.host}"

    def command_runner(self, node_id: str, ctx: Any) -> Any:
        return (self.name, node_id, ctx)

    def preview(self, spec: config.NodeTypeSpec, head_address: str) -> Preview:
        return Preview("fake", "")

    # what the backend's system does by itself
    def end(self, node_id: str, why: str, *, failed: bool = True, types_fault: bool = False,
            lost: bool = False, leftover: bool = False) -> None:  # fmt: skip
        """The node ends; the next listing reports how (and, if ``leftover``, what remains)."""
        node = self.nodes.pop(node_id)
        self.ended.append(Ended(node, why, failed=failed, types_fault=types_fault, lost=lost))
        if leftover:
            self.leftovers.add(node_id)

    def run(self, node_id: str, host: str = "n1", time_left_s: float | None = None) -> None:
        node = self.nodes[node_id]
        self.nodes[node_id] = Node(node_id, self.name, node.kind, node.node_type,
                                   JobState.RUNNING, host, time_left_s=time_left_s)  # fmt: skip


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> dict[str, FakeBackend]:
    made: dict[str, FakeBackend] = {}

    def make(settings: config.Settings, cluster: Any, slurm: Any):
        made["slurm"] = FakeBackend("slurm", settings, 100)
        made["login"] = FakeBackend("login", settings, 900)
        if settings.kube_types:
            made["kubernetes"] = FakeBackend("kubernetes", settings, 500)
        return dict(made)

    monkeypatch.setattr(provider_module.backends, "make", make)
    return made


@pytest.fixture
def make_provider(raw_config, fakes):
    made: list[SlurmNodeProvider] = []

    def make(change=None) -> SlurmNodeProvider:
        cfg = copy.deepcopy(raw_config)
        if change is not None:
            change(cfg)
        cfg = SlurmNodeProvider.bootstrap_config(cfg)
        provider = SlurmNodeProvider(cfg["provider"], cfg["cluster_name"])
        made.append(provider)
        return provider

    yield make
    for provider in made:
        provider.listing.stop()  # the head's autoscaler's listing thread


@pytest.fixture
def provider(make_provider) -> SlurmNodeProvider:
    return make_provider()


def publish_head(provider: SlurmNodeProvider) -> None:
    provider.cluster.publish_head({"ip": "10.0.0.1", "gcs_port": 24001, "dashboard_port": 24002})


def fresh(provider: SlurmNodeProvider) -> None:
    """The next call lists again (as in the next autoscaler tick)."""
    provider.listing.invalidate()


# ------------------------------------------------------------------------------ launching


def test_workers_are_launched_on_their_types_backend_and_listed_with_their_tags(provider, fakes):
    publish_head(provider)
    provider.create_node({}, WORKER_TAGS, 2)

    slurm = fakes["slurm"]
    assert [r.spec.name for r in slurm.launched] == ["cpu", "cpu"]
    assert {r.head_address for r in slurm.launched} == {"10.0.0.1:24001"}
    assert fakes["login"].launched == []
    nodes = provider.non_terminated_nodes({TAG_RAY_USER_NODE_TYPE: "cpu"})
    assert sorted(nodes) == ["100", "101"]
    tags = provider.node_tags("100")
    assert tags[TAG_RAY_NODE_STATUS] == STATUS_UP_TO_DATE  # no updater will ever mark them
    state = provider.cluster.read_state()["nodes"]
    assert state["100"]["backend"] == "slurm" and state["100"]["tags"] == tags
    assert provider.non_terminated_nodes({TAG_RAY_USER_NODE_TYPE: "other"}) == []


def test_a_worker_needs_a_running_head(provider, fakes):
    with pytest.raises(RuntimeError, match="has no running head"):
        provider.create_node({}, WORKER_TAGS, 1)
    assert fakes["slurm"].launched == []


def test_the_login_head_is_launched_once(provider, fakes):
    provider.create_node({}, HEAD_TAGS, 1)
    assert [r.spec.name for r in fakes["login"].launched] == ["head"]
    assert provider.cluster.token_file.exists()  # every node of the cluster needs the token
    with pytest.raises(HeadStartedElsewhere, match="started meanwhile by another `ray up`"):
        provider.create_node({}, HEAD_TAGS, 1)
    assert len(fakes["login"].launched) == 1


def test_a_new_head_gets_a_new_token_and_ca_and_the_old_heads_workers_go(provider, fakes):
    """What leaked from one head opens nothing of the next; workers of the old head (a pending
    job would start with its address and old certificate) could never join the new one."""
    provider.create_node({}, HEAD_TAGS, 1)
    fakes["login"].run("900")
    publish_head(provider)
    provider.create_node({}, WORKER_TAGS, 1)  # job 100
    fresh(provider)
    provider.non_terminated_nodes({})  # the autoscaler saw its head run
    token, ca = provider.cluster.token_file.read_text(), provider.cluster.ca_file.read_bytes()
    fakes["login"].terminate(["900"])  # the head died
    TERMINATED_IN_ORDER.clear()
    provider.create_node({}, HEAD_TAGS, 1)  # `ray up` again
    assert TERMINATED_IN_ORDER == ["100"]
    assert provider.cluster.token_file.read_text() != token
    assert provider.cluster.ca_file.read_bytes() != ca


def test_workers_never_outlive_the_head_job(make_provider, fakes):
    def head_in_slurm(cfg: dict[str, Any]) -> None:
        cfg["provider"]["head_mode"] = "slurm"
        cfg["available_node_types"]["head"] = {
            "node_config": {"partition": "debug", "cpus": 1, "memory": "2G"},
            "max_workers": 0,
        }

    provider = make_provider(head_in_slurm)
    provider.create_node({}, HEAD_TAGS, 1)
    fakes["slurm"].run("100", time_left_s=3600)  # the head's job ends in an hour
    publish_head(provider)
    fresh(provider)
    provider.create_node({}, WORKER_TAGS, 1)
    assert fakes["slurm"].launched[-1].time_limit_minutes == 59  # a minute before the head


def test_a_refused_launch_backs_the_type_off(provider, fakes):
    publish_head(provider)
    fakes["slurm"].refuse = "sbatch: error: Invalid account"
    with pytest.raises(LaunchRefused, match="Invalid account"):
        provider.create_node({}, WORKER_TAGS, 3)
    assert "Invalid account" in provider.cluster.read_state()["failures"]["cpu"]["why"]

    fakes["slurm"].refuse = ""
    with pytest.raises(LaunchRefused, match="backed off"):  # no retry storm
        provider.create_node({}, WORKER_TAGS, 1)
    assert fakes["slurm"].launched == []


def test_a_launch_the_rate_limiter_starved_is_refused_without_backing_the_type_off(provider, fakes):
    publish_head(provider)
    fakes["slurm"].busy = "sbatch gave up after 600 s: slurmctld's RPC rate limiter made it wait"
    with pytest.raises(LaunchRefused, match="rate limiter"):
        provider.create_node({}, WORKER_TAGS, 1)
    assert "cpu" not in provider.cluster.read_state().get("failures", {})
    fakes["slurm"].busy = ""
    provider.create_node({}, WORKER_TAGS, 1)  # Ray asks again: launched at once
    assert len(fakes["slurm"].launched) == 1


def test_the_heads_autoscaler_starts_no_more_nodes_than_upscaling_speed_allows(
    make_provider, fakes, raw_config, monkeypatch
):
    """Ray's v2 autoscaler would ask for more every tick while submitted jobs are still starting:
    the provider keeps a type's nodes not yet in the Ray cluster (as the GCS says) at most
    ``upscaling_speed`` x those in it, at least 5; the rest is refused for now, the type not
    backed off; a GCS that does not answer leaves SLURM's word (running counts as joined)."""
    joined: list[set[str] | None] = [set()]
    monkeypatch.setattr(raynodes, "joined", lambda address: joined[0])
    monkeypatch.setattr(demandwake, "install", lambda poll, ms: None)
    uploaded = copy.deepcopy(raw_config)
    uploaded["upscaling_speed"] = 0.5
    cli = make_provider()
    cli.cluster.bootstrap_config.write_text(
        yaml.safe_dump(SlurmNodeProvider.bootstrap_config(uploaded))
    )
    monkeypatch.setenv(burst.AUTOSCALING_CONFIG_ENV, str(cli.cluster.autoscaling_config))
    head = make_provider()
    publish_head(head)
    slurm = fakes["slurm"]
    with pytest.raises(LaunchRefused, match="launched 5 of 8; .*upscaling_speed"):
        head.create_node({}, WORKER_TAGS, 8)
    assert len(slurm.launched) == 5
    with pytest.raises(LaunchRefused, match="launched 0 of 3"):  # five starting: none more
        head.create_node({}, WORKER_TAGS, 3)
    assert "cpu" not in head.cluster.read_state().get("failures", {})
    for job in ("100", "101", "102", "103"):
        slurm.run(job)
    fresh(head)
    joined[0] = {"100", "101", "102"}  # the fourth runs but has not joined yet: still starting
    with pytest.raises(LaunchRefused, match="launched 3 of 20"):
        head.create_node({}, WORKER_TAGS, 20)
    assert len(slurm.launched) == 8
    for job in map(str, range(104, 108)):
        slurm.run(job)
    fresh(head)
    joined[0] = set(map(str, range(100, 108))) - {"107"}  # 7 joined: 5 may start, max(5, 3.5)
    head.create_node({}, WORKER_TAGS, 4)  # 1 starting + 4
    assert len(slurm.launched) == 12
    fresh(head)
    joined[0] = None  # the GCS does not answer: the 8 running jobs count as joined, 4 pending
    with pytest.raises(LaunchRefused, match="launched 1 of 2"):
        head.create_node({}, WORKER_TAGS, 2)
    assert len(slurm.launched) == 13


def test_a_launch_that_fails_half_way_keeps_the_nodes_already_launched(provider, fakes):
    publish_head(provider)
    slurm = fakes["slurm"]
    launch = slurm.launch

    def second_fails(request: LaunchRequest) -> str:
        if slurm.launched:
            raise BackendError("sbatch: error: QOSMaxSubmitJobPerUserLimit")
        return launch(request)

    slurm.launch = second_fails  # type: ignore[method-assign]
    with pytest.raises(LaunchRefused):
        provider.create_node({}, WORKER_TAGS, 2)
    assert list(provider.cluster.read_state()["nodes"]) == ["100"]
    assert provider.non_terminated_nodes({}) == ["100"]


# ------------------------------------------------------------------------------- listing


def test_one_listing_per_backend_serves_a_whole_tick(provider, fakes):
    publish_head(provider)
    provider.create_node({}, WORKER_TAGS, 1)
    fresh(provider)
    before = fakes["slurm"].listings
    provider.non_terminated_nodes({})
    provider.is_running("100")
    provider.node_tags("100")
    provider.internal_ip("100")
    assert fakes["slurm"].listings == before + 1


def test_a_node_is_running_and_has_an_address_when_its_backend_says_so(provider, fakes):
    publish_head(provider)
    provider.create_node({}, WORKER_TAGS, 1)
    assert provider.non_terminated_nodes({}) == ["100"]  # Ray has seen it
    assert not provider.is_running("100")
    assert provider.internal_ip("100") == ""  # not placed yet
    fakes["slurm"].run("100", host="n3")
    fresh(provider)
    assert provider.is_running("100")
    assert provider.internal_ip("100") == "slurm-address-of-n3"
    del fakes["slurm"].nodes["100"]  # the job ended
    fresh(provider)
    assert provider.is_terminated("100")


def test_an_unreachable_backend_loses_no_node(provider, fakes):
    publish_head(provider)
    provider.create_node({}, WORKER_TAGS, 2)
    assert len(provider.non_terminated_nodes({})) == 2
    fakes["slurm"].down = True
    fresh(provider)
    assert sorted(provider.non_terminated_nodes({})) == ["100", "101"]  # the last known
    assert set(provider.cluster.read_state()["nodes"]) == {"100", "101"}  # nothing pruned


def test_a_node_launched_just_before_its_backend_became_unreachable_is_not_lost(provider, fakes):
    """After its own launch the provider answers from the state, which holds the new job."""
    publish_head(provider)
    provider.create_node({}, WORKER_TAGS, 1)
    assert provider.non_terminated_nodes({}) == ["100"]
    provider.create_node({}, WORKER_TAGS, 1)
    fakes["slurm"].down = True
    assert sorted(provider.non_terminated_nodes({})) == ["100", "101"]


def test_a_fresh_process_with_an_unreachable_backend_trusts_the_state(make_provider, fakes):
    first = make_provider()
    publish_head(first)
    first.create_node({}, WORKER_TAGS, 1)
    second = make_provider()  # e.g. `ray down` while slurmctld is away
    fakes["slurm"].down = True
    assert second.non_terminated_nodes({}) == ["100"]
    assert second.node_info("100").reason == "slurm unreachable"


def test_a_job_the_state_lost_is_adopted_and_a_gone_one_forgotten(provider, fakes):
    fakes["slurm"].nodes["555"] = Node("555", "slurm", "worker", "cpu", JobState.RUNNING, "n2")
    with provider.cluster.update() as state:
        state["nodes"]["777"] = {"backend": "slurm", "created": time.time() - 60,
                                 "tags": dict(WORKER_TAGS)}  # fmt: skip
    assert provider.non_terminated_nodes({}) == ["555"]
    assert provider.node_tags("555")[TAG_RAY_USER_NODE_TYPE] == "cpu"
    assert set(provider.cluster.read_state()["nodes"]) == {"555"}


def test_a_node_that_ends_before_ray_saw_it_is_listed_once(provider, fakes):
    """Else Ray's launch would wait for it as "launching" for its request timeout."""
    publish_head(provider)
    provider.create_node({}, WORKER_TAGS, 1)
    del fakes["slurm"].nodes["100"]  # died at start, before any listing
    fresh(provider)
    assert provider.non_terminated_nodes({}) == ["100"]
    assert provider.node_info("100").state is JobState.STOPPING
    fresh(provider)
    assert provider.non_terminated_nodes({}) == []


def test_a_worker_pending_past_its_timeout_is_cancelled(make_provider, fakes):
    provider = make_provider(lambda cfg: cfg["provider"].update(pending_timeout_s=60))
    publish_head(provider)
    provider.create_node({}, WORKER_TAGS, 1)
    with provider.cluster.update() as state:
        state["nodes"]["100"]["created"] -= 120
    fresh(provider)
    provider.non_terminated_nodes({})
    assert ["100"] in fakes["slurm"].terminated
    assert "waited" in provider.cluster.read_state()["failures"]["cpu"]["why"]


def test_a_worker_held_by_a_qos_limit_past_its_timeout_lets_the_cluster_burst(
    make_provider, fakes, raw_config, monkeypatch
):
    """A site's QOS limit (``QOSGrpCpuLimit``) keeps a job pending: shown, cancelled at its
    ``pending_timeout_s``, its type backed off, and the Kubernetes type no longer held back
    in the head's autoscaling config (SLURM first, pods while it cannot deliver)."""
    image = f"rayproject/ray:{config.kubetypes.head_versions().split()[0]}"

    def with_burst(cfg):
        cfg["provider"]["pending_timeout_s"] = 60
        cfg["available_node_types"]["cpu"]["max_workers"] = 2
        cfg["available_node_types"]["burst"] = {
            "node_config": {"backend": "kubernetes", "image": image, "cpus": 1, "memory": "1G"},
            "max_workers": 2, "resources": {},
        }  # fmt: skip

    monkeypatch.setattr(demandwake, "install", lambda poll, ms: None)
    cli = make_provider(with_burst)  # `ray up`: it uploads what the head's autoscaler reads
    uploaded = copy.deepcopy(raw_config)
    with_burst(uploaded)
    cli.cluster.bootstrap_config.write_text(
        yaml.safe_dump(SlurmNodeProvider.bootstrap_config(uploaded))
    )
    monkeypatch.setenv(burst.AUTOSCALING_CONFIG_ENV, str(cli.cluster.autoscaling_config))
    head = make_provider(with_burst)
    publish_head(head)

    def limits() -> dict[str, int]:
        held = yaml.safe_load(head.cluster.autoscaling_config.read_text())
        return {n: t["max_workers"] for n, t in held["available_node_types"].items()}

    head.create_node({}, WORKER_TAGS, 1)
    job = fakes["slurm"].nodes["100"]
    fakes["slurm"].nodes["100"] = dataclasses.replace(job, reason="QOSGrpCpuLimit")
    fresh(head)
    head.non_terminated_nodes({})
    assert limits()["burst"] == 0, "pods were allowed while SLURM could still grow"
    with head.cluster.update() as state:
        state["nodes"]["100"]["created"] -= 120
    fresh(head)
    head.non_terminated_nodes({})
    assert ["100"] in fakes["slurm"].terminated
    assert "(QOSGrpCpuLimit)" in head.cluster.read_state()["failures"]["cpu"]["why"]
    assert limits()["burst"] == 2 and limits()["cpu"] <= 1  # never below the nodes it had
    fresh(head)  # the autoscaler's next loop: the job is gone
    head.non_terminated_nodes({})
    assert (limits()["cpu"], limits()["burst"]) == (0, 2)


# --------------------------------------------------------------------------- terminating


def test_terminate_nodes_is_one_call_per_backend(provider, fakes):
    provider.create_node({}, HEAD_TAGS, 1)
    fakes["login"].run("900")
    publish_head(provider)
    provider.create_node({}, WORKER_TAGS, 2)
    provider.terminate_nodes(["100", "101", "900", "404"])  # 404: not a node, ignored
    assert fakes["slurm"].terminated == [["100", "101"]]
    assert fakes["login"].terminated == [["900"]]


def ray_down(*flags: str) -> click.Context:
    """The click context the provider sees inside `ray down <flags>`."""
    options = [click.Option([f"--{o}"], is_flag=True) for o in ("workers-only", "keep-min-workers")]
    return click.Command("down", params=options).make_context("down", list(flags))


WORKERS = {TAG_RAY_NODE_KIND: NODE_KIND_WORKER}


def test_ray_down_workers_only_stops_the_workers_it_found_not_those_started_since(provider, fakes):
    publish_head(provider)
    provider.create_node({}, WORKER_TAGS, 2)
    with ray_down("--workers-only"):
        assert sorted(provider.nodes_for_teardown(WORKERS)) == ["100", "101"]
        provider.terminate_nodes(["100"])
        provider.create_node({}, WORKER_TAGS, 1)  # the head's autoscaler: min_workers again
        fresh(provider)
        assert provider.nodes_for_teardown(WORKERS) == ["101"]  # Ray's teardown asks again
        provider.terminate_nodes(["101"])
        fresh(provider)
        assert provider.nodes_for_teardown(WORKERS) == []  # so it ends
    assert provider.non_terminated_nodes(WORKERS) == ["102"]


def test_ray_down_keep_min_workers_keeps_each_types_first_min_workers(make_provider, fakes):
    """Of the nodes Ray's teardown is handed, the head and the type's first ``min_workers`` (in
    node id order) stay; with ``--workers-only`` too, of the workers that ran when it began."""
    provider = make_provider(lambda cfg: cfg["available_node_types"]["cpu"].update(min_workers=1))
    publish_head(provider)
    provider.create_node({}, WORKER_TAGS, 2)
    with ray_down("--keep-min-workers"):
        assert provider.nodes_for_teardown(WORKERS) == ["101"]
    with ray_down("--workers-only", "--keep-min-workers"):
        assert provider.nodes_for_teardown(WORKERS) == ["101"]
        provider.terminate_nodes(["101"])
        provider.create_node({}, WORKER_TAGS, 1)  # 102, started since: not the teardown's
        fresh(provider)
        assert provider.nodes_for_teardown(WORKERS) == []


def test_a_whole_ray_down_stops_every_worker_even_one_launched_meanwhile(provider, fakes):
    publish_head(provider)
    provider.create_node({}, WORKER_TAGS, 1)
    with ray_down():
        assert provider.nodes_for_teardown(WORKERS) == ["100"]
        provider.create_node({}, WORKER_TAGS, 1)  # sbatch'ed just before the head stopped
        fresh(provider)
        assert sorted(provider.nodes_for_teardown(WORKERS)) == ["100", "101"]  # no orphan


def test_cleanup_forgets_the_head_and_asks_every_backend(provider, fakes):
    publish_head(provider)
    provider.cleanup_cluster_resources()
    assert provider.cluster.read_head() is None
    assert fakes["slurm"].cleaned and fakes["login"].cleaned


# ------------------------------------------------------------------------------ commands


def test_commands_reach_a_node_through_its_own_backend(provider, fakes):
    provider.create_node({}, HEAD_TAGS, 1)
    fakes["login"].run("900")
    publish_head(provider)
    provider.create_node({}, WORKER_TAGS, 1)
    name, node_id, ctx = provider.get_command_runner("p", "900", {}, "example", None, True)
    assert (name, node_id) == ("login", "900")
    assert provider.get_command_runner("p", "100", {}, "example", None, True)[0] == "slurm"
    # a node nobody knows (gone from the listing and the state): the head type's backend
    assert provider.get_command_runner("p", "31337", {}, "example", None, True)[0] == "login"
    _, _, worker_ctx = provider.get_command_runner("p", "100", {}, "example", None, True)
    TERMINATED_IN_ORDER.clear()
    worker_ctx.stop_ray()  # `ray stop` on a worker: that node only
    assert TERMINATED_IN_ORDER == ["100"]
    provider.create_node({}, WORKER_TAGS, 1)
    TERMINATED_IN_ORDER.clear()
    ctx.stop_ray()  # on the head (`ray down` sends it first): its workers stop before it
    assert TERMINATED_IN_ORDER[-1] == "900" and "101" in TERMINATED_IN_ORDER[:-1]


def test_workers_are_terminated_before_their_head(provider, fakes):
    """Ray's teardown may ask for all at once: no worker calls a head that is already gone."""
    provider.create_node({}, HEAD_TAGS, 1)
    fakes["login"].run("900")
    publish_head(provider)
    provider.create_node({}, WORKER_TAGS, 2)
    TERMINATED_IN_ORDER.clear()
    provider.terminate_nodes(["900", "100", "101"])
    assert TERMINATED_IN_ORDER == ["100", "101", "900"]


# ------------------------------------------------------------------------------ SLURM's load


def test_squeue_runs_at_most_once_per_squeue_interval_while_the_autoscaler_loops_faster(
    make_provider, fakes, monkeypatch
):
    """The autoscaler loops every second (autoscaler_interval_s); the listing (squeue) is
    reused for squeue_interval_s, and renewed at once after the provider's own launches and
    terminations, whose effect the autoscaler must see."""
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    provider = make_provider(lambda cfg: cfg["provider"].update(squeue_interval_s=3))
    publish_head(provider)
    assert (provider.settings.autoscaler_interval_s, provider.settings.squeue_interval_s) == (1, 3)
    for _ in range(3):  # three autoscaler loops, a second apart
        provider.non_terminated_nodes({})
        now[0] += 1
    assert fakes["slurm"].listings == 1
    provider.non_terminated_nodes({})  # 3 s after the first
    assert fakes["slurm"].listings == 2

    provider.create_node({}, WORKER_TAGS, 1)
    [new] = provider.non_terminated_nodes(WORKER_TAGS)  # seen at once, not in 3 s
    assert fakes["slurm"].listings == 3
    provider.terminate_nodes([new])
    before = fakes["slurm"].listings
    assert provider.non_terminated_nodes(WORKER_TAGS) == []
    assert fakes["slurm"].listings == before + 1


def test_the_heads_autoscaler_wakes_on_new_demand_with_the_clusters_setting(
    make_provider, monkeypatch
):
    """Only the provider in the head's autoscaler process changes its loop (``demandwake``)."""
    installs: list[int] = []
    monkeypatch.setattr(demandwake, "install", lambda poll, ms: installs.append(ms))
    cli_provider = make_provider()  # `ray up`, `ray down`
    assert installs == []
    monkeypatch.setenv(burst.AUTOSCALING_CONFIG_ENV, str(cli_provider.cluster.autoscaling_config))
    make_provider(lambda cfg: cfg["provider"].update(demand_poll_ms=250))
    make_provider()
    assert installs == [250, 100]


def test_only_the_heads_autoscaler_lists_in_a_thread_of_its_own(make_provider, monkeypatch):
    """There the loop never waits for squeue (``listing``); `ray up` lists in its calls."""
    cli_provider = make_provider()
    assert not any(t.name == "ray-slurm-listing" for t in threading.enumerate())
    cli_provider.non_terminated_nodes({})
    monkeypatch.setenv(burst.AUTOSCALING_CONFIG_ENV, str(cli_provider.cluster.autoscaling_config))
    make_provider()
    assert [t.name for t in threading.enumerate()].count("ray-slurm-listing") == 1


# ------------------------------------------------------------ what a listing reports


@pytest.fixture
def head_autoscaler(make_provider, raw_config, monkeypatch) -> SlurmNodeProvider:
    """A provider as the head's autoscaler makes it (it holds the autoscaling config)."""
    monkeypatch.setattr(demandwake, "install", lambda poll, ms: None)
    cli = make_provider()  # `ray up` uploads the config
    cli.cluster.bootstrap_config.write_text(
        yaml.safe_dump(SlurmNodeProvider.bootstrap_config(copy.deepcopy(raw_config)))
    )
    monkeypatch.setenv(burst.AUTOSCALING_CONFIG_ENV, str(cli.cluster.autoscaling_config))
    head = make_provider()
    publish_head(head)
    return head


def test_a_worker_reported_failed_at_start_backs_its_type_off(provider, fakes, caplog):
    """The backend reports how the job ended; the core logs it, records it for `ray-slurm
    status` and backs the type off: the next launch of the type is refused."""
    publish_head(provider)
    provider.create_node({}, WORKER_TAGS, 1)
    provider.non_terminated_nodes({})  # Ray has seen it (``watch.ended_unseen``)
    fakes["slurm"].end("100", "job 100 ended FAILED (exit code 3:0)", types_fault=True)
    fresh(provider)
    assert provider.non_terminated_nodes({}) == []
    assert "worker node of type cpu: job 100 ended FAILED (exit code 3:0)" in caplog.text
    assert provider.cluster.read_state()["failures"]["cpu"]["why"] == (
        "job 100 ended FAILED (exit code 3:0)")  # fmt: skip
    with pytest.raises(LaunchRefused, match="backed off"):
        provider.create_node({}, WORKER_TAGS, 1)
    assert fakes["slurm"].terminated == []  # nothing left to remove


def test_a_node_lost_under_its_ray_node_is_stopped_in_ray_by_the_heads_autoscaler_only(
    head_autoscaler, make_provider, fakes, monkeypatch, caplog
):
    """NODE_FAIL, preemption, a requeue: the Ray node may live on. Only the head's autoscaler
    asks the GCS to stop it; a requeued job that still exists is removed as a leftover, once
    per listing until it is gone; the type is not backed off."""
    stopped: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(raynodes, "stop_ray_nodes",
                        lambda address, ids: stopped.append((address, list(ids))))  # fmt: skip
    monkeypatch.setattr(raynodes, "joined", lambda address: None)
    head_autoscaler.create_node({}, WORKER_TAGS, 2)
    slurm = fakes["slurm"]
    slurm.run("100")
    slurm.run("101")
    fresh(head_autoscaler)
    head_autoscaler.non_terminated_nodes({})
    slurm.end("100", "worker job 100 (node type cpu) was requeued by SLURM after it ran",
              failed=False, lost=True, leftover=True)  # fmt: skip
    fresh(head_autoscaler)
    assert head_autoscaler.non_terminated_nodes({}) == ["101"]
    assert stopped == [("10.0.0.1:24001", ["100"])]
    # an end that is no failure is said in the backend's own sentence
    assert "worker job 100 (node type cpu) was requeued by SLURM after it ran" in caplog.text
    assert "node of type cpu: worker job" not in caplog.text
    assert slurm.terminated == [["100"]]
    assert "cpu" not in head_autoscaler.cluster.read_state().get("failures", {})
    fresh(head_autoscaler)
    head_autoscaler.non_terminated_nodes({})
    assert slurm.terminated == [["100"]] and len(stopped) == 1  # gone: told and removed once

    elsewhere = make_provider()  # `ray up` or `ray down` on the login node: no GCS calls
    slurm.end("101", "job 101 ended NODE_FAIL", lost=True)
    fresh(elsewhere)
    elsewhere.non_terminated_nodes({})
    assert len(stopped) == 1


def test_a_pod_that_ended_is_removed_by_the_core_not_by_its_listing(make_provider, fakes):
    """The Kubernetes backend reports an ended pod as ended and left over; the core deletes
    it through the backend's one verb."""
    image = f"rayproject/ray:{config.kubetypes.head_versions().split()[0]}"

    def with_burst(cfg):
        cfg["available_node_types"]["burst"] = {
            "node_config": {"backend": "kubernetes", "image": image, "cpus": 1, "memory": "1G"},
            "max_workers": 2, "resources": {},
        }  # fmt: skip

    provider = make_provider(with_burst)
    publish_head(provider)
    pods = fakes["kubernetes"]
    pods.nodes["pod-a"] = Node("pod-a", "kubernetes", "worker", "burst", JobState.RUNNING)
    pods.end("pod-a", "pod pod-a ended: exit code 1 (Error): no such image",
             types_fault=True, leftover=True)  # fmt: skip
    fresh(provider)
    assert provider.non_terminated_nodes({}) == []
    assert pods.terminated == [["pod-a"]]
    assert "pod pod-a ended" in provider.cluster.read_state()["failures"]["burst"]["why"]


# ------------------------------------------------------------------------------ roll-over


def test_the_heads_autoscaler_rolls_a_busy_worker_over_before_its_time_limit(
    make_provider, fakes, raw_config, monkeypatch
):
    """A busy worker within its rollover_lead_s of its end gets one replacement of its type,
    with Ray's tags (Ray adopts it); once the replacement has joined, the old job is told to
    drain (one signal), and ``ray-slurm status`` reads it all from the state."""
    joined: set[str] = set()
    monkeypatch.setattr(raynodes, "joined", lambda address: joined)
    monkeypatch.setattr(raynodes, "activity", lambda address: {"100": "busy"})
    monkeypatch.setattr(demandwake, "install", lambda poll, ms: None)
    raw_config["available_node_types"]["cpu"]["node_config"]["rollover_lead_s"] = 300
    cli = make_provider(lambda cfg: cfg["available_node_types"]["cpu"]["node_config"].update(
        rollover_lead_s=300))  # fmt: skip
    cli.cluster.bootstrap_config.write_text(
        yaml.safe_dump(SlurmNodeProvider.bootstrap_config(raw_config))
    )
    monkeypatch.setenv(burst.AUTOSCALING_CONFIG_ENV, str(cli.cluster.autoscaling_config))
    head = make_provider(lambda cfg: cfg["available_node_types"]["cpu"]["node_config"].update(
        rollover_lead_s=300))  # fmt: skip
    publish_head(head)
    head.create_node({}, WORKER_TAGS, 1)
    slurm = fakes["slurm"]
    slurm.run("100", time_left_s=900)
    fresh(head)
    assert head.non_terminated_nodes({}) == ["100"]  # not in its lead yet
    slurm.run("100", time_left_s=299)
    fresh(head)
    head.non_terminated_nodes({})
    assert len(slurm.launched) == 2  # the replacement; the next listing shows it
    assert sorted(head.non_terminated_nodes({})) == ["100", "101"]
    assert head.node_tags("101")[TAG_RAY_USER_NODE_TYPE] == "cpu"
    assert head.node_tags("101")[TAG_RAY_NODE_KIND] == NODE_KIND_WORKER
    fresh(head)
    head.non_terminated_nodes({})
    assert len(slurm.launched) == 2 and slurm.drained == []  # one replacement; it pends
    record = head.cluster.read_state()["rollovers"]["100"]
    assert record["replacement"] == "101" and record["draining_from"] is None
    slurm.run("101", time_left_s=3600)
    joined.add("101")
    fresh(head)
    head.non_terminated_nodes({})
    assert slurm.drained == [["100"]]
    assert head.cluster.read_state()["rollovers"]["100"]["draining_from"] is not None
    fresh(head)
    head.non_terminated_nodes({})
    assert slurm.drained == [["100"]]  # told once
