"""The provider's one view of its nodes: what the backends list, reconciled with the state file.

A listing costs SLURM a call (one ``squeue`` for all the cluster's jobs: ~50 ms with 6,000 jobs
in the queue on a small login node) and the provider a read of its state file, so it is reused
for ``squeue_interval_s`` and renewed at once after the provider's own launches and terminations
(``invalidate``), whose effect the autoscaler must see in its next loop.

In the head's autoscaler the listing is also renewed by a thread of its own (``start``) before
it falls due, so the autoscaler's loop answers from memory and never waits for ``squeue``: its
loop stays as short with 6,000 jobs in the queue as with none, and SLURM gets no more calls than
before (one per interval). A listing the loop finds invalidated is still made at once, in the
loop, as before; and should the thread fall behind (a slow slurmctld), the loop lists itself
once the listing is two intervals old.

A listing only looks: what it taught (the nodes, what ended, what is left over) waits as
``news`` until the provider takes it, in its own call, and hands it to the core (``core``), so
that what a listing teaches reaches the autoscaler in its own loop, in the order it had without
the thread: the loop that learns a type failed still tries it and sees its launch refused.

One lock guards the view, and only the backends' listing itself runs outside it: a loop waits
for a thread's listing only while its result is reconciled (a few ms), never during ``squeue``.
A listing that began before a launch or a termination does not make the view fresh (the view's
``generation`` moved on meanwhile): the next call lists again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from ray_slurm.backends.base import Backend
from ray_slurm.backends.errors import BackendError
from ray_slurm.backends.nodes import Ended, Node
from ray_slurm.cluster.core import News
from ray_slurm.cluster.reconcile import Tags, nodes_in_state, reconcile
from ray_slurm.cluster.watch import NodeWatch
from ray_slurm.host.state import ClusterDir

logger = logging.getLogger(__name__)

RETRY_S = 1.0  # the background listing failed unexpectedly: it tries again after this
# One listing thread per cluster and process: Ray's v1 autoscaler makes a new provider when the
# provider section changes, and the old one's thread must not go on calling squeue.
_threads: dict[str, Listing] = {}
_threads_lock = threading.Lock()


class Listing:
    """The nodes, their tags and creation times, as of the last listing."""

    def __init__(
        self,
        backends: Mapping[str, Backend],
        cluster: ClusterDir,
        cluster_name: str,
        watch: NodeWatch,
        interval_s: Callable[[], float],
    ) -> None:
        self.backends = backends
        self.cluster = cluster
        self.cluster_name = cluster_name
        self.watch = watch
        self.interval_s = interval_s
        self.lock = threading.RLock()  # the view below, and what the provider changes with it
        self._listing = threading.Lock()  # one listing at a time
        self.nodes: dict[str, Node] = {}
        self.tags: Tags = {}
        self.created: dict[str, float] = {}
        self.listed_at = float("-inf")
        self.generation = 0
        self.listings = 0  # listings made, in the loop or in the thread
        self.listing_s = 0.0  # time spent listing, in the loop or in the thread
        self._news: News | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # --------------------------------------------------------------- the view

    def current(self, force: bool = False) -> dict[str, Node]:
        """The nodes: from the last listing while it is fresh, else (or if forced) listed now.

        Never call it holding ``lock``: a listing under way needs it to publish.
        """
        if force or not self._fresh():
            with self._listing:
                if force or not self._fresh():  # else listed by the thread meanwhile
                    self._list()
        return self.nodes

    def news(self) -> News | None:
        """What the listings since the last call taught, once (None: nothing new)."""
        with self.lock:
            news, self._news = self._news, None
            return news

    def invalidate(self) -> None:
        """The provider changed what exists: the next call lists again."""
        with self.lock:
            self.generation += 1
            self.listed_at = float("-inf")

    def set_tags(self, node_id: str, tags: dict[str, str]) -> None:
        """Tags Ray set, written to the state under ``lock`` (where listings reconcile too)."""
        with self.lock:
            self.tags[node_id] = dict(tags)

    def _age(self) -> float:
        return time.monotonic() - self.listed_at

    def _fresh(self) -> bool:
        return self._age() < self.interval_s() * (2 if self._thread is not None else 1)

    def _list(self) -> None:
        """List every backend (outside ``lock``), then reconcile and publish (under it)."""
        t0 = time.perf_counter()
        with self.lock:
            generation = self.generation
        listed_after = time.time()
        nodes: dict[str, Node] = {}
        ended: list[Ended] = []
        leftovers: dict[str, list[str]] = {}
        complete = True
        for backend in self.backends.values():
            try:
                seen = backend.list_nodes()
            except BackendError as exc:
                # SLURM (or the API) is unreachable: a node we cannot see is not a node that
                # is gone.
                logger.warning("cannot list %s nodes, keeping the last known: %s",
                               backend.name, exc)  # fmt: skip
                listed = self._last_known(backend)
                complete = False
            else:
                listed, ended = seen.nodes, ended + seen.ended
                if seen.leftovers:
                    leftovers[backend.name] = seen.leftovers
            nodes.update({n.node_id: n for n in listed})
        with self.lock:
            if complete:
                nodes.update(self.watch.ended_unseen(nodes))
            self.tags, self.created = reconcile(self.cluster, self.cluster_name, nodes,
                                                listed_after, prune=complete)  # fmt: skip
            self.nodes = nodes
            if self.generation == generation:
                self.listed_at = time.monotonic()
            # Ends are told once: news not yet taken keeps its ends.
            earlier = self._news.ended if self._news is not None else []
            self._news = News(nodes, self.created, complete, earlier + ended, leftovers,
                              {i: dict(t) for i, t in self.tags.items()})  # fmt: skip
            self.listings += 1
            self.listing_s += time.perf_counter() - t0

    def _last_known(self, backend: Backend) -> list[Node]:
        """The last listing of a backend while it is valid; else (in a fresh process, or after
        the provider's own launches) what the state says exists, the launched nodes included."""
        if self.listed_at > float("-inf"):
            return [n for n in self.nodes.values() if n.backend == backend.name]
        return nodes_in_state(self.cluster, backend.name)

    # ------------------------------------------------------ the background thread

    def start(self) -> None:
        """Renew the listing from a thread before it falls due (the head's autoscaler); the
        thread of an earlier provider of the same cluster in this process stops."""
        with _threads_lock:
            earlier = _threads.get(str(self.cluster.root))
            _threads[str(self.cluster.root)] = self
        if earlier is not None and earlier is not self:
            earlier.stop()
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._keep, name="ray-slurm-listing",
                                            daemon=True)  # fmt: skip
            self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join()

    def _keep(self) -> None:
        delay = 0.0
        while not self._stop.wait(delay):
            try:
                delay = self._renew()
            except Exception:  # the loop lists by itself meanwhile; this thread goes on
                logger.exception("the background listing failed; trying again in %.0f s", RETRY_S)
                delay = RETRY_S

    def _renew(self) -> float:
        """List if the listing is due; the seconds until it is due again.

        After a listing of its own the thread waits a whole interval, even if the provider
        invalidated the view meanwhile (the loop lists then): a burst of launches cannot make it
        list back to back.
        """
        if self._age() < self.interval_s():
            return self.interval_s() - self._age()
        with self._listing:
            if self._age() >= self.interval_s():
                self._list()
        return self.interval_s()
