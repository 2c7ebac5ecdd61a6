"""Per-cluster state on the shared filesystem.

The ``ray up`` process on the login node and the autoscaler inside the head both read and write it,
so every change happens under an exclusive ``fcntl`` lock and is written atomically (temp file,
fsync, rename): a reader never sees half a file, an interrupted writer leaves the old one intact.
The state is a cache of what the provider knows (tags); SLURM's job names stay the source of
truth for which jobs exist, so losing this directory loses no job.

Layout of ``<state_dir>/<cluster>/`` (mode 0700)::

    state.json   nodes and their tags         state.lock   its lock (head.lock: head start)
    token        Ray auth token (0600)        head.json    head address and ports, from the head
    tls/ca.pem   the TLS CA (0600)            tls/host-<host>/  a client host's certificate
    ray_bootstrap_config.yaml                 the cluster config `ray up` uploads (Ray's ``~/``)
    autoscaling.yaml                          what the autoscaler reads: the above + burst limits
    jobs/        rendered node scripts        logs/        job output
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray_slurm.host import tls
from ray_slurm.host.private import ensure_private_dir

STATE_VERSION = 1

logger = logging.getLogger(__name__)


class StateLockError(RuntimeError):
    """The cluster's lock file cannot be locked: the filesystem refuses ``flock``."""


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Write a file atomically, readable only by its owner from the first byte on."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@dataclass(frozen=True)
class Head:
    """The running head as its job published it (``head.json``): where clients reach it."""

    ip: str
    gcs_port: int
    dashboard_port: int = 0
    client_port: int = 0
    node_id: str = ""
    temp_dir: str = ""
    autoscaler_log: str = ""
    host: str = ""
    started: float = 0.0
    ports_held: bool = False  # Ray listens on every published port as this user (headlife)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Head:
        """Raises KeyError naming the missing field when the record has no address."""
        required = {key: record[key] for key in ("ip", "gcs_port")}
        known = ("dashboard_port", "client_port", "node_id", "temp_dir", "autoscaler_log", "host",
                 "started", "ports_held")  # fmt: skip
        optional = {k: record[k] for k in known if k in record}
        return cls(**required, **optional)

    @property
    def address(self) -> str:
        """The GCS address: what workers join and drivers connect to."""
        return f"{self.ip}:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"{self.ip}:{self.dashboard_port}"

    @property
    def session_dir(self) -> str:
        return os.path.join(self.temp_dir, "session_latest") if self.temp_dir else ""


