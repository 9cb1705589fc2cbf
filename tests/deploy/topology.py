"""Separate hosts on one machine for tests/deploy/test_topology.py: network namespaces (iproute2), each joined
by a veth pair to a bridge in a hub namespace, with addresses only inside them; services are started
in them with ``ip netns exec``, and a host is "lost" by SIGKILL of every process in its namespace.

Also a script, run inside a namespace by the test (``python -m tests.deploy.topology COMMAND``), for what
must reach the S3 server or the Dask scheduler from there: ``seed``, ``contents``, ``kill-on-task``.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PREFIX = "mct"  # every namespace of a run is named mct<pid>-<host>
SUBNET = "10.213.0"  # the hosts' /24, the same in every run: each run has its own hub
CLONE_NEWNET = 0x40000000


def unavailable() -> str | None:
    """Why namespaces cannot be used here (not root, no iproute2, ``ip netns add`` refused), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not shutil.which("ip"):
        return "iproute2 (ip) is not installed"
    probe = f"{PREFIX}{os.getpid()}-probe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if made.returncode:
        return f"ip netns add is refused here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def namespace_pids(ns: str) -> list[int]:
    """The processes in the network namespace ``ns``."""
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False).stdout
    return [int(p) for p in out.split()]


def kill_namespace(ns: str, sig: int = signal.SIGKILL) -> list[str]:
    """Send ``sig`` to every process in ``ns``; returns their command lines."""
    killed = []
    for pid in namespace_pids(ns):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            os.kill(pid, sig)
            killed.append(f"{pid} {cmdline[:100]}")
        except (OSError, ProcessLookupError):
            pass
    return killed


def remove_leftovers() -> None:
    """Namespaces (and PostgreSQL folders) of earlier runs whose test process is gone: removed."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    for line in listed.splitlines():
        name = line.split()[0] if line.split() else ""
        owner = name[len(PREFIX) :].split("-")[0]
        if name.startswith(PREFIX) and owner.isdigit() and not Path(f"/proc/{owner}").exists():
            kill_namespace(name)
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    for folder in Path(tempfile.gettempdir()).glob(f"{PREFIX}*-*"):
        owner = folder.name[len(PREFIX) :].split("-")[0]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            shutil.rmtree(folder, ignore_errors=True)


class Host:
    """One namespace on the bridge: its name, its address, its services."""

    def __init__(self, name: str, ns: str, ip: str, logs: Path) -> None:
        self.name, self.ns, self.ip, self.logs = name, ns, ip, logs
        self.processes: list[subprocess.Popen] = []

    def popen(self, args: list[str], env: dict[str, str], log: str) -> subprocess.Popen:
        """Start ``args`` in this namespace, in a session of its own, its output in ``logs/<log>.log``."""
        with open(self.logs / f"{log}.log", "a") as out:
            process = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, *args],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def run(
        self, args: list[str], env: dict[str, str] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess:
        """Run ``args`` in this namespace to completion; its output captured; a failure raises with it."""
        result = subprocess.run(
            ["ip", "netns", "exec", self.ns, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode:
            raise RuntimeError(
                f"{' '.join(args[:4])} on {self.name} failed ({result.returncode}):\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in a thread that has entered this namespace (sockets it opens are this host's)."""
        outcome: dict[str, Any] = {}

        def target() -> None:
            try:
                with open(f"/run/netns/{self.ns}") as f:
                    if ctypes.CDLL(None, use_errno=True).setns(f.fileno(), CLONE_NEWNET):
                        raise OSError(ctypes.get_errno(), f"setns {self.ns}")
                outcome["value"] = fn(*args)
            except BaseException as e:  # noqa: BLE001 (re-raised in the caller's thread)
                outcome["error"] = e

        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def kill(self) -> list[str]:
        """The host is lost: SIGKILL to every process in its namespace."""
        return kill_namespace(self.ns)


