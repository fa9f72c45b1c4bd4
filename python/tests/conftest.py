"""Fixtures: real `tidepool master` and `tidepool node` processes on 127.0.0.1 (ports 0), and
`MooncakeDistributedStore` objects set up against them."""

import base64
import json
import os
import queue
import shutil
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

# The module's warnings (why a call returned its code) go to stderr, which pytest shows with
# a failing test; set before the import, which reads it.
os.environ.setdefault("TIDEPOOL_PY_LOG", "warn")

import tidepool  # noqa: E402
from mooncake.store import MooncakeDistributedStore  # noqa: E402

READY_TIMEOUT_S = 30
MiB = 1 << 20


class Proc:
    """A child process whose first `READY k=v ...` stdout line is parsed into `ready`."""

    def __init__(self, args, log_path):
        self.log = open(log_path, "wb")
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log, text=True)
        lines: "queue.Queue[str | None]" = queue.Queue()

        def pump():
            for line in self.p.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        self.ready = {}
        while True:
            try:
                line = lines.get(timeout=READY_TIMEOUT_S)
            except queue.Empty:
                self.stop()
                raise RuntimeError(f"no READY line from {args} (log {log_path})")
            if line is None:
                self.stop()
                raise RuntimeError(f"{args} exited early (log {log_path}): {open(log_path).read()[-2000:]}")
            if line.startswith("READY"):
                for item in line.split()[1:]:
                    k, _, v = item.partition("=")
                    self.ready[k] = v
                break

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Etcd:
    """A single-member `etcd` on 127.0.0.1 with a temporary data dir; `get` reads a key through
    etcd's v3 JSON gateway."""

    def __init__(self, tmp_path):
        binary = os.environ.get("TIDEPOOL_ETCD_BIN") or shutil.which("etcd")
        if not binary:
            pytest.fail("etcd not found: install it with `apt-get install -y etcd-server` (scripts/test.sh does)")
        self.addr = f"127.0.0.1:{free_port()}"
        peer = f"http://127.0.0.1:{free_port()}"
        self.log = open(tmp_path / "etcd.log", "wb")
        self.p = subprocess.Popen(
            [
                binary,
                "--name=tidepool-test",
                f"--data-dir={tmp_path / 'etcd-data'}",
                f"--listen-client-urls=http://{self.addr}",
                f"--advertise-client-urls=http://{self.addr}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=tidepool-test={peer}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                self.get("tidepool-test/probe")
                break
            except OSError:
                if time.monotonic() > deadline or self.p.poll() is not None:
                    self.stop()
                    pytest.fail(f"etcd did not start on {self.addr} (log {tmp_path / 'etcd.log'})")
                time.sleep(0.05)

    def get(self, key):
        """`key`'s value as str, or None when absent."""
        body = json.dumps({"key": base64.b64encode(key.encode()).decode()}).encode()
        req = urllib.request.Request(f"http://{self.addr}/v3/kv/range", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            kvs = json.loads(r.read()).get("kvs") or []
        return base64.b64decode(kvs[0].get("value", "")).decode() if kvs else None

    def stop(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        self.log.close()


@pytest.fixture
def etcd_server(tmp_path):
    """A real etcd server (Debian's etcd-server); the test fails, not skips, without it."""
    e = Etcd(tmp_path)
    yield e
    e.stop()


@pytest.fixture(scope="session")
def tidepool_bin():
    return tidepool.binary_path()


def start_master(tidepool_bin, tmp_path, *extra):
    return Proc(
        [
            tidepool_bin,
            "master",
            "--rpc_address=127.0.0.1",
            "--rpc_port=0",
            "--metrics_host=127.0.0.1",
            "--metrics_port=0",
            "--enable_metric_reporting=false",
            *extra,
        ],
        tmp_path / f"master-{os.getpid()}-{id(extra)}.log",
    )


def start_node(tidepool_bin, tmp_path, master_addr, size="64MB", *extra):
    """A `tidepool node`; `ready` holds `segment`, `data` and (with `--port=0`) `thin`, the
    address thin clients (`setup_dummy`) connect to."""
    n = len(list(tmp_path.glob("node-*.log")))
    return Proc(
        [
            tidepool_bin,
            "node",
            "--host=127.0.0.1",
            f"--master_server_address={master_addr}",
            f"--global_segment_size={size}",
            "--metadata_server=P2PHANDSHAKE",
            *extra,
        ],
        tmp_path / f"node-{n}.log",
    )


@pytest.fixture
def master_proc(tidepool_bin, tmp_path):
    """The master process; `ready` holds its `rpc`, `metrics` (admin HTTP) addresses."""
    m = start_master(tidepool_bin, tmp_path)
    yield m
    m.stop()


@pytest.fixture
def master(master_proc):
    """The master's RPC address."""
    return master_proc.ready["rpc"]


def segments(master_proc):
    """Mounted segment names, from the master's admin `/get_all_segments`."""
    import urllib.request

    url = f"http://{master_proc.ready['metrics']}/get_all_segments"
    with urllib.request.urlopen(url, timeout=5) as r:
        return [line for line in r.read().decode().split("\n") if line]


@pytest.fixture
def node(tidepool_bin, tmp_path, master):
    n = start_node(tidepool_bin, tmp_path, master)
    yield n.ready["segment"]
    n.stop()


def make_store(master_addr, segment=64 * MiB, local=16 * MiB, hostname="127.0.0.1"):
    s = MooncakeDistributedStore()
    rc = s.setup(hostname, "P2PHANDSHAKE", segment, local, "tcp", "", master_addr)
    assert rc == 0, f"setup failed: {rc}"
    return s


@pytest.fixture
def store(master):
    """A store that contributes a 64 MiB segment, with a 16 MiB local buffer."""
    s = make_store(master)
    yield s
    s.close()


@pytest.fixture
def client(master, store):
    """A second, pure client (no segment) of the same cluster as `store`."""
    s = make_store(master, segment=0)
    yield s
    s.close()
