"""GPU device pointers are refused with -600, never dereferenced (contract §1.9, W9).

Runs without a GPU: a fake `libcuda.so.1` (fake_cuda/fake_cuda.c) reports an inaccessible
(PROT_NONE) range as device memory, so any CPU access to it would crash the child process.
"""

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CHILD = textwrap.dedent(
    """
    import ctypes, sys
    fake = ctypes.CDLL(sys.argv[2])  # loaded first, as torch would load the real driver
    libc = ctypes.CDLL(None)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    size = 1 << 20
    dev = libc.mmap(None, size, 0, 0x22, -1, 0)  # PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS
    fake.fake_set_device_range(ctypes.c_uint64(dev), ctypes.c_uint64(size))
    from mooncake.store import MooncakeDistributedStore
    s = MooncakeDistributedStore()
    assert s.setup("127.0.0.1", "P2PHANDSHAKE", 16 << 20, 16 << 20, "tcp", "", sys.argv[1]) == 0
    host = ctypes.create_string_buffer(b"host bytes", 64)
    hp = ctypes.addressof(host)
    assert s.put_from("h", hp, 10) == 0
    assert s.register_buffer(dev, size) == -600
    assert s.put_from("d", dev, 4096) == -600
    assert s.get_into("h", dev, 4096) == -600
    assert s.batch_put_from(["d1", "h2"], [dev, hp], [4096, 10]) == [-600, 0]
    assert s.batch_get_into(["h", "h2"], [dev, hp + 32], [64, 32]) == [-600, 10]
    assert s.batch_put_from_multi_buffers(["d2"], [[hp, dev]], [[10, 10]]) == [-600]
    assert s.batch_get_into_multi_buffers(["h"], [[dev]], [[64]]) == [-600]
    assert s.put_from_with_metadata("d3", dev, hp, 10, 10) == -600
    assert s.register_buffer(hp, 64) == 0  # host memory still registers
    assert s.is_exist("d") == 0 and s.get("h") == b"host bytes"
    s.close()
    print("ok")
    """
)


def test_device_pointers_are_refused(master, tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler for the fake driver")
    lib = tmp_path / "libcuda.so.1"
    src = Path(__file__).parent / "fake_cuda" / "fake_cuda.c"
    subprocess.run([cc, "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(lib), str(src)], check=True)
    r = subprocess.run([sys.executable, "-c", CHILD, master, str(lib)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stdout, r.stderr[-3000:])
