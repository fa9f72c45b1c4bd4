"""`setup` overloads, argument rules, the not-set-up conventions, close/setup cycles."""

import ctypes
import json
import os
import socket

import pytest

from conftest import MiB, make_store
from mooncake.store import MooncakeDistributedStore


def test_every_method_before_setup_returns_the_not_set_up_value():
    s = MooncakeDistributedStore()
    buf = ctypes.create_string_buffer(64)
    ptr = ctypes.addressof(buf)
    assert s.put("k", b"v") == -600
    assert s.put_parts("k", b"a", b"b") == -600
    assert s.put_batch(["a", "b"], [b"1", b"2"]) == -600
    assert s.put_from("k", ptr, 8) == -600
    assert s.get("k") == b""
    assert s.get_batch(["a", "b"]) == [b"", b""]
    assert s.get_buffer("k") is None
    assert s.batch_get_buffer(["a", "b"]) == [None, None]
    assert s.is_exist("k") == -600
    assert s.batch_is_exist(["a", "b", "c"]) == [-600, -600, -600]
    assert s.get_into("k", ptr, 64) == -600
    assert s.get_size("k") == -600
    assert s.batch_put_from(["a", "b"], [ptr, ptr], [8, 8]) == [-600, -600]
    assert s.batch_get_into(["a", "b"], [ptr, ptr], [8, 8]) == [-600, -600]
    assert s.batch_put_from_multi_buffers(["a"], [[ptr]], [[8]]) == [-600]
    assert s.batch_get_into_multi_buffers(["a", "b"], [[ptr], [ptr]], [[8], [8]]) == [-600, -600]
    assert s.register_buffer(ptr, 64) == -600
    assert s.unregister_buffer(ptr) == -600
    assert s.remove("k") == -600
    assert s.batch_remove(["a", "b"]) == [-600, -600]
    assert s.remove_by_regex(".*") == -600
    assert s.remove_all() == -600
    assert s.get_hostname() == ""
    assert s.health_check() == 1
    assert s.get_replica_desc("k") == []
    assert s.batch_get_replica_desc(["k"]) == {}
    assert s.close() == 0
    assert s.close() == 0


def test_after_close_returns_the_not_set_up_value(master):
    s = make_store(master)
    assert s.put("k", b"v") == 0
    assert s.close() == 0
    assert s.get("k") == b""
    assert s.is_exist("k") == -600
    assert s.batch_is_exist(["k"]) == [-600]
    assert s.health_check() == 1
    assert s.get_hostname() == ""


ARGS = ("127.0.0.1", "P2PHANDSHAKE", 16 * MiB, 16 * MiB, "tcp", "")


def test_missing_or_unknown_arguments_raise_type_error(master):
    s = MooncakeDistributedStore()
    with pytest.raises(TypeError):
        s.setup(*ARGS)  # master_server_addr missing
    with pytest.raises(TypeError):
        s.setup(*ARGS, master, bogus=1)
    with pytest.raises(TypeError):
        s.setup(*ARGS, master_server_address=master)  # JSON spelling is not a keyword
    with pytest.raises(TypeError):
        s.setup("127.0.0.1", "P2PHANDSHAKE", -1, 16 * MiB, "tcp", "", master)
    with pytest.raises(TypeError):
        s.setup("127.0.0.1", "P2PHANDSHAKE", 16 * MiB, -5, "tcp", "", master)
    with pytest.raises(TypeError):
        s.setup("127.0.0.1", "P2PHANDSHAKE", "16MB", 16 * MiB, "tcp", "", master)
    with pytest.raises(TypeError):
        s.setup(123, "P2PHANDSHAKE", 16 * MiB, 16 * MiB, "tcp", "", master)
    assert s.health_check() == 1  # nothing was set up


def test_keyword_form_and_positional_engine(master):
    s = MooncakeDistributedStore()
    rc = s.setup(
        local_hostname="127.0.0.1",
        metadata_server="P2PHANDSHAKE",
        global_segment_size=16 * MiB,
        local_buffer_size=16 * MiB,
        protocol="tcp",
        rdma_devices="",
        master_server_addr=master,
    )
    assert rc == 0
    s.close()
    # SGLang passes engine as the 8th positional argument; a non-None value is ignored.
    assert s.setup(*ARGS, master, object()) == 0
    assert s.put("x", b"1") == 0
    s.close()


