"""Downloading sources: resuming, retrying and checking, against a local HTTP server (never the internet)."""

from __future__ import annotations

import datetime
import hashlib
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.metadata.download import (
    download,
    pageviews_url,
    parse_sha1sums,
    wikipedia_dump_url,
    wikipedia_sha1sums_url,
)

DATA = bytes(range(256)) * 400  # 102,400 bytes
SHA256 = hashlib.sha256(DATA).hexdigest()
SHA1 = hashlib.sha1(DATA).hexdigest()
FAST = {"backoff": 0.001, "timeout": 5, "chunk_size": 4096}


@dataclass
class Server:
    """What the local server serves, how it misbehaves next, and the requests it saw (path, Range)."""

    base: str
    files: dict[str, bytes] = field(default_factory=lambda: {"/data.bin": DATA})
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    fail: int = 0  # answer the next requests with 503
    cut: int = 0  # send only half of the next bodies, then close the connection
    delay: float = 0  # leave the next request unanswered this long, then close the connection
    ignore_range: bool = False  # answer 200 with the whole file even to a Range request

    def url(self, path: str = "/data.bin") -> str:
        return self.base + path


def handler_for(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            server.requests.append((self.path, self.headers.get("Range")))
            if server.delay:
                delay, server.delay = server.delay, 0
                time.sleep(delay)  # the client times out meanwhile, so answer nothing
                self.close_connection = True
                return
            if server.fail:
                server.fail -= 1
                self.send_error(503)
                return
            if self.path not in server.files:
                self.send_error(404)
                return
            data = server.files[self.path]
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if match and not server.ignore_range:
                start = int(match[1])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if server.cut:
                server.cut -= 1
                body = body[: len(body) // 2]
                self.close_connection = True
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """A server on 127.0.0.1 serving ``/data.bin``, shut down after the test."""
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    state = Server(base="")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(state))
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_plain_download_with_sha256(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "data.bin"
    assert download(server.url(), dest, sha256=SHA256, **FAST) == dest
    assert dest.read_bytes() == DATA and not (tmp_path / "sub" / "data.bin.part").exists()
    assert server.requests == [("/data.bin", None)]


def test_resume_from_an_existing_part(server: Server, tmp_path: Path) -> None:
    (tmp_path / "data.bin.part").write_bytes(DATA[:1000])
    download(server.url(), tmp_path / "data.bin", sha1=SHA1, sha256=SHA256.upper(), **FAST)
    assert server.requests == [("/data.bin", "bytes=1000-")]
    assert (tmp_path / "data.bin").read_bytes() == DATA and not (tmp_path / "data.bin.part").exists()


def test_a_complete_part_is_finished_on_416(server: Server, tmp_path: Path) -> None:
    (tmp_path / "data.bin.part").write_bytes(DATA)
    download(server.url(), tmp_path / "data.bin", sha256=SHA256, **FAST)
    assert server.requests == [("/data.bin", f"bytes={len(DATA)}-")]
    assert (tmp_path / "data.bin").read_bytes() == DATA


def test_a_part_longer_than_the_file_starts_again(server: Server, tmp_path: Path) -> None:
    (tmp_path / "data.bin.part").write_bytes(DATA + b"junk")
    download(server.url(), tmp_path / "data.bin", sha256=SHA256, **FAST)
    assert server.requests == [("/data.bin", f"bytes={len(DATA) + 4}-"), ("/data.bin", None)]
    assert (tmp_path / "data.bin").read_bytes() == DATA


def test_a_server_ignoring_range_restarts_from_zero(server: Server, tmp_path: Path) -> None:
    server.ignore_range = True
    (tmp_path / "data.bin.part").write_bytes(b"stale bytes")
    download(server.url(), tmp_path / "data.bin", sha256=SHA256, **FAST)
    assert server.requests == [("/data.bin", "bytes=11-")]
    assert (tmp_path / "data.bin").read_bytes() == DATA


def test_503s_are_retried(server: Server, tmp_path: Path) -> None:
    server.fail = 3
    download(server.url(), tmp_path / "data.bin", sha256=SHA256, retries=3, **FAST)
    assert len(server.requests) == 4 and (tmp_path / "data.bin").read_bytes() == DATA


def test_retries_run_out(server: Server, tmp_path: Path) -> None:
    server.fail = 10
    with pytest.raises(CurationError, match=rf"download of {server.url()} failed after 2 retries: HTTP 503"):
        download(server.url(), tmp_path / "data.bin", retries=2, **FAST)
    assert len(server.requests) == 3 and not (tmp_path / "data.bin").exists()


def test_a_timeout_is_retried(server: Server, tmp_path: Path) -> None:
    server.delay = 1
    download(server.url(), tmp_path / "data.bin", sha256=SHA256, **(FAST | {"timeout": 0.2}))
    assert len(server.requests) == 2 and (tmp_path / "data.bin").read_bytes() == DATA


def test_a_dropped_connection_resumes(server: Server, tmp_path: Path) -> None:
    server.cut = 2
    download(server.url(), tmp_path / "data.bin", sha256=SHA256, retries=1, **FAST)
    assert (tmp_path / "data.bin").read_bytes() == DATA and not (tmp_path / "data.bin.part").exists()
    assert len(server.requests) == 3 and server.requests[0] == ("/data.bin", None)
    offsets = [int(re.fullmatch(r"bytes=(\d+)-", r)[1]) for _, r in server.requests[1:]]
    assert 0 < offsets[0] < offsets[1] < len(DATA)  # each drop kept what had arrived


def test_checksum_mismatch_deletes_everything(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    message = rf"{re.escape(str(dest))} downloaded from .* has sha256 {SHA256}, expected 0{{64}}"
    with pytest.raises(CurationError, match=message):
        download(server.url(), dest, sha256="0" * 64, **FAST)
    assert not dest.exists() and not (tmp_path / "data.bin.part").exists()


def test_a_malformed_checksum_is_refused_before_downloading(server: Server, tmp_path: Path) -> None:
    with pytest.raises(CurationError, match="sha1 'abc' for .*data.bin is not 40 hexadecimal digits"):
        download(server.url(), tmp_path / "data.bin", sha1="abc", **FAST)
    assert server.requests == []


def test_404_fails_at_once(server: Server, tmp_path: Path) -> None:
    url = server.url("/missing.bin")
    with pytest.raises(CurationError, match=rf"download of {url} failed: HTTP 404"):
        download(url, tmp_path / "missing.bin", retries=3, **FAST)
    assert len(server.requests) == 1 and not list(tmp_path.iterdir())


def test_an_existing_good_dest_is_kept_without_a_request(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    download(server.url(), dest, sha256=SHA256, **FAST)
    download(server.url(), dest, sha256=SHA256, **FAST)
    download(server.url(), dest, **FAST)
    assert len(server.requests) == 1
    dest.write_bytes(b"corrupt")  # a bad one is fetched again
    download(server.url(), dest, sha1=SHA1, **FAST)
    assert len(server.requests) == 2 and dest.read_bytes() == DATA


def test_parse_sha1sums() -> None:
    text = (
        "0123456789abcdef0123456789abcdef01234567  enwiki-20240601-pages-articles.xml.bz2\n"
        "\n"
        "89ABCDEF0123456789abcdef0123456789abcdef *enwiki-20240601-abstract.xml.gz\n"
    )
    assert parse_sha1sums(text) == {
        "enwiki-20240601-pages-articles.xml.bz2": "0123456789abcdef0123456789abcdef01234567",
        "enwiki-20240601-abstract.xml.gz": "89abcdef0123456789abcdef0123456789abcdef",
    }
    with pytest.raises(CurationError, match="sha1sums line 2 is not"):
        parse_sha1sums(text.replace("\n\n", "\nnot a checksum line\n"))


def test_url_builders() -> None:
    assert wikipedia_dump_url() == "https://dumps.wikimedia.org/enwiki/latest/enwiki-latest-pages-articles.xml.bz2"
    assert (
        wikipedia_dump_url("20240601", "de")
        == "https://dumps.wikimedia.org/dewiki/20240601/dewiki-20240601-pages-articles.xml.bz2"
    )
    assert (
        wikipedia_sha1sums_url("20240601") == "https://dumps.wikimedia.org/enwiki/20240601/enwiki-20240601-sha1sums.txt"
    )
    assert (
        pageviews_url(datetime.date(2024, 3, 5), 7)
        == "https://dumps.wikimedia.org/other/pageviews/2024/2024-03/pageviews-20240305-070000.gz"
    )
    with pytest.raises(CurationError, match="dump date '2024-06-01' is neither"):
        wikipedia_dump_url("2024-06-01")
