"""Tidepool's Python API.

``Store`` is the native client (``tidepool._native``): every blocking method releases the GIL,
returns Mooncake's integer codes (see ``error_name``) and is safe to call from many threads.
``connect`` is the short way to get one. The ``mooncake`` compatibility package
(wheel ``tidepool-mooncake``) re-exports these classes under Mooncake's names and adds
Mooncake's ``setup`` argument handling (``tidepool.mooncake_compat``).

``binary_path()`` finds the ``tidepool`` executable (master and storage node): ``$TIDEPOOL_BIN``
if set, else the copy shipped inside this package, else ``tidepool`` on ``$PATH``.
"""

from ._native import (  # noqa: F401
    BufferHandle,
    Descriptor,
    DiskDescriptor,
    HostMemAllocator,
    MemoryDescriptor,
    ObjectDataType,
    ReplicaDescriptor,
    ReplicaStatus,
    ReplicateConfig,
    SoftPinAction,
    Store,
    __version__,
    error_name,
    parse_bool,
    parse_size,
)
from ._bin import binary_path  # noqa: F401

DEFAULT_LOCAL_BUFFER = 16 << 20


class TidepoolError(RuntimeError):
    """Raised by ``connect`` when joining the cluster fails; ``code`` is the §2 integer."""

    def __init__(self, code: int, what: str):
        super().__init__(f"{what}: {error_name(code) or 'UNKNOWN'} ({code})")
        self.code = code


def connect(
    master_addr: str,
    *,
    host: str = "127.0.0.1",
    segment_size: int = 0,
    local_buffer_size: int = DEFAULT_LOCAL_BUFFER,
    connect_timeout_ms: int = 30000,
) -> Store:
    """Joins the cluster whose master listens at ``master_addr`` and returns the store.

    ``segment_size`` bytes are contributed to the pool (0 = pure client); ``host`` is the
    address the data server binds and advertises (``host:port`` fixes the port).
    """
    store = Store()
    rc = store._connect(master_addr, host, int(segment_size), int(local_buffer_size), connect_timeout_ms)
    if rc != 0:
        raise TidepoolError(rc, f"connect to {master_addr}")
    return store