@pytest.mark.parametrize(
    "change",
    [
        {"local_hostname": ""},
        {"metadata_server": ""},
        {"metadata_server": "etcd://"},
        {"metadata_server": "etcd://127.0.0.1"},
        {"metadata_server": "redis://127.0.0.1:6379"},
        {"global_segment_size": 1000},
        {"protocol": "carrier-pigeon"},
        {"protocol": "rdma"},
        {"master_server_addr": "etcd://127.0.0.1:2379"},
        {"enable_ssd_offload": True},
    ],
)
def test_invalid_setup_values_return_600(master, change, monkeypatch):
    monkeypatch.delenv("MC_FORCE_TCP", raising=False)
    kw = dict(
        local_hostname="127.0.0.1",
        metadata_server="P2PHANDSHAKE",
        global_segment_size=16 * MiB,
        local_buffer_size=16 * MiB,
        protocol="tcp",
        rdma_devices="",
        master_server_addr=master,
    )
    kw.update(change)
    s = MooncakeDistributedStore()
    assert s.setup(**kw) == -600
    assert s.health_check() == 1


def test_rdma_with_force_tcp_uses_tcp(master, monkeypatch):
    monkeypatch.setenv("MC_FORCE_TCP", "1")
    s = MooncakeDistributedStore()
    assert s.setup("127.0.0.1", "P2PHANDSHAKE", 16 * MiB, 16 * MiB, "RDMA", "auto-discovery", master) == 0
    assert s.put("k", b"v") == 0
    assert s.get("k") == b"v"
    s.close()


def test_unreachable_master_is_a_negative_code(monkeypatch):
    monkeypatch.setenv("MC_RPC_CONNECT_TIMEOUT_MS", "2000")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s = MooncakeDistributedStore()
    rc = s.setup(*ARGS, f"127.0.0.1:{port}")
    assert rc < 0 and rc != -600
    assert s.health_check() == 1


def test_setup_failure_reason_goes_to_stderr():
    """With TIDEPOOL_PY_LOG set, a failing setup says why on stderr (the code alone, -900, does
    not tell an unreachable master from a refused one)."""
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = (
        "from mooncake.store import MooncakeDistributedStore as S\n"
        f"print(S().setup('127.0.0.1', 'P2PHANDSHAKE', 0, 1 << 20, 'tcp', '', '127.0.0.1:{port}'))\n"
    )
    env = dict(os.environ, TIDEPOOL_PY_LOG="warn", MC_RPC_CONNECT_TIMEOUT_MS="2000")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "-900"
    assert "setup failed" in r.stderr and f"127.0.0.1:{port}" in r.stderr, r.stderr


def test_dict_form_with_size_strings_and_aliases(master):
    s = MooncakeDistributedStore()
    rc = s.setup(
        {
            "local_hostname": "127.0.0.1",
            "metadata_server": "P2PHANDSHAKE",
            "global_segment_size": "32 MB",
            "local_buffer_size": "1.5 MB",
            "master_server_address": master,
            "device_name": "",
            "unknown_key": "ignored",
        }
    )
    assert rc == 0
    assert s.put("k", b"x" * (MiB + 1)) == 0
    assert s.put("big", b"x" * (2 * MiB)) == -600  # larger than the 1.5 MB local buffer
    s.close()
    assert s.setup(config={"local_hostname": "127.0.0.1", "metadata_server": "P2PHANDSHAKE", "master_server_addr": master}) == 0
    s.close()


@pytest.mark.parametrize(
    "change",
    [
        {"local_hostname": ""},
        {"metadata_server": None},
        {"global_segment_size": "12 parsecs"},
        {"global_segment_size": "-1"},
        {"global_segment_size": "10%"},
        {"local_buffer_size": "512"},
        {"local_buffer_size": "2 TB"},
        {"client_http_port": "http"},
        {"enable_ssd_offload": "yes"},
    ],
)
def test_dict_form_invalid_values_return_600(master, change):
    cfg = {"local_hostname": "127.0.0.1", "metadata_server": "P2PHANDSHAKE", "master_server_addr": master}
    cfg.update(change)
    cfg = {k: v for k, v in cfg.items() if v is not None}
    s = MooncakeDistributedStore()
    assert s.setup(cfg) == -600


