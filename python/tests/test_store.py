"""Every MUST and SHOULD method of `MooncakeDistributedStore` with its return codes."""

import array
import ctypes

import pytest

from conftest import MiB, make_store
import mooncake.store as ms
from mooncake.store import (
    MooncakeHostMemAllocator,
    ObjectDataType,
    ReplicaStatus,
    ReplicateConfig,
    SoftPinAction,
)


def cbuf(data_or_size):
    b = ctypes.create_string_buffer(data_or_size) if isinstance(data_or_size, int) else ctypes.create_string_buffer(data_or_size, len(data_or_size))
    return b, ctypes.addressof(b)


def test_put_get_roundtrip_and_write_once(store, client):
    assert store.put("k", b"hello") == 0
    assert client.get("k") == b"hello"
    assert store.get("k") == b"hello"
    # First writer wins: a second put of a readable key returns 0 and writes nothing.
    assert client.put("k", b"other") == 0
    assert store.get("k") == b"hello"


def test_put_accepts_any_buffer(store):
    assert store.put("ba", bytearray(b"abc")) == 0
    assert store.put("mv", memoryview(b"xyzw")[1:]) == 0
    ints = array.array("i", [1, 2, 3])
    assert store.put("arr", ints) == 0
    assert store.get("ba") == b"abc"
    assert store.get("mv") == b"yzw"
    assert store.get("arr") == ints.tobytes()
    with pytest.raises(TypeError):
        store.put("bad", 12345)
    with pytest.raises(TypeError):
        store.put(7, b"v")


def test_put_empty_and_oversized(master):
    s = make_store(master, local=1 * MiB)
    assert s.put("empty", b"") == -600
    assert s.put("big", b"x" * (MiB + 1)) == -600
    assert s.put("fits", b"x" * MiB) == 0
    assert s.get("fits") == b"x" * MiB
    s.close()


def test_zero_local_buffer_disables_copying_apis(master):
    s = make_store(master, local=0)
    assert s.put("k", b"v") == -600
    buf, ptr = cbuf(b"value")
    assert s.put_from("k", ptr, 5) == 0  # zero-copy needs no local buffer
    assert s.get("k") == b""
    assert s.get_buffer("k") is None
    out, optr = cbuf(16)
    assert s.get_into("k", optr, 16) == 5
    s.close()


def test_get_missing_is_empty_bytes(store):
    assert store.get("missing") == b""
    assert store.get_batch(["missing", "also"]) == [b"", b""]


def test_is_exist_and_batch(store):
    assert store.is_exist("e") == 0
    assert store.put("e", b"1") == 0
    assert store.is_exist("e") == 1
    assert store.batch_is_exist(["e", "nope", "e"]) == [1, 0, 1]
    assert store.batch_is_exist([]) == []
    with pytest.raises(TypeError):
        store.batch_is_exist("e")


def test_get_into_rules(store):
    payload = b"0123456789" * 100
    assert store.put("obj", payload) == 0
    buf, ptr = cbuf(len(payload))
    assert store.get_into("obj", ptr, len(payload)) == len(payload)
    assert buf.raw == payload
    # LMCache partial-read rule: a larger buffer gets the object at its start, returns its size.
    big, bptr = cbuf(4 * len(payload))
    ctypes.memset(bptr, 0xAB, 4 * len(payload))
    assert store.get_into("obj", bptr, 4 * len(payload)) == len(payload)
    assert big.raw[: len(payload)] == payload
    small, sptr = cbuf(len(payload) - 1)
    assert store.get_into("obj", sptr, len(payload) - 1) == -600
    assert store.get_into("missing", bptr, 100) == -704
    assert store.get_into("obj", 0, 100) == -600
    with pytest.raises(TypeError):
        store.get_into("obj", bptr, -1)
    with pytest.raises(TypeError):
        store.get_into("obj", -5, 100)
    with pytest.raises(TypeError):
        store.get_into("obj", "ptr", 100)
    with pytest.raises(TypeError):
        store.get_into("obj", bptr, 1.5)


def test_put_from_and_register(store, client):
    region = ctypes.create_string_buffer(1 << 16)
    base = ctypes.addressof(region)
    assert store.register_buffer(base, 1 << 16) == 0
    assert store.register_buffer(base + 100, 10) == -600  # overlap
    ctypes.memmove(base, b"abcdef", 6)
    assert store.put_from("pf", base, 6) == 0
    assert store.put_from("pf0", base, 0) == -600
    assert store.put_from("pfnull", 0, 6) == -600
    with pytest.raises(TypeError):
        store.put_from("neg", base, -6)
    assert client.get("pf") == b"abcdef"
    assert store.get_into("pf", base + 1000, 100) == 6
    assert region.raw[1000:1006] == b"abcdef"
    assert store.unregister_buffer(base) == 0
    assert store.unregister_buffer(base) == -600
    assert store.unregister_buffer(base + 1) == -600
    assert store.register_buffer(0, 10) == -600
    with pytest.raises(TypeError):
        store.register_buffer(base, -1)


