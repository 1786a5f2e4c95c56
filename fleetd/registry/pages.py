"""Reading a whole prefix page by page with the next page asked for ahead (an I/O helper beside the pure
``fleetd.registry.kv``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from fleetd.registry.kv import KV, RANGE_PAGE, RangeResult

__all__ = ["range_pages"]


async def range_pages(
    kv: KV, prefix: str, *, revision: int = 0, page: int = RANGE_PAGE, first: RangeResult | None = None
) -> AsyncGenerator[RangeResult, None]:
    """The pages of ``range_paged``, each at the first page's revision, handed out as they come: the next
    page is asked for before one is handed out, so etcd reads it while the caller decodes this one.
    ``first``: the first page (``kv.range(prefix, revision=..., limit=page)``), when the caller has it.
    Iterate under ``contextlib.aclosing`` so that stopping early drops the page asked for ahead at once."""
    result = first if first is not None else await kv.range(prefix, revision=revision, limit=page)
    revision = revision or result.revision
    while True:
        ahead: asyncio.Future[RangeResult] | None = None
        if len(result.kvs) >= page:
            start = result.kvs[-1].key + "\0"
            ahead = asyncio.ensure_future(kv.range(prefix, revision=revision, limit=page, start=start))
        try:
            yield RangeResult(result.kvs, revision)
        except BaseException:  # the caller stopped reading (or failed): nothing is left running
            if ahead is not None:
                ahead.cancel()
            raise
        if ahead is None:
            return
        result = await ahead
