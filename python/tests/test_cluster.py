"""Threads, close races and replicas across processes."""

import ctypes
import os
import threading
import time

from conftest import MiB, make_store, segments, start_node
from mooncake.store import MooncakeDistributedStore, ReplicateConfig


def test_many_threads_on_one_store(store, client):
    errors = []

    def work(t):
        try:
            for i in range(40):
                key = f"t{t}-{i}"
                value = f"{t}:{i}".encode() * 50
                assert store.put(key, value) == 0
                assert client.is_exist(key) == 1
                assert client.get(key) == value
                buf = ctypes.create_string_buffer(len(value) + 10)
                assert store.get_into(key, ctypes.addressof(buf), len(value) + 10) == len(value)
                assert buf.raw[: len(value)] == value
                assert client.batch_is_exist([key, "nope"]) == [1, 0]
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors


def test_calls_racing_close_never_crash(master):
    s = make_store(master)
    assert s.put("race", b"v" * 1000) == 0
    stop = threading.Event()
    seen = set()
    errors = []

    def hammer():
        buf = ctypes.create_string_buffer(2000)
        try:
            while not stop.is_set():
                seen.add(s.is_exist("race"))
                s.get("race")
                seen.add(s.get_into("race", ctypes.addressof(buf), 2000))
                s.put("race2", b"x")
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for th in threads:
        th.start()
    for _ in range(3):
        assert s.close() == 0
        assert s.setup("127.0.0.1", "P2PHANDSHAKE", 16 * MiB, 16 * MiB, "tcp", "", master) == 0
    s.close()
    time.sleep(0.1)  # let the threads run against the closed store
    stop.set()
    for th in threads:
        th.join()
    assert not errors, errors
    assert all(isinstance(v, int) for v in seen)
    assert -600 in seen  # some calls saw the closed store


def test_replicas_survive_the_writers_close(tidepool_bin, tmp_path, master):
    node = start_node(tidepool_bin, tmp_path, master)
    try:
        writer = make_store(master)
        reader = make_store(master, segment=0)
        cfg = ReplicateConfig()
        cfg.replica_num = 2
        values = {f"rep{i}": bytes([i]) * (64 << 10) for i in range(8)}
        for k, v in values.items():
            assert writer.put(k, v, config=cfg) == 0
        for k in values:
            descs = reader.get_replica_desc(k)
            endpoints = {d.get_memory_descriptor().buffer_descriptor.transport_endpoint for d in descs}
            assert len(descs) == 2 and len(endpoints) == 2
        single = ReplicateConfig()
        assert writer.put("lonely", b"x", config=single) == 0
        writer_segment = writer.get_hostname()
        assert writer.close() == 0
        for k, v in values.items():
            assert reader.is_exist(k) == 1
            assert reader.get(k) == v
            descs = reader.get_replica_desc(k)
            assert len(descs) == 1
            assert descs[0].get_memory_descriptor().buffer_descriptor.transport_endpoint != writer_segment
        # An object whose one replica sat in the writer's segment went with it, unless it was
        # placed on the node.
        lonely = reader.get_replica_desc("lonely")
        assert reader.is_exist("lonely") == (1 if lonely else 0)
        reader.close()
    finally:
        node.stop()


def test_pure_client_puts_land_on_the_node(node, master):
    c = make_store(master, segment=0)
    assert c.put("onnode", b"data") == 0
    d = c.get_replica_desc("onnode")
    assert d[0].get_memory_descriptor().buffer_descriptor.transport_endpoint == node
    c.close()