def test_http_metadata_server_url_is_accepted(master):
    from mooncake.http_metadata_server import serve

    srv = serve("127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/metadata"
        s = MooncakeDistributedStore()
        assert s.setup("127.0.0.1", url, 16 * MiB, 16 * MiB, "tcp", "", master) == 0
        assert s.put("k", b"v") == 0
        s.close()
    finally:
        srv.shutdown()


def test_etcd_metadata_server_is_accepted(master, etcd_server):
    """`setup(…, metadata_server="etcd://…")` publishes the entries in etcd and withdraws them
    at close."""
    s = MooncakeDistributedStore()
    assert s.setup("127.0.0.1", f"etcd://{etcd_server.addr}", 16 * MiB, 16 * MiB, "tcp", "", master) == 0
    key = f"mooncake/rpc_meta/{s.get_hostname()}"
    meta = json.loads(etcd_server.get(key))
    assert meta["ip_or_host_name"] == "127.0.0.1" and meta["rpc_port"] > 0
    assert json.loads(etcd_server.get(f"mooncake/ram/{s.get_hostname()}"))["protocol"] == "tcp"
    assert s.put("k", b"v") == 0
    assert s.get("k") == b"v"
    assert s.close() == 0
    assert etcd_server.get(key) is None


def test_close_setup_cycles(master):
    reader = make_store(master, segment=0)
    s = MooncakeDistributedStore()
    names = set()
    for i in range(5):
        assert s.setup(*ARGS, master) == 0
        names.add(s.get_hostname())
        assert s.health_check() == 0
        assert s.put(f"cycle{i}", f"v{i}".encode()) == 0
        assert reader.get(f"cycle{i}") == f"v{i}".encode()
        assert s.close() == 0
        # The writer's segment held the only replica: gone for everyone at once.
        assert reader.is_exist(f"cycle{i}") == 0
        assert reader.get(f"cycle{i}") == b""
    assert len(names) == 5  # every setup mounts a fresh segment
    reader.close()


def test_setup_on_a_set_up_store_closes_first(master):
    s = make_store(master)
    assert s.put("old", b"v") == 0
    assert s.setup(*ARGS, master) == 0
    assert s.is_exist("old") == 0
    s.close()


def test_setup_dummy_argument_rules():
    # Full behaviour is in test_dummy.py; here only the checks that run before any work.
    s = MooncakeDistributedStore()
    with pytest.raises(TypeError):
        s.setup_dummy(-1, 16 * MiB, "127.0.0.1:50052")
    with pytest.raises(TypeError):
        s.setup_dummy(16 * MiB, "16MB", "127.0.0.1:50052")
    with pytest.raises(TypeError):
        s.setup_dummy(16 * MiB, 16 * MiB, 50052)
    assert s.setup_dummy(16 * MiB, 16 * MiB, "") == -600
    assert s.setup_dummy(16 * MiB, 100, "127.0.0.1:50052") == -600


def test_mc_tcp_bind_address(master, monkeypatch):
    monkeypatch.setenv("MC_TCP_BIND_ADDRESS", "127.0.0.1")
    s = MooncakeDistributedStore()
    assert s.setup("localhost", "P2PHANDSHAKE", 16 * MiB, 16 * MiB, "tcp", "", master) == 0
    # The segment keeps the caller's name (§1.4); the variable picks the data endpoint's
    # address (§5.3), which replica descriptors report.
    assert s.get_hostname().startswith("localhost:")
    assert s.put("bound", b"x" * 100) == 0
    reps = s.get_replica_desc("bound")
    ep = reps[0].get_memory_descriptor().buffer_descriptor.transport_endpoint
    assert ep.startswith("127.0.0.1:"), ep
    s.close()
    os.environ.pop("MC_TCP_BIND_ADDRESS", None)


def test_client_http_server(master):
    import json
    import urllib.error
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s = MooncakeDistributedStore()
    assert s.setup(*ARGS, master, enable_client_http_server=True, client_http_port=port) == 0
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
        assert r.status == 200 and json.loads(r.read()) == {"status": "healthy", "code": 0}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert b"tidepool_client_healthy 1" in r.read()
    s.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
