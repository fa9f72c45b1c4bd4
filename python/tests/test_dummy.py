"""Standalone mode (`setup_dummy`): thin clients in this process forward their calls to a real
`tidepool node` serving thin clients, whose segment holds the objects (contract §1.5, §4.2)."""

import ctypes
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import MiB, start_node
from mooncake.store import MooncakeDistributedStore, MooncakeHostMemAllocator


@pytest.fixture
def real(tidepool_bin, tmp_path, master):
    """A node serving thin clients on a free port; yields its READY fields."""
    n = start_node(tidepool_bin, tmp_path, master, "64MB", "--port=0")
    assert n.ready.get("thin"), n.ready
    yield n.ready
    n.stop()


def dummy(ready, local=16 * MiB):
    s = MooncakeDistributedStore()
    assert s.setup_dummy(64 * MiB, local, ready["thin"]) == 0
    return s


def test_round_trip_with_host_mem_allocator_buffers(real):
    s = dummy(real)
    assert s.get_hostname() == real["segment"]
    alloc = MooncakeHostMemAllocator()
    # SGLang allocates its host KV pool once, then moves pages in and out of it.
    pool = alloc.alloc(8 * MiB)
    assert pool != 0
    page = 256 * 1024
    keys = [f"kv_{i}_k" for i in range(8)]
    for i in range(8):
        ctypes.memset(pool + i * page, i + 1, page)
    assert s.batch_put_from(keys, [pool + i * page for i in range(8)], [page] * 8) == [0] * 8
    assert s.batch_is_exist(keys + ["missing"]) == [1] * 8 + [0]
    # Read back into the other half of the pool; a larger capacity returns the object size.
    dst = pool + 4 * MiB
    ctypes.memset(dst, 0, 4 * MiB)
    got = s.batch_get_into(keys[:4], [dst + i * (page + 4096) for i in range(4)], [page + 4096] * 4)
    assert got == [page] * 4
    for i in range(4):
        assert ctypes.string_at(dst + i * (page + 4096), page) == bytes([i + 1]) * page
    assert s.get_into(keys[5], dst, page) == page
    assert ctypes.string_at(dst, page) == bytes([6]) * page
    assert s.get_into("missing", dst, page) == -704
    assert s.get_into(keys[5], dst, 10) == -600
    # A block allocated after setup is shared too.
    late = alloc.alloc(MiB)
    ctypes.memmove(late, b"late block", 10)
    assert s.put_from("late", late, 10) == 0
    assert s.get("late") == b"late block"
    assert s.get_size(keys[0]) == page
    assert s.remove("late", force=True) == 0
    assert s.is_exist("late") == 0
    assert alloc.free(late) == 0
    assert alloc.free(pool) == 0
    assert s.close() == 0


def test_round_trip_with_bytes_and_plain_pointers(real):
    s = dummy(real)
    assert s.put("b1", b"hello thin") == 0
    assert s.put("b1", b"ignored") == 0  # write-once
    assert s.get("b1") == b"hello thin"
    assert s.get("nope") == b""
    assert s.put_batch(["b2", "b3"], [b"two", b"three" * 1000]) == 0
    assert s.get_batch(["b2", "b3", "nope"]) == [b"two", b"three" * 1000, b""]
    # ctypes buffers are outside shared memory: copied over the socket, still correct.
    src = ctypes.create_string_buffer(b"x" * 50000, 50000)
    dst = ctypes.create_string_buffer(60000)
    assert s.put_from("c1", ctypes.addressof(src), 50000) == 0
    assert s.get_into("c1", ctypes.addressof(dst), 60000) == 50000
    assert dst.raw[:50000] == b"x" * 50000
    assert s.batch_get_into(["c1", "b2"], [ctypes.addressof(dst), 0], [60000, 10]) == [50000, -600]
    assert s.register_buffer(ctypes.addressof(dst), 60000) == 0
    assert s.register_buffer(ctypes.addressof(dst) + 10, 100) == -600
    assert s.unregister_buffer(ctypes.addressof(dst)) == 0
    # Copying APIs keep the local-buffer limit.
    assert s.put("huge", b"z" * (17 * MiB)) == -600
    assert s.remove_all(force=True) >= 4
    assert s.is_exist("b1") == 0
    s.close()
    assert s.put("b1", b"x") == -600  # not set up any more


def test_objects_survive_the_thin_client_and_a_second_one_reads_them(real, master):
    a = dummy(real)
    alloc = MooncakeHostMemAllocator()
    buf = alloc.alloc(MiB)
    ctypes.memset(buf, 0x5A, MiB)
    assert a.put_from("survivor", buf, MiB) == 0
    assert a.put("small", b"abc") == 0
    assert a.close() == 0
    b = dummy(real, local=0)
    assert b.is_exist("survivor") == 1
    out = alloc.alloc(MiB)
    assert b.get_into("survivor", out, MiB) == MiB
    assert ctypes.string_at(out, MiB) == b"\x5a" * MiB
    # local_buffer_size=0: copying reads fail (§1.3), zero-copy reads work.
    assert b.get("small") == b""
    # A regular client of the cluster sees the same objects (they live in the node's segment).
    from conftest import make_store

    c = make_store(master, segment=0)
    assert c.get("small") == b"abc"
    c.close()
    b.close()


def test_node_survives_a_killed_thin_client(real, tmp_path):
    script = textwrap.dedent(
        f"""
        import ctypes, sys
        from mooncake.store import MooncakeDistributedStore, MooncakeHostMemAllocator
        s = MooncakeDistributedStore()
        assert s.setup_dummy(0, 1 << 20, {real["thin"]!r}) == 0
        a = MooncakeHostMemAllocator()
        p = a.alloc(4 << 20)
        ctypes.memset(p, 1, 4 << 20)
        assert s.put_from("before-kill", p, 4 << 20) == 0
        print("READY", flush=True)
        i = 0
        while True:
            # A bounded working set, so the node's segment never needs eviction.
            k = f"loop-{{i % 4}}"
            s.remove(k, force=True)
            s.put_from(k, p, 1 << 20)
            i += 1
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "READY"
        time.sleep(0.2)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
    s = dummy(real)
    assert s.is_exist("before-kill") == 1
    assert s.put("after-kill", b"still serving") == 0
    assert s.get("after-kill") == b"still serving"
    s.close()


def test_setup_dummy_against_a_closed_port_fails_fast():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s = MooncakeDistributedStore()
    t = time.monotonic()
    assert s.setup_dummy(16 * MiB, 16 * MiB, f"127.0.0.1:{port}") == -900
    assert time.monotonic() - t < 5
    assert s.put("k", b"v") == -600
    assert s.close() == 0


def test_setup_dummy_bad_args_raise_type_error():
    s = MooncakeDistributedStore()
    for args in [(-1, 0, "127.0.0.1:1"), (0, -1, "127.0.0.1:1"), (0, 0, None), ("1", 0, "a:1")]:
        with pytest.raises(TypeError):
            s.setup_dummy(*args)