def test_batch_put_from_and_batch_get_into(store, client):
    n = 16
    srcs = [cbuf(bytes([i]) * (4096 + i)) for i in range(n)]
    keys = [f"b{i}" for i in range(n)]
    assert store.batch_put_from(keys, [p for _, p in srcs], [4096 + i for i in range(n)]) == [0] * n
    dsts = [cbuf(8192) for _ in range(n)]
    got = client.batch_get_into(keys, [p for _, p in dsts], [8192] * n)
    assert got == [4096 + i for i in range(n)]
    for i, (b, _) in enumerate(dsts):
        assert b.raw[: 4096 + i] == bytes([i]) * (4096 + i)
    # Mixed results keep their order; unknown keys are -704, small buffers -600.
    tiny, tptr = cbuf(10)
    res = client.batch_get_into(["b0", "missing", "b1"], [dsts[0][1], dsts[1][1], tptr], [8192, 8192, 10])
    assert res == [4096, -704, -600]
    # Existing keys report 0.
    assert store.batch_put_from(keys[:2], [srcs[0][1], srcs[1][1]], [4096, 4097]) == [0, 0]
    # Unequal list lengths: every entry -600.
    assert store.batch_put_from(["x", "y"], [srcs[0][1]], [10, 10]) == [-600, -600]
    assert client.batch_get_into(["b0", "b1"], [dsts[0][1]], [8192, 8192]) == [-600, -600]
    assert store.batch_put_from([], [], []) == []
    assert client.batch_get_into([], [], []) == []
    with pytest.raises(TypeError):
        store.batch_put_from(["x"], [srcs[0][1]], [-1])


def test_multi_buffers_gather_and_scatter(store, client):
    k, _kp = cbuf(b"K" * 1000)
    v, _vp = cbuf(b"V" * 3000)
    w, _wp = cbuf(b"W" * 24)
    res = store.batch_put_from_multi_buffers(
        ["kv0", "kv1"],
        [[_kp, _vp], [_kp, _vp, _wp]],
        [[1000, 3000], [1000, 3000, 24]],
    )
    assert res == [0, 0]
    assert client.get("kv0") == b"K" * 1000 + b"V" * 3000
    assert client.get("kv1") == b"K" * 1000 + b"V" * 3000 + b"W" * 24
    # Scatter with a different split; the sum of capacities exceeds the object.
    a, ap = cbuf(1500)
    b, bp = cbuf(3000)
    c, cp = cbuf(64)
    ctypes.memset(cp, 0x11, 64)
    got = client.batch_get_into_multi_buffers(["kv0"], [[ap, bp, cp]], [[1500, 3000, 64]])
    assert got == [4000]
    assert a.raw == b"K" * 1000 + b"V" * 500
    assert b.raw[:2500] == b"V" * 2500
    assert c.raw == b"\x11" * 64  # past the end: untouched
    # Too small in sum → -600; inner mismatch → -600 for that key only; miss → -704.
    got = client.batch_get_into_multi_buffers(
        ["kv0", "kv1", "missing"], [[ap, bp], [ap], [ap]], [[1500, 2000], [1500, 3000], [1500]]
    )
    assert got == [-600, -600, -704]
    assert store.batch_put_from_multi_buffers(["z"], [[_kp]], [[10, 20]]) == [-600]
    assert store.batch_put_from_multi_buffers(["z", "y"], [[_kp]], [[10]]) == [-600, -600]
    assert client.batch_get_into_multi_buffers([], [], []) == []


def test_remove_family(store, client):
    for i in range(5):
        assert store.put(f"rm{i}", b"x") == 0
    assert store.put("keep", b"x") == 0
    assert client.remove("rm0", force=True) == 0
    assert client.remove("rm0") == -704
    assert client.batch_remove(["rm1", "missing"], force=True) == [0, -704]
    assert client.batch_remove([]) == []
    assert client.remove_by_regex("^rm[23]$", force=True) == 2
    assert store.is_exist("rm4") == 1
    assert client.remove_all(force=True) == 2  # rm4 and keep, whoever wrote them
    assert store.is_exist("keep") == 0


def test_remove_respects_leases(store):
    assert store.put("leased", b"x") == 0
    assert store.get("leased") == b"x"  # grants a read lease
    assert store.remove("leased") == -706
    assert store.remove_all() == 0
    assert store.remove("leased", force=True) == 0


