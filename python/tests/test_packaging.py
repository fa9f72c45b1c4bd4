"""The rest of the `mooncake` package: engine stub, metadata server, config, console scripts."""

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

import pytest


def test_engine_stub_is_importable():
    import mooncake.engine as me

    assert me.TransferEngine().initialize("127.0.0.1", "P2PHANDSHAKE", "tcp", "") == -1
    assert me.TransferOpcode.Read == me.Read and me.Write == me.TransferOpcode.Write


def test_store_module_exports():
    import mooncake.store as ms

    for name in (
        "MooncakeDistributedStore ReplicateConfig SoftPinAction ObjectDataType ReplicaStatus "
        "ReplicaDescriptor MemoryDescriptor DiskDescriptor Descriptor BufferHandle "
        "MooncakeHostMemAllocator"
    ).split():
        assert hasattr(ms, name), name


def _req(method, url, body=None):
    r = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(r, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_http_metadata_server_semantics():
    from mooncake.http_metadata_server import serve

    srv = serve("127.0.0.1", 0)
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        key = "mooncake%2Frpc_meta%2Fhost%3A1"
        assert _req("GET", f"{base}/metadata?key={key}") == (404, b"metadata not found")
        assert _req("PUT", f"{base}/metadata?key={key}", b'{"a":1}') == (200, b"metadata updated")
        assert _req("GET", f"{base}/metadata?key={key}") == (200, b'{"a":1}')
        assert _req("PUT", f"{base}/metadata?key={key}", b'{"a":2}')[0] == 200  # overwrite (W7)
        assert _req("GET", f"{base}/metadata?key={key}") == (200, b'{"a":2}')
        assert _req("GET", f"{base}/metadata")[0] == 400
        assert _req("PUT", f"{base}/metadata", b"x")[0] == 400
        assert _req("POST", f"{base}/metadata?key={key}", b"x")[0] == 405
        assert _req("DELETE", f"{base}/metadata?key={key}") == (200, b"metadata deleted")
        assert _req("DELETE", f"{base}/metadata?key={key}")[0] == 404
        assert _req("GET", f"{base}/health") == (200, b"OK")
    finally:
        srv.shutdown()


def test_mooncake_config(tmp_path, monkeypatch):
    from mooncake.mooncake_config import MooncakeConfig

    path = tmp_path / "mc.json"
    path.write_text(
        json.dumps(
            {
                "local_hostname": "h",
                "metadata_server": "P2PHANDSHAKE",
                "master_server_address": "m:50051",
                "global_segment_size": "4gb",
                "local_buffer_size": 16777216,
                "protocol": "TCP",
                "extra": 1,
            }
        )
    )
    c = MooncakeConfig.from_file(str(path))
    assert c.global_segment_size == 4 << 30 and c.local_buffer_size == 16 << 20 and c.protocol == "tcp"
    monkeypatch.setenv("MOONCAKE_CONFIG_PATH", str(path))
    assert MooncakeConfig.load_from_env().master_server_address == "m:50051"
    monkeypatch.delenv("MOONCAKE_CONFIG_PATH")
    monkeypatch.setenv("MOONCAKE_MASTER", "x:1")
    monkeypatch.setenv("MOONCAKE_GLOBAL_SEGMENT_SIZE", "512MB")
    c = MooncakeConfig.load_from_env()
    assert c.master_server_address == "x:1" and c.global_segment_size == 512 << 20
    assert c.metadata_server == "P2PHANDSHAKE" and c.local_hostname == "localhost"
    monkeypatch.delenv("MOONCAKE_MASTER")
    with pytest.raises(ValueError):
        MooncakeConfig.load_from_env()


def _script(name):
    path = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    if path is None:
        pytest.skip(f"console script {name} is not installed")
    return path


def test_mooncake_master_console_script_runs_tidepool():
    exe = _script("mooncake_master")
    p = subprocess.Popen(
        [exe, "--rpc_address=127.0.0.1", "--rpc_port=0", "--metrics_host=127.0.0.1", "--metrics_port=0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = p.stdout.readline()
        assert line.startswith("READY rpc=127.0.0.1:")
    finally:
        p.terminate()
        p.wait(timeout=10)
    bad = subprocess.run([exe, "--no_such_flag_anywhere=1"], capture_output=True, timeout=30)
    assert bad.returncode == 1


def test_mooncake_http_metadata_server_console_script():
    exe = _script("mooncake_http_metadata_server")
    p = subprocess.Popen([exe, "--port", "0", "--host", "127.0.0.1"], stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("READY metadata=127.0.0.1:")
        port = line.strip().rsplit(":", 1)[1]
        assert _req("GET", f"http://127.0.0.1:{port}/health") == (200, b"OK")
    finally:
        p.terminate()
        p.wait(timeout=10)


def test_tidepool_connect_api(master):
    import tidepool

    s = tidepool.connect(master, segment_size=16 << 20)
    assert s.put("own", b"api") == 0 and s.get("own") == b"api"
    s.close()
    with pytest.raises(tidepool.TidepoolError):
        tidepool.connect("127.0.0.1:1", connect_timeout_ms=1000)
    assert tidepool.parse_size("1.5 GB") == 1610612736
    assert tidepool.error_name(-704) == "OBJECT_NOT_FOUND"


def test_async_store(master):
    import asyncio

    from mooncake.async_store import MooncakeDistributedStoreAsync

    s = MooncakeDistributedStoreAsync()
    assert s.setup("127.0.0.1", "P2PHANDSHAKE", 16 << 20, 16 << 20, "tcp", "", master) == 0

    async def go():
        assert await s.async_put("a", b"async") == 0
        got = await asyncio.gather(*(s.async_get("a") for _ in range(8)))
        assert got == [b"async"] * 8
        assert await s.async_is_exist("a") == 1

    asyncio.run(go())
    s.close()
    with pytest.raises(AttributeError):
        s.no_such_method


def test_store_rest_service(master, tmp_path):
    cfg = tmp_path / "svc.json"
    cfg.write_text(
        json.dumps(
            {
                "local_hostname": "127.0.0.1",
                "metadata_server": "P2PHANDSHAKE",
                "master_server_address": "unused:1",
                "global_segment_size": "16MB",
                "local_buffer_size": "16MB",
            }
        )
    )
    p = subprocess.Popen(
        [sys.executable, "-m", "mooncake.mooncake_store_service", "--config", str(cfg), "--port", "0",
         "--host", "127.0.0.1", "-D", f"master_server_address={master}"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = p.stdout.readline()
        assert line.startswith("READY rest=127.0.0.1:"), line
        base = "http://127.0.0.1:" + line.strip().rsplit(":", 1)[1]
        body = json.dumps({"key": "r k", "value": "hello"}).encode()
        assert _req("PUT", f"{base}/api/put", body)[0] == 200
        assert _req("PUT", f"{base}/api/put", b"not json")[0] == 400
        assert _req("GET", f"{base}/api/get/r%20k") == (200, b"hello")
        assert _req("GET", f"{base}/api/get/missing")[0] == 404
        assert json.loads(_req("GET", f"{base}/api/exist/r%20k")[1]) == {"exists": True}
        assert _req("DELETE", f"{base}/api/remove/r%20k")[0] == 500  # read lease held (-706)
        body = json.dumps({"key": "unread", "value": "x"}).encode()
        assert _req("PUT", f"{base}/api/put", body)[0] == 200
        assert _req("DELETE", f"{base}/api/remove/unread")[0] == 200
        assert _req("DELETE", f"{base}/api/remove/unread")[0] == 404
        assert json.loads(_req("GET", f"{base}/api/exist/unread")[1]) == {"exists": False}
        assert _req("DELETE", f"{base}/api/remove_all")[0] == 200
    finally:
        p.terminate()
        p.wait(timeout=10)


def test_vllm_v0_alias():
    import mooncake_vllm_adaptor
    from mooncake.store import MooncakeDistributedStore

    assert mooncake_vllm_adaptor.MooncakeDistributedStore is MooncakeDistributedStore
