"""``mooncake.async_store``: every ``async_<name>(...)`` runs ``<name>`` in the default executor."""

import asyncio
import functools

from .store import MooncakeDistributedStore


class MooncakeDistributedStoreAsync(MooncakeDistributedStore):
    """``MooncakeDistributedStore`` plus awaitable ``async_*`` twins of every method."""

    def __getattr__(self, name):
        if name.startswith("async_"):
            fn = getattr(self, name[len("async_") :])

            async def call(*args, **kwargs):
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(None, functools.partial(fn, *args, **kwargs))

            call.__name__ = name
            return call
        raise AttributeError(name)