def test_get_size_hostname_health(store):
    assert store.put("sz", b"x" * 1234) == 0
    assert store.get_size("sz") == 1234
    assert store.get_size("missing") == -704
    host, _, port = store.get_hostname().rpartition(":")
    assert host == "127.0.0.1" and int(port) > 0
    assert store.health_check() == 0


def test_put_parts_put_batch_get_batch(store, client):
    header = bytes(range(28))
    assert store.put_parts("pp", header, memoryview(b"kvbytes"), bytearray(b"!")) == 0
    assert client.get("pp") == header + b"kvbytes!"
    assert store.put_parts("pp2", b"a", config=ReplicateConfig()) == 0
    assert store.put_parts("ppempty") == -600
    with pytest.raises(RuntimeError):
        store.put_parts("bad", array.array("i", [1, 2]))  # item size 4
    assert store.put_batch(["pb0", "pb1"], [b"zero", b"one"]) == 0
    assert store.put_batch(["pb2"], [b"a", b"b"]) == -600
    assert store.put_batch(["pb3", "pb4"], [b"x", b""]) == -600
    assert client.get_batch(["pb0", "missing", "pb1"]) == [b"zero", b"", b"one"]
    assert client.get_batch([]) == []


def test_get_buffer(store, client):
    data = bytes(range(256)) * 16
    assert store.put("gb", data) == 0
    h = client.get_buffer("gb")
    assert h is not None
    assert h.size() == len(data) == h.len() == len(h)
    assert bytes(memoryview(h)) == data
    assert ctypes.string_at(h.ptr(), h.size()) == data
    assert client.get_buffer("missing") is None
    hs = client.batch_get_buffer(["gb", "missing"])
    assert hs[1] is None and bytes(memoryview(hs[0])) == data
    assert client.batch_get_buffer([]) == []


def test_get_buffer_holds_local_buffer_space(master):
    s = make_store(master, local=1 * MiB)
    assert s.put("half", b"h" * (600 << 10)) == 0
    h = s.get_buffer("half")
    assert h is not None
    assert s.get_buffer("half") is None  # 600 KiB held, another 600 KiB does not fit
    del h
    assert s.get_buffer("half") is not None
    s.close()


def test_replica_desc(store, client):
    assert store.put("rd", b"x" * 100) == 0
    descs = client.get_replica_desc("rd")
    assert len(descs) == 1
    d = descs[0]
    assert d.status == ReplicaStatus.COMPLETE
    assert d.is_memory_replica() and not d.is_disk_replica()
    mem = d.get_memory_descriptor().buffer_descriptor
    assert mem.size == 100 and mem.buffer_address > 0
    assert mem.transport_endpoint
    with pytest.raises(RuntimeError):
        d.get_disk_descriptor()
    assert client.get_replica_desc("missing") == []
    got = client.batch_get_replica_desc(["rd", "missing"])
    assert list(got) == ["rd"] and len(got["rd"]) == 1


def test_replicate_config():
    c = ReplicateConfig()
    assert c.replica_num == 1 and c.soft_pin_action == SoftPinAction.PRESERVE
    assert c.soft_pin_ttl_ms is None and c.with_hard_pin is False
    assert c.preferred_segments == [] and c.preferred_segment == ""
    assert c.data_type == ObjectDataType.UNKNOWN
    assert hasattr(c, "group_ids") and c.group_ids is None
    c.preferred_segments = ["a:1", "b:2"]
    assert c.preferred_segments == ["a:1", "b:2"]
    c.soft_pin_ttl_ms = 1000
    assert c.soft_pin_ttl_ms == 1000
    c.soft_pin_ttl_ms = None
    with pytest.raises(TypeError):
        c.soft_pin_ttl_ms = -1
    with pytest.raises(TypeError):
        c.soft_pin_ttl_ms = 2**64
    assert "replica_num=1" in str(c)
    assert int(SoftPinAction.ENABLE) == 1 and int(ObjectDataType.KVCACHE) == 1
    assert ms.KVCACHE == ObjectDataType.KVCACHE and ms.COMPLETE == ReplicaStatus.COMPLETE


def test_bad_configs_are_600(store):
    c = ReplicateConfig()
    c.replica_num = 0
    assert store.put("c0", b"x", config=c) == -600
    c = ReplicateConfig()
    c.soft_pin_ttl_ms = 5
    assert store.put("c1", b"x", config=c) == -600
    c.soft_pin_action = SoftPinAction.ENABLE
    assert store.put("c1", b"x", config=c) == 0
    c = ReplicateConfig()
    c.group_ids = ["g"]
    buf, ptr = cbuf(b"ab")
    assert store.batch_put_from(["g0", "g1"], [ptr, ptr], [2, 2], config=c) == [-600, -600]
    c.group_ids = ["g", ""]
    assert store.batch_put_from(["g0", "g1"], [ptr, ptr], [2, 2], config=c) == [0, 0]
    with pytest.raises(TypeError):
        store.put("c2", b"x", config="replicas=2")


