"""Reading a whole prefix page by page, the next page asked for while one is handled (the I/O helpers
beside the pure ``fleetd.registry.kv``): no single request or reply grows with the registry."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

from fleetd.registry.kv import KV, RANGE_PAGE, KeyValue, RangeResult

__all__ = ["range_paged", "range_pages"]


async def range_pages(
    kv: KV, prefix: str, *, revision: int = 0, page: int = RANGE_PAGE, first: RangeResult | None = None
) -> AsyncGenerator[RangeResult, None]:
    """Every key under ``prefix``, ``page`` keys per request, each page at the first one's revision, handed
    out as they come: the next page is asked for before one is handed out, so etcd reads it while the caller
    decodes this one.
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


async def range_paged(kv: KV, prefix: str, *, revision: int = 0, page: int = RANGE_PAGE) -> RangeResult:
    """Every key under ``prefix`` at one revision (``range_pages`` gathered); ``revision`` 0 pins the
    revision of the first page."""
    kvs: list[KeyValue] = []
    pages = range_pages(kv, prefix, revision=revision, page=page)
    async with contextlib.aclosing(pages):
        async for result in pages:
            kvs.extend(result.kvs)
            revision = result.revision
    return RangeResult(tuple(kvs), revision)
