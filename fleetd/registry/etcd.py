"""EtcdKV: the KV port on a real etcd v3, over grpc.aio. The only module that imports grpc.

- Endpoints: ``http://host:port``, ``https://host:port`` (TLS with ``ca_file`` and optional client
  ``cert_file``/``key_file``) or ``unix:/path``. An endpoint that fails (unreachable, timed out) is left for
  the next one; the call itself is sent again there only when ``fleetd.retry`` allows it: reads, revokes
  and Txns guarded by compares always, plain writes only when they were never sent.
- Every call is bounded by ``request_timeout`` seconds.
- Auth: with ``username``/``password`` the client authenticates, sends the token as ``token`` metadata and
  authenticates again when etcd says the token is invalid.
- Watches share one Watch stream (client-chosen watch IDs). After any disconnect each is re-created from its
  last delivered revision + 1; a compacted start revision ends that watch with ``WatchCompacted``.
- Keep-alives share one LeaseKeepAlive stream.
- grpc and etcd errors become ``RegistryUnavailable`` / ``RegistryError`` in one place: ``_map_error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import grpc.aio

from fleetd.errors import FleetError, RegistryError, RegistryUnavailable, RequestNotSent
from fleetd.registry.etcdpb import rpc_pb2 as pb
from fleetd.registry.etcdpb import rpc_pb2_grpc as pb_grpc
from fleetd.registry.kv import (
    MAX_TXN_OPS,
    Compare,
    CompareOp,
    CompareTarget,
    Delete,
    EventType,
    KeyValue,
    KVClosed,
    Op,
    Put,
    RangeResult,
    TxnResult,
    WatchCompacted,
    WatchEvent,
    prefix_end,
)
from fleetd.retry import Backoff, Safety, attempts, may_retry

__all__ = ["EtcdKV"]

logger = logging.getLogger(__name__)

DEFAULT_PORT = 2379  # etcd's client port, for a forwarded endpoint whose URL names none
RequestObserver = Callable[[str, float, bool], None]  # (method, seconds, failed) after each request

_LOCAL_STREAM_FAILURE = "Internal error from Core"  # grpc-core's text, not etcd's
_UNAVAILABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
_INVALID_TOKEN = "invalid auth token"
_NOT_CONNECTED = "failed to connect"  # grpc's UNAVAILABLE when no connection could be made: nothing sent
_NO_SPACE = "database space exceeded"  # etcd's NOSPACE alarm: writes refused until an operator frees space
NO_SPACE_HELP = (
    "etcd's storage quota is full (NOSPACE alarm: {details}); it refuses writes until space is freed:"
    " compact (etcdctl compact REV), defragment (etcdctl defrag), then clear the alarm (etcdctl alarm disarm)"
)
_EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc-stubs
_CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
]
_COMPARE_OPS = {
    CompareOp.EQUAL: pb.Compare.EQUAL,
    CompareOp.NOT_EQUAL: pb.Compare.NOT_EQUAL,
    CompareOp.GREATER: pb.Compare.GREATER,
    CompareOp.LESS: pb.Compare.LESS,
}
_COMPARE_TARGETS = {
    CompareTarget.VALUE: (pb.Compare.VALUE, "value"),
    CompareTarget.VERSION: (pb.Compare.VERSION, "version"),
    CompareTarget.CREATE: (pb.Compare.CREATE, "create_revision"),
    CompareTarget.MOD: (pb.Compare.MOD, "mod_revision"),
    CompareTarget.LEASE: (pb.Compare.LEASE, "lease"),
}


def _map_error(exc: BaseException, endpoint: str = "") -> RegistryError:
    """The one place where grpc and etcd failures become fleet errors."""
    if isinstance(exc, RegistryError):
        return exc
    if isinstance(exc, grpc.aio.AioRpcError):
        code, details = exc.code(), (exc.details() or "").replace("\n", " ")
        where = f" ({endpoint})" if endpoint else ""
        if _NO_SPACE in details:
            return RegistryError(NO_SPACE_HELP.format(details=details) + where)
        if code is grpc.StatusCode.UNAVAILABLE and _NOT_CONNECTED in details.lower():
            return RequestNotSent(f"etcd unreachable{where}: {details}")
        if code in _UNAVAILABLE or code is grpc.StatusCode.UNAUTHENTICATED:
            return RegistryUnavailable(f"etcd unavailable{where}: {code.name.lower()}: {details}")
        if code is grpc.StatusCode.INTERNAL and details == _LOCAL_STREAM_FAILURE:
            # grpc's own error for a write on a stream whose connection broke (etcd never saw it): the
            # caller resets the stream and a retry opens a new one, as for any unavailability
            return RegistryUnavailable(f"etcd connection lost{where}: {details}")
        return RegistryError(f"etcd refused the request{where}: {details or code.name.lower()}")
    if isinstance(exc, TimeoutError):
        return RegistryUnavailable(f"etcd did not answer in time{f' ({endpoint})' if endpoint else ''}")
    return RegistryError(f"etcd client failure: {type(exc).__name__}: {exc}")


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _s(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _kv(msg: Any) -> KeyValue:
    # _s inlined: a new leader converts 100,000s of these
    return KeyValue(
        msg.key.decode("utf-8", "surrogateescape"), msg.value.decode("utf-8", "surrogateescape"),
        msg.create_revision, msg.mod_revision, msg.version, msg.lease,
    )


def _span(key: str, prefix: bool) -> tuple[bytes, bytes]:
    """(key, range_end) for one key or for every key under a prefix ("" = all keys)."""
    if not prefix:
        return _b(key), b""
    return (_b(key) if key else b"\0"), _b(prefix_end(key))


def _stub(service: str, channel: grpc.aio.Channel) -> Any:
    return getattr(pb_grpc, f"{service}Stub")(channel)


def _request_op(op: Op) -> Any:
    if isinstance(op, Put):
        return pb.RequestOp(request_put=pb.PutRequest(key=_b(op.key), value=_b(op.value), lease=op.lease))
    if isinstance(op, Delete):
        key, end = _span(op.key, op.prefix)
        return pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=key, range_end=end))
    key, end = _span(op.key, op.prefix)
    return pb.RequestOp(request_range=pb.RangeRequest(key=key, range_end=end))


def _compare(c: Compare) -> Any:
    target, field_name = _COMPARE_TARGETS[c.target]
    msg = pb.Compare(result=_COMPARE_OPS[c.op], target=target, key=_b(c.key))
    setattr(msg, field_name, _b(str(c.value)) if c.target is CompareTarget.VALUE else int(c.value))
    return msg


@dataclass(eq=False)
class _Watcher:
    wid: int
    prefix: str
    next_rev: int  # 0 until the first create: "from now"
    prev_kv: bool
    queue: asyncio.Queue[Sequence[WatchEvent] | BaseException | None] = field(default_factory=asyncio.Queue)

    def create_request(self) -> Any:
        key, end = _span(self.prefix, True)
        create = pb.WatchCreateRequest(
            key=key, range_end=end, start_revision=self.next_rev, prev_kv=self.prev_kv, watch_id=self.wid
        )
        return pb.WatchRequest(create_request=create)


class EtcdKV:
    """The KV protocol on etcd v3. Create it inside the event loop that will use it."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        request_timeout: float,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        username: str | None = None,
        password: str | None = None,
        forwarded: Mapping[str, str] | None = None,
        observe: RequestObserver | None = None,
    ) -> None:
        """``forwarded``: endpoints that are local forwards (an SSH tunnel's ``unix:`` sockets) mapped to
        the etcd endpoint each reaches. An ``https://`` one keeps TLS end to end: the channel verifies
        etcd's certificate for the original host name (and sends its authority); others are plain.
        ``observe``: called after every request with its method, seconds and whether it failed (fleetd's
        metrics; fleetctl passes none and loads no metrics library)."""
        if not endpoints:
            raise RegistryError("no etcd endpoints given")
        self._endpoints = tuple(endpoints)
        self._timeout = request_timeout
        self._tls = (ca_file, cert_file, key_file)
        self._auth = (username, password or "") if username else None
        self._forwarded = dict(forwarded or {})
        self._observe = observe
        self._channels: dict[int, grpc.aio.Channel] = {}
        self._stubs: dict[tuple[int, str], Any] = {}  # (channel index, service): built once, not per call
        self._current = 0
        self._token: str | None = None
        self._auth_lock = asyncio.Lock()
        self._closed = False
        self._watchers: dict[int, _Watcher] = {}
        self._watch_ids = itertools.count(1)
        self._watch_outbox: asyncio.Queue[Any] = asyncio.Queue()
        self._watch_task: asyncio.Task[None] | None = None
        self._keepalive_call: Any = None
        self._keepalive_write = asyncio.Lock()  # grpc allows one outstanding write per stream
        self._keepalive_waiters: dict[int, list[asyncio.Future[float]]] = {}
        self._keepalive_task: asyncio.Task[None] | None = None

    # -- channels, endpoints, auth ---------------------------------------------------------------------------

    def _make_channel(self, endpoint: str) -> grpc.aio.Channel:
        original = self._forwarded.get(endpoint)
        if original is not None:
            url = urlsplit(original if "://" in original else f"http://{original}")
            if url.scheme != "https":
                return grpc.aio.insecure_channel(endpoint, options=_CHANNEL_OPTIONS)
            host = url.hostname or ""
            authority = url.netloc.rpartition("@")[2] or f"{host}:{DEFAULT_PORT}"
            options = [
                *_CHANNEL_OPTIONS,
                ("grpc.ssl_target_name_override", host),
                ("grpc.default_authority", authority),
            ]
            return grpc.aio.secure_channel(endpoint, self._credentials(), options=options)
        if endpoint.startswith("unix:"):
            return grpc.aio.insecure_channel(endpoint, options=_CHANNEL_OPTIONS)
        url = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
        target = url.netloc
        if url.scheme != "https":
            return grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
        return grpc.aio.secure_channel(target, self._credentials(), options=_CHANNEL_OPTIONS)

    def _credentials(self) -> grpc.ChannelCredentials:
        ca, cert, key = (Path(p).read_bytes() if p else None for p in self._tls)
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)

    def _channel(self) -> tuple[int, grpc.aio.Channel]:
        if self._closed:
            raise KVClosed()
        index = self._current
        if index not in self._channels:
            self._channels[index] = self._make_channel(self._endpoints[index])
        return index, self._channels[index]

    def _failover(self, index: int) -> None:
        if self._current == index:
            self._current = (index + 1) % len(self._endpoints)
            if len(self._endpoints) > 1:
                failed, now = self._endpoints[index], self._endpoints[self._current]
                logger.info("etcd endpoint %s failed; trying %s", failed, now)

    def _metadata(self) -> tuple[tuple[str, str], ...] | None:
        return (("token", self._token),) if self._token else None

    async def _authenticate(self, stale: str | None) -> None:
        assert self._auth is not None
        async with self._auth_lock:
            if self._token != stale:
                return  # another call already refreshed it
            name, password = self._auth
            request = pb.AuthenticateRequest(name=name, password=password)
            reply = await self._unary("Auth", "Authenticate", request)
            self._token = reply.token

    async def _unary(
        self, service: str, method: str, request: Any, safety: Safety = Safety.REPEATABLE
    ) -> Any:
        """One unary RPC within a total deadline: tried on each endpoint in turn while ``fleetd.retry``
        allows a request of ``safety`` to be sent again, and once more after a stale auth token."""
        started = time.monotonic()
        failed = False
        try:
            return await self._unary_attempts(service, method, request, safety)
        except FleetError:
            failed = True
            raise
        finally:
            if self._observe is not None:
                self._observe(method, time.monotonic() - started, failed)

    async def _unary_attempts(self, service: str, method: str, request: Any, safety: Safety) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout

        def retry_on(error: BaseException) -> bool:
            return loop.time() < deadline and may_retry(safety, error)

        # The first try runs bare: nearly every call succeeds on it, and a retry policy object per call was
        # a tenth of an agent's CPU. Only a failure that may be retried enters the policy.
        try:
            return await self._attempt(service, method, request, deadline)
        except Exception as exc:
            if len(self._endpoints) < 2 or not retry_on(exc):
                raise
        async for attempt in attempts(retry_on, tries=len(self._endpoints) - 1):
            with attempt:
                return await self._attempt(service, method, request, deadline)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _attempt(self, service: str, method: str, request: Any, deadline: float) -> Any:
        """One try on the current endpoint, and once more after a stale auth token."""
        stale = self._token
        try:
            return await self._send(service, method, request, deadline)
        except RegistryError as exc:
            if not (self._auth and _INVALID_TOKEN in str(exc)):
                raise
        await self._authenticate(stale)  # refused before it ran: the same request, once more
        return await self._send(service, method, request, deadline)

    async def _send(self, service: str, method: str, request: Any, deadline: float) -> Any:
        """One RPC on the current endpoint; an endpoint that failed is left for the next one."""
        if self._auth and self._token is None and service != "Auth":
            await self._authenticate(None)
        index, channel = self._channel()
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            if remaining <= 0:
                raise TimeoutError
            metadata = None if service == "Auth" else self._metadata()
            stub = self._stubs.get((index, service))
            if stub is None:
                stub = self._stubs[index, service] = _stub(service, channel)
            call = getattr(stub, method)
            return await call(request, timeout=remaining, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _UNAVAILABLE:
                self._failover(index)
            raise _map_error(exc, self._endpoints[index]) from exc
        except TimeoutError as exc:
            self._failover(index)
            raise _map_error(exc, self._endpoints[index]) from exc

    # -- KV --------------------------------------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        reply = await self._unary("KV", "Range", pb.RangeRequest(key=_b(key)))
        return _kv(reply.kvs[0]) if reply.kvs else None

    async def range(
        self, prefix: str, *, revision: int = 0, limit: int = 0, start: str = ""
    ) -> RangeResult:
        key, end = _span(prefix, True)
        if start > prefix:
            key = _b(start)
        request = pb.RangeRequest(key=key, range_end=end, revision=revision, limit=limit)
        reply = await self._unary("KV", "Range", request)
        return RangeResult(tuple(_kv(kv) for kv in reply.kvs), reply.header.revision)

    async def put(self, key: str, value: str, *, lease: int = 0) -> int:
        request = pb.PutRequest(key=_b(key), value=_b(value), lease=lease)
        reply = await self._unary("KV", "Put", request, Safety.ONCE)
        return int(reply.header.revision)

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        start, end = _span(key, prefix)
        request = pb.DeleteRangeRequest(key=start, range_end=end)
        reply = await self._unary("KV", "DeleteRange", request, Safety.ONCE)
        return int(reply.deleted)

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        if max(len(success), len(failure)) > MAX_TXN_OPS:
            raise RegistryError(f"a transaction may hold at most {MAX_TXN_OPS} operations")
        request = pb.TxnRequest(
            compare=[_compare(c) for c in compares],
            success=[_request_op(op) for op in success],
            failure=[_request_op(op) for op in failure],
        )
        # guarded by compares, a repeat after a lost reply fails them (read as a conflict); else a plain write
        reply = await self._unary("KV", "Txn", request, Safety.REPEATABLE if compares else Safety.ONCE)
        responses = tuple(
            tuple(_kv(kv) for kv in r.response_range.kvs) if r.HasField("response_range") else ()
            for r in reply.responses
        )
        return TxnResult(reply.succeeded, reply.header.revision, responses)

    async def compact(self, revision: int) -> None:
        """Compact etcd's history up to ``revision`` (maintenance; not part of the KV protocol)."""
        request = pb.CompactionRequest(revision=revision, physical=True)
        await self._unary("KV", "Compact", request, Safety.ONCE)

    # -- leases ----------------------------------------------------------------------------------------------

    async def grant(self, ttl: float) -> int:
        request = pb.LeaseGrantRequest(TTL=max(1, math.ceil(ttl)))
        reply = await self._unary("Lease", "LeaseGrant", request, Safety.ONCE)
        if reply.error:
            raise RegistryError(f"etcd refused the lease: {reply.error}")
        return int(reply.ID)

    async def revoke(self, lease_id: int) -> None:
        try:
            await self._unary("Lease", "LeaseRevoke", pb.LeaseRevokeRequest(ID=lease_id))
        except RegistryError as exc:
            if "lease not found" not in str(exc):
                raise

    async def time_to_live(self, lease_id: int) -> float:
        try:
            reply = await self._unary("Lease", "LeaseTimeToLive", pb.LeaseTimeToLiveRequest(ID=lease_id))
        except RegistryError as exc:
            if "lease not found" in str(exc):
                return -1.0
            raise
        return float(reply.TTL)

    async def keep_alive(self, lease_id: int) -> float:
        """Refresh a lease over the shared LeaseKeepAlive stream."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._keepalive_waiters.setdefault(lease_id, []).append(future)
        try:
            async with asyncio.timeout(self._timeout):
                async with self._keepalive_write:
                    call = await self._keepalive_stream()
                    await call.write(pb.LeaseKeepAliveRequest(ID=lease_id))
                return await future
        except (grpc.aio.AioRpcError, TimeoutError, asyncio.InvalidStateError) as exc:
            self._reset_keepalive(exc)
            raise _map_error(exc, self._endpoints[self._current]) from exc
        finally:
            if future.done() and not future.cancelled():
                future.exception()  # retrieved: a reset may have failed it after we stopped waiting
            else:
                future.cancel()
            waiters = self._keepalive_waiters.get(lease_id, [])
            if future in waiters:
                waiters.remove(future)
            if not waiters:
                self._keepalive_waiters.pop(lease_id, None)

    async def _keepalive_stream(self) -> Any:
        if self._keepalive_call is None:
            if self._auth and self._token is None:
                await self._authenticate(None)
            _, channel = self._channel()
            call = _stub("Lease", channel).LeaseKeepAlive(metadata=self._metadata())
            self._keepalive_call = call
            self._keepalive_task = asyncio.create_task(self._read_keepalives(call))
        return self._keepalive_call

    async def _read_keepalives(self, call: Any) -> None:
        try:
            while True:
                reply = await call.read()
                if reply is _EOF:
                    raise RegistryUnavailable("etcd closed the keep-alive stream")
                for future in self._keepalive_waiters.pop(reply.ID, []):
                    if not future.done():
                        future.set_result(float(reply.TTL))
        except (grpc.aio.AioRpcError, RegistryError) as exc:
            if self._keepalive_call is call:
                self._reset_keepalive(exc)

    def _reset_keepalive(self, exc: BaseException) -> None:
        call, self._keepalive_call = self._keepalive_call, None
        if call is not None:
            call.cancel()
            if not isinstance(exc, grpc.aio.AioRpcError) or exc.code() in _UNAVAILABLE:
                self._failover(self._current)
        if isinstance(exc, grpc.aio.AioRpcError) and _INVALID_TOKEN in (exc.details() or ""):
            self._token = None
        error = _map_error(exc)
        for waiters in self._keepalive_waiters.values():
            for future in waiters:
                if not future.done():
                    future.set_exception(error)

    # -- watches ---------------------------------------------------------------------------------------------

    def watch(
        self, prefix: str, start_revision: int, *, prev_kv: bool = False
    ) -> AsyncIterator[Sequence[WatchEvent]]:
        """Registered at once (not at the first ``anext``), so "from now" means from this call."""
        if self._closed:
            raise KVClosed()
        return _WatchIterator(self, _Watcher(next(self._watch_ids), prefix, start_revision, prev_kv))

    def _add_watcher(self, watcher: _Watcher) -> None:
        self._watchers[watcher.wid] = watcher
        self._watch_outbox.put_nowait(watcher.create_request())
        if self._watch_task is None:
            self._watch_task = asyncio.get_running_loop().create_task(self._run_watch_stream())

    def _drop_watcher(self, watcher: _Watcher) -> None:
        if self._watchers.pop(watcher.wid, None) is not None and not self._closed:
            cancel = pb.WatchCancelRequest(watch_id=watcher.wid)
            self._watch_outbox.put_nowait(pb.WatchRequest(cancel_request=cancel))

    async def _run_watch_stream(self) -> None:
        """Keep one Watch stream open for every watcher; re-create them all after a disconnect."""
        backoff = Backoff(0.1, 2.0)
        while not self._closed:
            index = self._current
            call: Any = None
            writer: asyncio.Task[None] | None = None
            try:
                if self._auth and self._token is None:
                    await self._authenticate(None)
                index, channel = self._channel()
                call = _stub("Watch", channel).Watch(metadata=self._metadata())
                writer = asyncio.create_task(self._write_watch_requests(call))
                while True:
                    reply = await call.read()
                    if reply is _EOF:
                        raise RegistryUnavailable("etcd closed the watch stream")
                    self._route(reply)
                    backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every failure of the stream: reconnect, resume every watch
                if isinstance(exc, grpc.aio.AioRpcError) and _INVALID_TOKEN in (exc.details() or ""):
                    self._token = None
                if self._closed:
                    return
                logger.info("watch stream to %s lost (%s); resuming", self._endpoints[index], _map_error(exc))
                self._failover(index)
                self._watch_outbox = asyncio.Queue()
                for watcher in self._watchers.values():
                    self._watch_outbox.put_nowait(watcher.create_request())
                await asyncio.sleep(backoff.next())
            finally:
                if writer is not None:
                    writer.cancel()
                if call is not None:
                    call.cancel()

    async def _write_watch_requests(self, call: Any) -> None:
        outbox = self._watch_outbox
        while True:
            await call.write(await outbox.get())

    def _route(self, reply: Any) -> None:
        watcher = self._watchers.get(reply.watch_id)
        if watcher is None:
            return
        if reply.compact_revision:
            self._watchers.pop(watcher.wid, None)
            watcher.queue.put_nowait(WatchCompacted(reply.compact_revision))
            return
        if reply.canceled:
            self._watchers.pop(watcher.wid, None)
            reason = reply.cancel_reason or "no reason given"
            watcher.queue.put_nowait(RegistryError(f"etcd canceled a watch: {reason}"))
            return
        if reply.created and watcher.next_rev == 0:
            watcher.next_rev = reply.header.revision + 1
        if reply.events:
            batch = tuple(
                WatchEvent(
                    EventType.DELETE if e.type == pb.Event.DELETE else EventType.PUT,
                    _kv(e.kv),
                    _s(e.prev_kv.value) if watcher.prev_kv and e.HasField("prev_kv") else None,
                )
                for e in reply.events
            )
            watcher.next_rev = batch[-1].kv.mod_revision + 1
            watcher.queue.put_nowait(batch)

    # -- lifecycle -------------------------------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in (self._watch_task, self._keepalive_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._keepalive_call is not None:
            self._keepalive_call.cancel()
        for watcher in self._watchers.values():
            watcher.queue.put_nowait(None)
        self._watchers.clear()
        for channel in self._channels.values():
            await channel.close(None)
        self._channels.clear()
        self._stubs.clear()


class _WatchIterator:
    """One consumer's view of the shared Watch stream; ``aclose()`` cancels its etcd watch."""

    def __init__(self, kv: EtcdKV, watcher: _Watcher) -> None:
        self._kv = kv
        self._watcher = watcher
        self._added = False
        self._done = False
        with contextlib.suppress(RuntimeError):  # no running loop yet: register at the first anext
            self._add()

    def _add(self) -> None:
        self._kv._add_watcher(self._watcher)
        self._added = True

    def __aiter__(self) -> _WatchIterator:
        return self

    async def __anext__(self) -> Sequence[WatchEvent]:
        if self._done:
            raise StopAsyncIteration
        if not self._added:
            self._add()
        item = await self._watcher.queue.get()
        if item is None or isinstance(item, BaseException):
            await self.aclose()
            if item is None:
                raise StopAsyncIteration
            raise item
        return item

    async def aclose(self) -> None:
        self._done = True
        self._kv._drop_watcher(self._watcher)