def test_preferred_segment_targets_this_client(master, store):
    other = make_store(master)
    c = ReplicateConfig()
    c.preferred_segment = other.get_hostname()
    for i in range(8):
        assert store.put(f"pref{i}", b"x" * 64, config=c) == 0
        descs = store.get_replica_desc(f"pref{i}")
        endpoint = descs[0].get_memory_descriptor().buffer_descriptor.transport_endpoint
        assert endpoint == other.get_hostname()
    other.close()


def test_host_mem_allocator(store, client):
    alloc = MooncakeHostMemAllocator()
    p = alloc.alloc(1 << 20)
    assert p != 0
    ctypes.memmove(p, b"hostmem", 7)
    assert store.register_buffer(p, 1 << 20) == 0
    assert store.put_from("hm", p, 7) == 0
    assert client.get("hm") == b"hostmem"
    assert store.unregister_buffer(p) == 0
    assert alloc.free(p) == 0
    assert alloc.free(p) == -600
    assert alloc.alloc(0) == 0
    with pytest.raises(TypeError):
        alloc.alloc(-1)


def test_sglang_warmup_sequence(store, client):
    # SGLang's HiCache warm-up: put 4 KiB under a fixed key, check it exists, read it back.
    value = b"\x01" * 4096
    assert store.put("warmup_key", value) == 0
    assert client.is_exist("warmup_key") == 1
    assert client.get("warmup_key") == value
    buf, ptr = cbuf(4096)
    assert client.batch_get_into(["warmup_key"], [ptr], [4096]) == [4096]
    assert buf.raw == value


def test_key_shapes(store, client):
    keys = [
        "model@tp_rank:0@pcp0@dcp0@pp_rank:0@group:0@" + "ab" * 32,
        "tag_model_hash_0_k",
        "emb_0123",
        "with spaces / slashes : colons",
        "ünïcødé-キー",
        "k" * 4096,
    ]
    for i, k in enumerate(keys):
        assert store.put(k, str(i).encode()) == 0
    assert client.batch_is_exist(keys) == [1] * len(keys)
    assert [client.get(k) for k in keys] == [str(i).encode() for i in range(len(keys))]


def test_large_objects_zero_copy(store, client):
    size = 8 * MiB
    src = bytearray(size)
    for i in range(0, size, 4096):
        src[i] = i // 4096 % 251
    s, sp = cbuf(bytes(src))
    assert store.put_from("large", sp, size) == 0
    d, dp = cbuf(size)
    assert client.get_into("large", dp, size) == size
    assert d.raw == bytes(src)


def test_no_space_is_200(master):
    s = make_store(master, segment=4 * MiB)
    src, sp = cbuf(MiB)
    codes = [s.put_from(f"fill{i}", sp, MiB) for i in range(12)]
    assert codes[0] == 0
    # A full pool either evicts (0) or refuses with -200; never another code.
    assert set(codes) <= {0, -200}
    big, bp = cbuf(8 * MiB)
    assert s.put_from("toobig", bp, 8 * MiB) == -200
    s.close()


def test_edge_keys_and_duplicates(store):
    b, p = cbuf(b"abcd")
    assert store.batch_put_from(["dup", "dup"], [p, p], [4, 4]) == [0, 0]
    o1, p1 = cbuf(8)
    o2, p2 = cbuf(8)
    assert store.batch_get_into(["dup", "dup"], [p1, p2], [8, 8]) == [4, 4]
    assert o1.raw[:4] == o2.raw[:4] == b"abcd"
    assert store.put("", b"x") == -600
    assert store.get("") == b""
    assert store.is_exist("") < 0
    assert store.batch_is_exist(["", "dup"])[1] == 1
    assert store.put("k" * 10000, b"x") in (0, -400)  # keys over 4 KiB may be rejected
    assert store.remove_by_regex("([") == -600  # invalid pattern


def test_hard_pinned_object_survives_eviction(master):
    s = make_store(master, segment=8 * MiB)
    pin = ReplicateConfig()
    pin.with_hard_pin = True
    src, sp = cbuf(b"P" * MiB)
    assert s.put_from("pinned", sp, MiB, config=pin) == 0
    fill, fp = cbuf(MiB)
    codes = [s.put_from(f"filler{i}", fp, MiB) for i in range(40)]
    assert set(codes) <= {0, -200} and codes.count(0) > 8  # the pool evicted to make room
    assert s.is_exist("pinned") == 1
    out, op = cbuf(MiB)
    assert s.get_into("pinned", op, MiB) == MiB and out.raw == b"P" * MiB
    s.close()