class Network:
    """Hosts on one bridge, removed with every process in them on ``close``."""

    def __init__(self, logs: Path) -> None:
        self.tag = f"{PREFIX}{os.getpid()}"
        self.hub = f"{self.tag}-hub"
        self.logs = logs
        self.hosts: dict[str, Host] = {}
        self.closed = False
        logs.mkdir(parents=True, exist_ok=True)
        remove_leftovers()
        _ip("netns", "add", self.hub)
        _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.hub, "link", "set", "br0", "up")

    def add(self, name: str) -> Host:
        """A new namespace with ``eth0`` on the bridge at the next address of the subnet, and ``lo`` up."""
        index = len(self.hosts) + 2
        ns, peer = f"{self.tag}-{name}", f"h{index}"
        _ip("netns", "add", ns)
        _ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", peer, "netns", self.hub)
        _ip("-n", self.hub, "link", "set", peer, "master", "br0", "up")
        _ip("-n", ns, "addr", "add", f"{SUBNET}.{index}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        self.hosts[name] = Host(name, ns, f"{SUBNET}.{index}", self.logs)
        return self.hosts[name]

    def close(self, grace: float = 10) -> None:
        """SIGTERM every process in every namespace, SIGKILL what is left after ``grace`` s, then
        delete the namespaces (and with them their veth pairs and the bridge). Idempotent."""
        if self.closed:
            return
        self.closed = True
        names = [h.ns for h in self.hosts.values()]
        for ns in names:
            kill_namespace(ns, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while any(namespace_pids(ns) for ns in names) and time.monotonic() < deadline:
            time.sleep(0.2)
        for ns in names:
            kill_namespace(ns)
        for host in self.hosts.values():
            for process in host.processes:
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        deadline = time.monotonic() + 10
        while any(namespace_pids(ns) for ns in names) and time.monotonic() < deadline:
            time.sleep(0.1)
        for ns in [*names, self.hub]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


# -- run inside a namespace by the test: python -m tests.deploy.topology COMMAND ... ----------------------


def seed(root: str, raw: Path) -> None:
    """Create the root's bucket, upload the raw pair files under ``<bucket>/raw/`` and build the
    WordNet metadata in the root (as the match DAG would on its first run)."""
    import s3fs

    from metaclip_tasks.core.artifacts import ArtifactStore
    from metaclip_tasks.stages import plan

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    bucket = root.removeprefix("s3://").split("/")[0]
    fs.mkdir(bucket)
    for path in sorted(raw.rglob("*.parquet")):
        fs.put_file(str(path), f"{bucket}/raw/{path.relative_to(raw)}")
    plan.metadata(ArtifactStore(root), None)


def contents(root: str) -> None:
    """Print every artifact's (stage, version, files) as JSON, after checking each file's bytes on S3
    against the size and sha256 its manifest records."""
    from metaclip_tasks.core import files
    from metaclip_tasks.core.artifacts import ArtifactStore

    found = []
    for artifact in ArtifactStore(root).list():
        for f in artifact.manifest["files"]:
            fs, path = files.filesystem(artifact.path(f["name"]))
            data = fs.cat(path)
            if len(data) != f["bytes"] or hashlib.sha256(data).hexdigest() != f["sha256"]:
                raise SystemExit(f"{artifact.stage}/{artifact.version}/{f['name']} differs from its manifest")
        found.append([artifact.stage, artifact.version, artifact.manifest["files"]])
    print(json.dumps(found))


def kill_on_task(scheduler: str, prefix: str, hosts: dict[str, str], timeout: float) -> None:
    """Wait until a task whose key starts with ``prefix`` runs on a Dask worker, then lose that
    worker's host (SIGKILL to its namespace, ``hosts``: worker IP -> namespace); prints what it did."""
    from dask.distributed import Client

    with Client(scheduler, timeout=60) as client:
        print("watching", flush=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for worker, keys in client.processing().items():
                busy = [str(k) for k in keys if str(k).startswith(prefix)]
                ip = worker.removeprefix("tcp://").split(":")[0]
                if busy and ip in hosts:
                    time.sleep(0.2)  # into the task, not at its start
                    killed = kill_namespace(hosts[ip])
                    print(json.dumps({"worker": worker, "namespace": hosts[ip], "tasks": busy, "killed": killed}))
                    return
            time.sleep(0.05)
    raise SystemExit(f"no {prefix} task ran on a worker within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.deploy.topology")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("seed")
    p.add_argument("root")
    p.add_argument("raw", type=Path)
    p = commands.add_parser("contents")
    p.add_argument("root")
    p = commands.add_parser("kill-on-task")
    p.add_argument("scheduler")
    p.add_argument("prefix")
    p.add_argument("hosts", help="JSON: worker IP -> namespace")
    p.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args(argv)
    if args.command == "seed":
        seed(args.root, args.raw)
    elif args.command == "contents":
        contents(args.root)
    else:
        kill_on_task(args.scheduler, args.prefix, json.loads(args.hosts), args.timeout)


if __name__ == "__main__":
    sys.exit(main())
