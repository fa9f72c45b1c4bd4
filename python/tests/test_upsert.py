"""The upsert family (contract §1.5): insert or replace, unreadable (-703) while replacing,
refused with -706 while a read lease lives (W13), and never a torn read."""

import ctypes
import threading
import time
import zlib

import pytest

from conftest import MiB, make_store, start_master, start_node
from mooncake.store import (
    MooncakeDistributedStore,
    MooncakeHostMemAllocator,
    ReplicateConfig,
    SoftPinAction,
)

LEASE_MS = 300


@pytest.fixture
def short_lease_master(tidepool_bin, tmp_path):
    m = start_master(tidepool_bin, tmp_path, f"--default_kv_lease_ttl={LEASE_MS}")
    yield m.ready["rpc"]
    m.stop()


@pytest.fixture
def pair(short_lease_master):
    a = make_store(short_lease_master)
    b = make_store(short_lease_master)
    yield a, b
    b.close()
    a.close()


def past_lease():
    time.sleep(LEASE_MS / 1000 + 0.1)


def test_upsert_inserts_then_replaces(pair):
    a, b = pair
    assert a.upsert("k", b"first") == 0
    assert b.get("k") == b"first"  # grants a lease
    # A live lease refuses the replacement, as it refuses a remove.
    assert a.upsert("k", b"second, longer") == -706
    assert b.get_size("k") == 5
    past_lease()
    assert a.upsert("k", b"second, longer") == 0
    assert b.get("k") == b"second, longer"
    # A plain put of the same key still writes nothing (write-once).
    past_lease()
    assert a.put("k", b"third") == 0
    assert b.get("k") == b"second, longer"


def test_every_upsert_form(pair):
    a, b = pair
    keys = ["f", "bf0", "bf1", "parts", "batch0", "batch1"]
    for k in keys:
        assert a.put(k, b"old") == 0
    src = ctypes.create_string_buffer(b"from-pointer", 12)
    assert a.upsert_from("f", ctypes.addressof(src), 12) == 0
    b0 = ctypes.create_string_buffer(b"AAAA", 4)
    b1 = ctypes.create_string_buffer(b"BBBBBB", 6)
    assert a.batch_upsert_from(
        ["bf0", "bf1"], [ctypes.addressof(b0), ctypes.addressof(b1)], [4, 6]
    ) == [0, 0]
    assert a.upsert_parts("parts", b"he", memoryview(b"llo"), bytearray(b"!")) == 0
    assert a.upsert_batch(["batch0", "batch1"], [b"x" * 10, b"y" * 20]) == 0
    got = b.get_batch(keys)
    assert got == [b"from-pointer", b"AAAA", b"BBBBBB", b"hello!", b"x" * 10, b"y" * 20]


def test_upsert_per_key_codes_and_bad_arguments(pair):
    a, b = pair
    assert a.put("held", b"v") == 0
    assert b.is_exist("held") == 1  # lease on "held" only
    x = ctypes.create_string_buffer(b"new!", 4)
    p = ctypes.addressof(x)
    assert a.batch_upsert_from(["held", "fresh", ""], [p, p, p], [4, 4, 4]) == [-706, 0, -600]
    assert a.batch_upsert_from([], [], []) == []
    assert a.batch_upsert_from(["a"], [p, p], [4]) == [-600]
    assert a.upsert("e", b"") == -600
    assert a.upsert_from("z", 0, 4) == -600
    with pytest.raises(TypeError):
        a.upsert_from("z", p, -1)
    with pytest.raises(TypeError):
        a.upsert("z", 42)
    with pytest.raises(TypeError):
        a.batch_upsert_from(["z"], ["not a pointer"], [4])


def test_upsert_soft_pin_actions(pair):
    a, _ = pair
    pin = ReplicateConfig()
    pin.soft_pin_action = SoftPinAction.ENABLE
    assert a.put("p", b"v1", config=pin) == 0
    off = ReplicateConfig()
    off.soft_pin_action = SoftPinAction.DISABLE
    assert a.upsert("p", b"v2", config=off) == 0
    assert a.get("p") == b"v2"


def test_upsert_after_writer_close_and_remove(short_lease_master, pair):
    a, b = pair
    w = make_store(short_lease_master, segment=0)
    assert w.upsert("gone", b"abc") == 0
    w.close()
    assert a.get("gone") == b"abc"  # the replica lives in another client's segment
    assert a.remove("gone", force=True) == 0
    assert a.upsert("gone", b"again") == 0
    assert b.get("gone") == b"again"


def test_upsert_through_a_thin_client(tidepool_bin, tmp_path, short_lease_master):
    """Standalone mode forwards upserts to the real client with the same rules."""
    n = start_node(tidepool_bin, tmp_path, short_lease_master, "64MB", "--port=0")
    try:
        s = MooncakeDistributedStore()
        assert s.setup_dummy(64 * MiB, 16 * MiB, n.ready["thin"]) == 0
        alloc = MooncakeHostMemAllocator()
        p = alloc.alloc(MiB)
        ctypes.memset(p, 7, 4096)
        assert s.upsert("t", b"old") == 0
        assert s.upsert_from("t", p, 4096) == 0
        assert s.get("t") == bytes([7]) * 4096  # lease
        assert s.batch_upsert_from(["t", "u"], [p, p], [10, 10]) == [-706, 0]
        past_lease()
        assert s.upsert_parts("t", b"new ", b"parts") == 0
        assert s.upsert_batch(["u"], [b"batch"]) == 0
        assert s.get_batch(["t", "u"]) == [b"new parts", b"batch"]
        assert s.close() == 0
        assert alloc.free(p) == 0
    finally:
        n.stop()


def _value(version, size):
    """`size` bytes that identify `version` everywhere: a torn read cannot pass the check."""
    body = bytes([version % 251]) * (size - 4)
    return body + zlib.crc32(body).to_bytes(4, "little")


def _intact(data):
    body, crc = data[:-4], data[-4:]
    return zlib.crc32(body).to_bytes(4, "little") == crc and body.count(body[:1]) == len(body)


def test_concurrent_upsert_and_get_never_tear(pair):
    """W13: a writer replaces a 1 MiB object while readers read it; every read is one whole
    version (or a miss while in flight), never a mix of old and new bytes."""
    a, b = pair
    size = 1 << 20
    assert a.upsert("hot", _value(0, size)) == 0
    stop = time.monotonic() + 3.0
    seen, torn, errors = set(), [], []
    wins = [0]

    def writer():
        v = 0
        while time.monotonic() < stop:
            rc = a.upsert("hot", _value(v + 1, size))
            if rc == 0:
                v += 1
                wins[0] += 1
            elif rc != -706:
                errors.append(rc)
            time.sleep(0.01)

    t0 = time.monotonic()
    period, reading = LEASE_MS / 1000 + 0.25, 0.15

    def reader():
        buf = ctypes.create_string_buffer(size)
        n = 0
        while time.monotonic() < stop:
            # Readers read together for a while, then all pause past the lease so the writer
            # gets in now and then (a live lease refuses it, W13).
            if (time.monotonic() - t0) % period > reading:
                time.sleep(0.01)
                continue
            got = b.get_into("hot", ctypes.addressof(buf), size)
            if got == size:
                data = buf.raw
                if _intact(data):
                    seen.add(data[0])
                else:
                    torn.append(n)
            elif got not in (-703, -704):
                errors.append(got)
            n += 1

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert torn == []
    assert errors == []
    assert wins[0] >= 2, "the writer never got between the readers' leases"
    assert len(seen) >= 2