class ClusterDir:
    """The files of one cluster; creating it makes every directory private."""

    def __init__(self, state_dir: str | os.PathLike[str], cluster_name: str) -> None:
        self.root = Path(os.path.expanduser(os.fspath(state_dir))) / cluster_name
        self.state_file = self.root / "state.json"
        self.lock_file = self.root / "state.lock"
        self.token_file = self.root / "token"
        self.tls_dir = self.root / "tls"
        self.ca_file = self.tls_dir / tls.CA_FILE
        self.head_file = self.root / "head.json"
        self.head_failed_file = self.root / "head.failed"
        self.bootstrap_config = self.root / "ray_bootstrap_config.yaml"
        self.autoscaling_config = self.root / "autoscaling.yaml"
        self.jobs_dir = self.root / "jobs"
        self.logs_dir = self.root / "logs"
        self._checked = False

    @classmethod
    def at(cls, root: str | os.PathLike[str]) -> ClusterDir:
        """The cluster directory at a known path (inside jobs, which get the path rendered)."""
        path = Path(root)
        return cls(path.parent, path.name)

    def create(self) -> ClusterDir:
        """Make (or check) the cluster's directories: the user's own, 0700, whatever the umask.

        A directory another account made or can write to is refused (``private``), naming it.
        Checked once per process; files inside are written 0600 by ``write_private``.
        """
        if not self._checked:
            ensure_private_dir(self.root, parents=True)
            for d in (self.jobs_dir, self.logs_dir):
                ensure_private_dir(d)
            self._checked = True
        return self

    def new_secrets(self) -> None:
        """A new token and a new TLS CA, at each head launch: a token or key that leaked from
        an earlier head opens nothing later. Certificates issued by the old CA go with it."""
        with self.locked():
            write_private(self.token_file, secrets.token_hex(32) + "\n")
            shutil.rmtree(self.tls_dir, ignore_errors=True)
            ensure_private_dir(self.tls_dir)
            tls.new_ca(self.ca_file, self.root.name)

    def client_tls(self) -> dict[str, str]:
        """Ray's TLS variables for a client on this host (a driver, `ray status`, a command of
        the runners): a certificate of the cluster's current CA for the host's addresses,
        issued once per head and host into the cluster's private directory."""
        ca_pem = tls.read_ca(self.ca_file)
        out = self.tls_dir / f"host-{socket.gethostname()}"
        if not tls.issued_by(out, ca_pem):
            ensure_private_dir(out)
            return tls.issue(ca_pem, out, tls.host_addresses())
        return tls.ray_env(out)

    def ensure_token(self) -> str:
        """The cluster's Ray auth token; created once, mode 0600, never printed."""
        with self.locked():
            if not self.token_file.exists():
                write_private(self.token_file, secrets.token_hex(32) + "\n")
        return self.token_file.read_text().strip()

    @contextlib.contextmanager
    def locked(self, name: str = "state") -> Iterator[None]:
        """One of the cluster's locks (``flock``), held by one process of any node at a time:
        ``state`` for the state file, ``head`` while a head is started.

        A filesystem that refuses locks (Lustre mounted ``noflock``, some NFS setups) raises
        StateLockError naming the file; the descriptor is closed whatever happens, so the
        long-lived autoscaler leaks none.
        """
        self.create()
        path = self.root / f"{name}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            os.close(fd)
            raise StateLockError(
                f"cannot lock {path}: {exc.strerror or exc}. The filesystem of "
                "state_dir must support flock across nodes (NFSv4, Lustre mounted with 'flock', "
                "GPFS, BeeGFS with global file locks): set provider.state_dir to such a "
                "directory (see docs/faults.md)"
            ) from exc
        try:
            yield
        finally:
            os.close(fd)  # closing the only descriptor releases the lock

    def read_state(self) -> dict[str, Any]:
        """The state, or a fresh one if there is none or it cannot be used.

        A truncated, corrupt or other-version file is moved aside (``state.json.bad-<time>``)
        with a warning, never an error: the state is a cache, the jobs are found from SLURM by
        their names, and a broken cache must never stop ``ray down``.
        """
        fresh: dict[str, Any] = {"version": STATE_VERSION, "nodes": {}}
        try:
            text = self.state_file.read_text()
        except FileNotFoundError:
            return fresh
        data: Any
        try:
            data = json.loads(text)
            problem = "" if isinstance(data, dict) else "not a JSON object"
        except json.JSONDecodeError as exc:
            data, problem = None, f"not valid JSON ({exc})"
        if not problem and data.get("version") != STATE_VERSION:
            problem = f"version {data.get('version')!r}, this provider reads {STATE_VERSION}"
        if not problem and not isinstance(data.get("nodes"), dict):
            problem = "it has no 'nodes' object"
        if not problem:
            state: dict[str, Any] = data
            return state
        aside = self.state_file.with_name(f"state.json.bad-{time.strftime('%Y%m%d-%H%M%S')}")
        with contextlib.suppress(FileNotFoundError):  # another process moved it first
            os.replace(self.state_file, aside)
            logger.warning("the state file %s was unusable (%s): moved to %s; the cluster's "
                           "jobs are found from SLURM by name", self.state_file, problem,
                           aside.name)  # fmt: skip
        return fresh

    @contextlib.contextmanager
    def update(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write the state under the lock; nothing is written if the body raises."""
        with self.locked():
            data = self.read_state()
            yield data
            data["updated"] = time.time()
            write_private(self.state_file, json.dumps(data, indent=1, sort_keys=True) + "\n")

    def read_head(self) -> dict[str, Any] | None:
        """The head's address record, published by the head's own script once it knows its ports."""
        try:
            record = json.loads(self.head_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return record if isinstance(record, dict) else None

    def head(self) -> Head | None:
        """The head's record, typed (KeyError if it lacks an address field)."""
        record = self.read_head()
        return Head.from_record(record) if record is not None else None

    def publish_head(self, record: dict[str, Any]) -> None:
        self.create()
        write_private(self.head_file, json.dumps(record, sort_keys=True) + "\n")

    def unpublish_head(self, temp_dir: str) -> bool:
        """The head whose Ray temp dir was ``temp_dir`` (a fresh mktemp directory per head: the
        login head's node id is the same for every head) has ended: its record goes, not a newer
        head's. Returns whether no other head's record is there."""
        with self.locked():
            record = self.read_head()
            if record is not None and record.get("temp_dir") != temp_dir:
                return False
            with contextlib.suppress(FileNotFoundError):
                self.head_file.unlink()
            return True

    def mark_head_holding(self, temp_dir: str) -> None:
        """The head (``temp_dir``) holds its published ports: clients may be sent there."""
        with self.locked():
            record = self.read_head()
            if record is not None and record.get("temp_dir") == temp_dir:
                write_private(self.head_file, json.dumps({**record, "ports_held": True},
                                                         sort_keys=True) + "\n")  # fmt: skip

    def fail_head(self, temp_dir: str, why: str) -> None:
        """The head (``temp_dir``) cannot serve: its record goes, and why is kept for `ray up`."""
        if self.unpublish_head(temp_dir):
            write_private(self.head_failed_file, why + "\n")

    def head_failure(self) -> str | None:
        """Why the last head failed to start, if it did (``fail_head``)."""
        try:
            return self.head_failed_file.read_text().strip()
        except FileNotFoundError:
            return None

    def clear_head(self) -> None:
        """Forget the old head's address and config: a new head must not start from stale ones."""
        for path in (self.head_file, self.head_failed_file, self.bootstrap_config,
                     self.autoscaling_config):  # fmt: skip
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
