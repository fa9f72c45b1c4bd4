"""``mooncake.store``: Mooncake Store's Python API backed by Tidepool (contract §1.4-§1.7)."""

from tidepool import (
    BufferHandle,
    Descriptor,
    DiskDescriptor,
    MemoryDescriptor,
    ObjectDataType,
    ReplicaDescriptor,
    ReplicaStatus,
    ReplicateConfig,
    SoftPinAction,
)
from tidepool import HostMemAllocator as MooncakeHostMemAllocator
from tidepool.mooncake_compat import MooncakeDistributedStore

__all__ = [
    "BufferHandle",
    "Descriptor",
    "DiskDescriptor",
    "MemoryDescriptor",
    "MooncakeDistributedStore",
    "MooncakeHostMemAllocator",
    "ObjectDataType",
    "ReplicaDescriptor",
    "ReplicaStatus",
    "ReplicateConfig",
    "SoftPinAction",
]

# Enum members are also module attributes, as in Mooncake's module.
for _enum, _names in (
    (
        ObjectDataType,
        "UNKNOWN KVCACHE TENSOR WEIGHT SAMPLE ACTIVATION GRADIENT OPTIMIZER_STATE METADATA GENERAL",
    ),
    (ReplicaStatus, "UNDEFINED INITIALIZED PROCESSING COMPLETE REMOVED FAILED"),
):
    for _name in _names.split():
        globals()[_name] = getattr(_enum, _name)
        __all__.append(_name)
del _enum, _names, _name
