"""A TCP proxy in front of etcd that a test can cut: a network partition with real sockets.

``python -m devcluster.proxy LISTEN_PORT TARGET_HOST:TARGET_PORT`` listens on 127.0.0.1 and forwards each
connection to the target. SIGUSR1 cuts it like a partition that drops packets (a blackhole): connections
stay open, bytes in either direction are read and thrown away, new connections are accepted and get
nothing. SIGUSR2 heals it: the cut connections are closed (their streams lost bytes, so the clients must
reconnect, as after a real partition's TCP timeouts) and forwarding resumes. After each switch it prints
``mode=cut`` or ``mode=open`` on stdout; ``ready`` once it listens.

``EtcdProxy`` runs one as a subprocess and stops it by PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from devcluster.etcd import end_process

__all__ = ["EtcdProxy"]

CHUNK = 65536


class _Proxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self.cut = False
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            await self._swallow(reader, writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        link = (writer, up_writer)
        self._links.add(link)
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._links.discard(link)
            for end in link:
                end.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(CHUNK):
                if not self.cut:  # cut: the bytes are lost on the way
                    writer.write(data)
                    await writer.drain()
        with contextlib.suppress(OSError):
            writer.close()

    async def _swallow(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = (writer, None)
        self._links.add(link)
        try:
            with contextlib.suppress(OSError):
                while await reader.read(CHUNK):
                    pass
        finally:
            self._links.discard(link)
            writer.close()

    def switch(self, cut: bool) -> None:
        self.cut = cut
        if not cut:  # healing: the streams cut meanwhile lost bytes; their clients reconnect
            for client, upstream in list(self._links):
                client.close()
                if upstream is not None:
                    upstream.close()
        print("mode=cut" if cut else "mode=open", flush=True)


async def _serve(listen_port: int, target_host: str, target_port: int) -> None:
    proxy = _Proxy(target_host, target_port)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, proxy.switch, True)
    loop.add_signal_handler(signal.SIGUSR2, proxy.switch, False)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", listen_port)
    print("ready", flush=True)
    async with server:
        await stop.wait()
    # Leave without cancelling the connection handlers one by one (each would print a traceback): the
    # kernel closes every socket of the process.
    sys.stdout.flush()
    os._exit(0)


class EtcdProxy:
    """One proxy process: ``endpoint`` is its URL; ``cut()``/``heal()`` switch it; ``stop()`` ends it."""

    def __init__(self, listen_port: int, target: str) -> None:
        self.listen_port = listen_port
        self.target = target.removeprefix("http://").rstrip("/")
        self._proc: subprocess.Popen[str] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    @property
    def running(self) -> bool:
        return self._proc is not None

    def start(self, timeout: float = 10.0) -> EtcdProxy:
        argv = [sys.executable, "-m", "devcluster.proxy", str(self.listen_port), self.target]
        root = Path(__file__).resolve().parent.parent
        self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=root)
        self._expect("ready", timeout)
        return self

    def cut(self, timeout: float = 5.0) -> None:
        self._signal(signal.SIGUSR1, "mode=cut", timeout)

    def heal(self, timeout: float = 5.0) -> None:
        self._signal(signal.SIGUSR2, "mode=open", timeout)

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        end_process(proc, timeout)
        if proc.stdout is not None:
            proc.stdout.close()

    def _signal(self, signum: int, answer: str, timeout: float) -> None:
        assert self._proc is not None, "the proxy is not running"
        os.kill(self._proc.pid, signum)
        self._expect(answer, timeout)

    def _expect(self, answer: str, timeout: float) -> None:
        """Read stdout lines until ``answer``; RuntimeError when the deadline passes or the proxy exits."""
        assert self._proc is not None and self._proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            readable, _, _ = select.select([self._proc.stdout], [], [], max(0.0, left))
            line = self._proc.stdout.readline() if readable else ""
            if line.strip() == answer:
                return
            if (readable and not line) or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"etcd proxy on port {self.listen_port} did not say {answer!r}")

    def __enter__(self) -> EtcdProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m devcluster.proxy LISTEN_PORT TARGET_HOST:TARGET_PORT", file=sys.stderr)
        return 2
    host, _, port = argv[2].rpartition(":")
    asyncio.run(_serve(int(argv[1]), host, int(port)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
