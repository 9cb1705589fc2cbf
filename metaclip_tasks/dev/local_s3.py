"""A local S3 server (moto's standalone server on 127.0.0.1) for trying an ``s3://`` artifact root on
one machine; the tests and the storage benchmark use it.  Clients reach it as any S3 user would,
through the standard variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...), which
:func:`local_s3` sets while it runs.

    .venv/bin/python -m metaclip_tasks.dev.local_s3 BUCKET   # serve until Ctrl-C; prints the variables
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_s3(bucket: str, timeout: float = 60) -> Iterator[str]:
    """Run moto's S3 server with ``bucket`` created; yields ``s3://bucket``; restores the environment after."""
    server = Path(sys.executable).parent / "moto_server"
    if not server.exists():
        raise FileNotFoundError(f"{server} is missing: install the dev extra (moto[server])")
    port = _free_port()
    process = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.2)
        import s3fs

        s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
        yield f"s3://{bucket}"
    finally:
        process.terminate()
        process.wait(timeout=30)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


if __name__ == "__main__":
    with local_s3(sys.argv[1] if len(sys.argv) > 1 else "metaclip") as url:
        print(f"{url} is served; in another shell:")
        print(
            "\n".join(
                f"export {k}={os.environ[k]}"
                for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
            )
        )
        print(f"export METACLIP_ROOT={url}/root")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
