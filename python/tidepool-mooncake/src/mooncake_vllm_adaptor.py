"""vLLM v0's import path for the store (``from mooncake_vllm_adaptor import MooncakeDistributedStore``)."""

from mooncake.store import *  # noqa: F401,F403
from mooncake.store import MooncakeDistributedStore  # noqa: F401
