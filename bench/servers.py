"""Processes the suite starts and stops: PostgreSQL, gunicorn, the Cloudinary server.

Every server listens on 127.0.0.1 only and is stopped by the process id that
started it.
"""

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
PYTHON = sys.executable
BIN = Path(PYTHON).parent


def gunicorn_args(workers):
    """Return the production command of the README with `workers` sync workers.

    A sync worker serves one request at a time. The port is added at start.
    """
    return [
        "-c",
        "python:copilot.gunicorn_conf",
        "copilot.wsgi",
        "--workers",
        str(workers),
        "--timeout",
        "120",
    ]


def free_port():
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def port_open(port, host=HOST):
    with contextlib.suppress(OSError), socket.create_connection((host, port), 1):
        return True
    return False


def ensure_postgres(port=5432):
    """Start the local PostgreSQL 15 cluster when nothing listens on its port."""
    if port_open(port):
        return
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", "start"],
        check=True,
    )
    for _ in range(30):
        if port_open(port):
            return
        time.sleep(1)
    raise RuntimeError(f"PostgreSQL does not respond on {HOST}:{port}.")


def ensure_redis(port=6379):
    """Start a local Redis without persistence when nothing listens on its port."""
    if port_open(port):
        return
    subprocess.run(
        [
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            HOST,
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        check=True,
    )
    for _ in range(30):
        if port_open(port):
            return
        time.sleep(1)
    raise RuntimeError(f"Redis does not respond on {HOST}:{port}.")


def recreate_database(url):
    """Drop and create the database that `url` names, on its own server."""
    import psycopg2
    from psycopg2 import sql

    name = url.rsplit("/", 1)[1]
    admin = psycopg2.connect(url.rsplit("/", 1)[0] + "/postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)
            )
        )
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    admin.close()


class Server:
    """A child process that serves HTTP on 127.0.0.1:port until stop()."""

    def __init__(self, name, command, env, log_path, port):
        self.name = name
        self.command = command
        self.env = env
        self.log_path = Path(log_path)
        self.port = port
        self.process = None

    def start(self, ready_path="/", timeout=60):
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed by the child
        self.process = subprocess.Popen(
            self.command,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log_path}")
            if self._answers(ready_path):
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} did not respond; see {self.log_path}")

    def _answers(self, path):
        url = f"http://{HOST}:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status < 500
        except urllib.error.HTTPError as error:
            return error.code < 500
        except OSError:
            return False

    def stop(self):
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def workers(self):
        """The worker processes of a gunicorn master."""
        return psutil.Process(self.process.pid).children()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def gunicorn(env, log_path, workers):
    port = free_port()
    command = [
        str(BIN / "gunicorn"),
        *gunicorn_args(workers),
        "--bind",
        f"{HOST}:{port}",
    ]
    return Server("gunicorn", command, env, log_path, port)


def gunicorn_command_line(workers):
    return " ".join(["gunicorn", *gunicorn_args(workers), "--bind", f"{HOST}:PORT"])


def cloudinary_server(storage_dir, log_path):
    port = free_port()
    command = [
        PYTHON,
        "-m",
        "copilot.testing.cloudinary_server",
        "--port",
        str(port),
        "--storage-dir",
        str(storage_dir),
    ]
    server = Server("Cloudinary server", command, dict(os.environ), log_path, port)
    server.cloudinary_url = (
        f"cloudinary://key:secret@cloud?upload_prefix=http://{HOST}:{port}"
    )
    return server


class RssSampler:
    """Sample the resident set size of processes every `interval` seconds."""

    def __init__(self, processes, interval=0.01):
        self.processes = list(processes)
        self.interval = interval
        self.peaks = {process.pid: 0 for process in self.processes}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for process in self.processes:
                with contextlib.suppress(psutil.Error):
                    rss = process.memory_info().rss
                    self.peaks[process.pid] = max(self.peaks[process.pid], rss)
            self.samples += 1
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def database_backends(name):
    """The PostgreSQL server processes connected to the database `name`."""
    backends = []
    for process in psutil.process_iter(["cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        if command.startswith("postgres:") and f" {name} " in command:
            backends.append(process)
    return backends


class CpuMeter:
    """CPU seconds (user and system) used by groups of processes inside a block.

    `groups` maps a name to a function that returns the processes of the group;
    it is called at the start and at the end, and a process that appears in
    between counts with all its CPU time. Children that the block waited for
    count under "client".
    """

    def __init__(self, groups):
        self.groups = groups
        self.seconds = {}

    @staticmethod
    def _times(processes):
        times = {}
        for process in processes:
            with contextlib.suppress(psutil.Error):
                cpu = process.cpu_times()
                times[process.pid] = cpu.user + cpu.system
        return times

    @staticmethod
    def _children():
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    def __enter__(self):
        self._start = {name: self._times(find()) for name, find in self.groups.items()}
        self._children_start = self._children()
        return self

    def __exit__(self, *exc):
        for name, find in self.groups.items():
            start = self._start[name]
            end = self._times(find())
            self.seconds[name] = sum(end[pid] - start.get(pid, 0) for pid in end)
        self.seconds["client"] = self._children() - self._children_start
