"""``mooncake.engine``: importable stub until the transfer engine API lands (contract §1.1, §6).

``TransferEngine().initialize(...)`` returns -1; nothing else is functional yet.
"""

import enum


class TransferOpcode(enum.IntEnum):
    """Direction of a transfer."""

    Read = 0
    Write = 1


Read = TransferOpcode.Read
Write = TransferOpcode.Write
SUPPORT_CUDA = False


class TransferNotify:
    """A notification message (name, msg)."""

    def __init__(self, name: str = "", msg: str = ""):
        self.name = name
        self.msg = msg


class TransferEngine:
    """Stub: every operation fails with -1 (no RDMA / engine API in this phase)."""

    def initialize(self, *args, **kwargs) -> int:
        return -1

    def initialize_ext(self, *args, **kwargs) -> int:
        return -1

    def get_rpc_port(self) -> int:
        return -1

    def get_engine(self):
        return None
