"""Fixtures: real `tidepool master` and `tidepool node` processes on 127.0.0.1 (ports 0), and
`MooncakeDistributedStore` objects set up against them."""

import os
import queue
import subprocess
import threading

import pytest

import tidepool
from mooncake.store import MooncakeDistributedStore

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
