"""Fixtures for the dashboard browser test: a real tidepool cluster on loopback and a headless
Debian chromium driven by selenium + chromedriver.

The cluster is the `tidepool` binary (TIDEPOOL_BIN, else the cargo target dir), started with
port 0 everywhere; each process prints a READY line with the addresses it bound. Every process
is killed at teardown, and each gets a log file under the output dir.
"""

import os
import pathlib
import queue
import shutil
import subprocess
import tempfile
import threading

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")
READY_TIMEOUT_S = 30


def tidepool_bin() -> str:
    explicit = os.environ.get("TIDEPOOL_BIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR") or str(REPO / "target")
    for profile in ("debug", "release"):
        p = pathlib.Path(target) / profile / "tidepool"
        if p.exists():
            return str(p)
    raise RuntimeError("tidepool binary not found: build it (cargo build -p tidepool) or set TIDEPOOL_BIN")


@pytest.fixture(scope="session")
def out_dir() -> pathlib.Path:
    d = pathlib.Path(os.environ.get("BROWSER_TEST_OUT", REPO / "tests" / "browser" / "out"))
    d.mkdir(parents=True, exist_ok=True)
    return d


class Proc:
    """A tidepool child process and the fields of its READY line."""

    def __init__(self, args, log_path):
        self.log = open(log_path, "w")
        env = dict(os.environ, TIDEPOOL_LOG=os.environ.get("TIDEPOOL_LOG", "warn"))
        self.p = subprocess.Popen(
            [tidepool_bin(), *args],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=env,
        )
        lines: "queue.Queue[str]" = queue.Queue()

        def pump():
            for line in self.p.stdout:
                if line.startswith("READY"):
                    lines.put(line.strip())

        threading.Thread(target=pump, daemon=True).start()
        try:
            self.ready = lines.get(timeout=READY_TIMEOUT_S)
        except queue.Empty:
            self.stop()
            raise RuntimeError(f"tidepool {args} did not print READY; see {log_path}")
        self.fields = dict(kv.split("=", 1) for kv in self.ready.split()[1:])

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
def cluster(out_dir):
    """A master and two storage nodes; yields {"rpc", "admin", "segments"}."""
    procs = []
    try:
        m = Proc(
            [
                "master",
                "--rpc_address=127.0.0.1",
                "--rpc_port=0",
                "--metrics_host=127.0.0.1",
                "--metrics_port=0",
                "--enable_metric_reporting=false",
            ],
            out_dir / "master.log",
        )
        procs.append(m)
        rpc, admin = m.fields["rpc"], m.fields["metrics"]
        segments = []
        for i, size in enumerate(["128MB", "64MB"]):
            n = Proc(
                [
                    "node",
                    "--host=127.0.0.1",
                    f"--master_server_address={rpc}",
                    # No metadata server in this cluster: peers exchange addresses directly.
                    "--metadata_server=P2PHANDSHAKE",
                    f"--global_segment_size={size}",
                ],
                out_dir / f"node{i}.log",
            )
            procs.append(n)
            segments.append(n.fields["segment"])
        yield {"rpc": rpc, "admin": admin, "segments": segments}
    finally:
        for p in reversed(procs):
            p.stop()


@pytest.fixture(scope="session")
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail(f"need {CHROMIUM} and {CHROMEDRIVER}: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="tidepool-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1500",
        f"--user-data-dir={profile}",
    ):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