def test_concurrent_setups_leave_one_client(master_proc, master):
    s = MooncakeDistributedStore()
    codes = []

    def setup():
        codes.append(s.setup("127.0.0.1", "P2PHANDSHAKE", 16 * MiB, 16 * MiB, "tcp", "", master))

    threads = [threading.Thread(target=setup) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert codes == [0, 0, 0, 0]
    assert s.put("after", b"v") == 0 and s.get("after") == b"v"
    assert segments(master_proc) == [s.get_hostname()]  # the displaced clients left
    s.close()
    assert s.health_check() == 1
    assert segments(master_proc) == []


def test_blocking_calls_release_the_gil(master_proc, master):
    import os
    import signal

    s = make_store(master)
    assert s.put("gil", b"v") == 0
    res = []
    done_at = []

    def call():
        res.append(s.is_exist("gil"))
        done_at.append(time.perf_counter())

    os.kill(master_proc.p.pid, signal.SIGSTOP)  # the next master call blocks until SIGCONT
    try:
        t = threading.Thread(target=call)
        t0 = time.perf_counter()
        t.start()
        ticks = 0
        while time.perf_counter() - t0 < 0.3:
            ticks += 1  # pure-Python work: runs only while the other thread leaves the GIL free
        blocked = t.is_alive()
    finally:
        os.kill(master_proc.p.pid, signal.SIGCONT)
    t.join(timeout=30)
    detail = (blocked, ticks, res, [d - t0 for d in done_at])
    assert blocked and ticks > 1000 and res == [1], detail
    s.close()


def test_setup_releases_the_gil_while_connecting(monkeypatch):
    import socket

    monkeypatch.setenv("MC_RPC_CONNECT_TIMEOUT_MS", "1500")
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        addr = "127.0.0.1:%d" % silent.getsockname()[1]
        s = MooncakeDistributedStore()
        res = []
        t = threading.Thread(
            target=lambda: res.append(s.setup("127.0.0.1", "P2PHANDSHAKE", 16 * MiB, 16 * MiB, "tcp", "", addr))
        )
        t.start()
        time.sleep(0.3)
        blocked = t.is_alive()
        assert s.is_exist("k") == -600  # a call racing setup sees "not set up"
        t.join(timeout=30)
    assert blocked and len(res) == 1 and res[0] < 0


def test_master_gone_gives_negative_codes(master_proc, master):
    s = make_store(master)
    assert s.put("k", b"v") == 0
    master_proc.stop()
    rc = s.is_exist("k")
    assert rc < 0 and rc != -1
    assert s.get("k") == b""
    assert s.put("k2", b"v") < 0
    deadline = time.time() + 10
    while s.health_check() != 2 and time.time() < deadline:
        time.sleep(0.1)
    assert s.health_check() == 2
    assert s.close() == 0


def test_http_metadata_entries_published_and_withdrawn(tidepool_bin, tmp_path):
    """With an http:// metadata server, setup publishes ram/ and rpc_meta/ under the segment
    name (get_hostname()), and close deletes them (contract §4.3)."""
    import json
    import urllib.error
    import urllib.parse
    import urllib.request

    from conftest import start_master

    m = start_master(
        tidepool_bin,
        tmp_path,
        "--enable_http_metadata_server",
        "--http_metadata_server_host=127.0.0.1",
        "--http_metadata_server_port=0",
    )
    try:
        meta = f"http://{m.ready['metadata']}/metadata"
        s = MooncakeDistributedStore()
        assert s.setup("127.0.0.1", meta, 16 * MiB, 16 * MiB, "tcp", "", m.ready["rpc"]) == 0
        name = s.get_hostname()
        host, port = name.rsplit(":", 1)
        assert host == "127.0.0.1" and 12300 <= int(port) <= 14300

        def get(key):
            url = meta + "?key=" + urllib.parse.quote(key, safe="")
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    return r.status, r.read()
            except urllib.error.HTTPError as e:
                return e.code, b""

        status, body = get(f"mooncake/ram/{name}")
        assert status == 200
        desc = json.loads(body)
        assert desc["name"] == name and desc["implementation"] == "tidepool"
        status, body = get(f"mooncake/rpc_meta/{name}")
        assert status == 200 and "rpc_port" in json.loads(body)
        assert s.close() == 0
        assert get(f"mooncake/ram/{name}")[0] == 404
        assert get(f"mooncake/rpc_meta/{name}")[0] == 404
    finally:
        m.stop()


def test_restarted_master_serves_what_the_segments_still_hold(tidepool_bin, tmp_path):
    """W5: kill -9 the master and start it again on the same port; the SGLang-style store that
    contributed the segment mounts it again with its directory, and both it and a pure
    client read every object put before the restart (a removed one stays removed)."""
    import signal

    from conftest import free_port, start_master

    port = free_port()
    m = start_master(tidepool_bin, tmp_path, f"--rpc_port={port}")
    addr = m.ready["rpc"]
    owner = make_store(addr)
    reader = make_store(addr, segment=0)
    try:
        blobs = {f"w5/{i}": bytes([i]) * (4096 + 1000 * i) for i in range(6)}
        for k, v in blobs.items():
            assert owner.put(k, v) == 0
        assert reader.remove("w5/5") == 0
        del blobs["w5/5"]
        os.kill(m.p.pid, signal.SIGKILL)
        m.p.wait()
        m.stop()
        m = start_master(tidepool_bin, tmp_path, f"--rpc_port={port}")
        assert m.ready["rpc"] == addr
        keys = list(blobs)
        deadline = time.time() + 15
        while reader.batch_is_exist(keys) != [1] * len(keys) and time.time() < deadline:
            time.sleep(0.1)
        assert reader.batch_is_exist(keys) == [1] * len(keys)
        for k, v in blobs.items():
            assert reader.get(k) == v, k
            assert owner.get(k) == v, k
        assert reader.is_exist("w5/5") == 0
        assert owner.put("w5/after", b"new") == 0
        assert reader.get("w5/after") == b"new"
    finally:
        reader.close()
        owner.close()
        m.stop()
