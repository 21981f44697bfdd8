"""The HTTP server under slow, idle and malformed clients, on real `prompt-worker run`
processes with short timeouts: idle and unfinished connections are closed, a low open-files
limit is survived with a small log, malformed requests get JSON that quotes nothing, and
the start-up line says where the service listens and what stays closed."""

from __future__ import annotations

import http.client
import json
import os
import re
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from optimizer.db import create_db_engine, migrate
from tests.support.procs import REPO, ServiceProcess, free_port

INGEST = "ing-3c5e7a9b1d-token"
# Distinctive, so any echo of it in an answer or a log line is found.
SECRET = "sk-" + "".join(f"{i:04x}" for i in range(2300))
ACCEPT_ERROR = "cannot accept connections: out of file descriptors or memory"
OUT_OF_FILES = "nearly out of file descriptors"
STARTED = "prompt-worker running"


def start(
    tmp: Path, database_url: str, max_open_files: int | None = None, **env: str
) -> ServiceProcess:
    """A service process with only the tokens given here (none from the caller's shell)."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if k not in ("ADMIN_TOKEN", "INGEST_TOKEN")}
    full_env.update(
        DATABASE_URL=database_url,
        HOST="127.0.0.1",
        PORT=str(port),
        LOG_LEVEL="INFO",
        LOG_FORMAT="kv",
        **env,
    )

    def limit_files() -> None:
        if max_open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max_open_files, max_open_files))

    log_path = tmp / f"service-{port}.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "optimizer", "run"],
            cwd=REPO,
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=limit_files,
        )
    return ServiceProcess(proc, port, log_path)


@pytest.fixture(scope="module")
def database(tmp_path_factory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("http_connections") / "prompt_worker.db"
    url = f"sqlite:///{path}"
    engine = create_db_engine(url)
    migrate(engine)
    engine.dispose()
    return path, url


@pytest.fixture(scope="module")
def slow_clients_service(database) -> Iterator[ServiceProcess]:
    """Request deadline 1 s, keep-alive a minute: what closes a connection here is the
    request deadline, not the idle timeout."""
    path, url = database
    svc = start(
        path.parent,
        url,
        HTTP_KEEPALIVE_TIMEOUT_SECONDS="60",
        HTTP_REQUEST_TIMEOUT_SECONDS="1",
        INGEST_TOKEN=INGEST,
    )
    try:
        svc.wait_healthy()
        yield svc
    finally:
        svc.kill()


def connect(svc: ServiceProcess, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", svc.port), timeout=timeout)


def closed_by_server(sock: socket.socket, keep_sending: bytes = b"", within: float = 15.0) -> bool:
    """Wait until the server closes `sock`, sending `keep_sending` now and then meanwhile."""
    sock.settimeout(0.25)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if keep_sending:
                sock.sendall(keep_sending)
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def raw_exchange(svc: ServiceProcess, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes and read the answer until the server closes the connection."""
    with connect(svc) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)
    }
    return int(status_line.split()[1]), headers, body


def assert_no_echo(text: str, secret: str) -> None:
    pieces = {secret[i : i + 8] for i in range(0, len(secret) - 8, 4)}
    assert not [p for p in pieces if p in text]


# --- unfinished requests ------------------------------------------------------------------


def test_connection_trickling_its_headers_is_closed(slow_clients_service):
    with connect(slow_clients_service) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        assert closed_by_server(sock, keep_sending=b"X-Slow: 1\r\n")


def test_connection_that_never_finishes_its_body_is_closed_without_an_error_log(
    slow_clients_service,
):
    with connect(slow_clients_service) as sock:
        sock.sendall(
            b"POST /v1/conversations HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + INGEST.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
            b'{"records": ['
        )
        assert closed_by_server(sock, keep_sending=b" ")
    time.sleep(0.5)  # the handler's last line, if any, reaches the log
    logs = slow_clients_service.logs()
    assert "level=error" not in logs
    assert "Traceback" not in logs


def test_unfinished_body_behind_pipelined_requests_is_closed(slow_clients_service):
    """aiohttp holds back requests beyond its queue of 32 and parses them later from no new
    bytes; the body of one of those must be on the clock too."""
    with connect(slow_clients_service) as sock:
        sock.sendall(
            b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
            * 40
            + b"POST /v1/conversations HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + INGEST.encode() + b"\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"a'
        )
        assert closed_by_server(sock)


def test_deadline_is_per_request_not_per_connection(slow_clients_service):
    """Quick requests on one keep-alive connection, for longer than the request deadline."""
    conn = http.client.HTTPConnection("127.0.0.1", slow_clients_service.port, timeout=10)
    try:
        sockets = set()
        for _ in range(6):
            conn.request("GET", "/health")
            response = conn.getresponse()
            assert response.status == 200
            response.read()
            sockets.add(id(conn.sock))
            time.sleep(0.4)
        assert len(sockets) == 1
    finally:
        conn.close()


def test_request_completed_inside_its_deadline_is_answered(slow_clients_service):
    """A body that arrives 0.6 s after its headers (deadline 1 s, swept every 0.25 s) is
    answered, not cut off early."""
    with connect(slow_clients_service) as sock:
        sock.sendall(
            b"POST /v1/conversations HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n"
        )
        time.sleep(0.6)
        sock.sendall(b"{}")
        sock.settimeout(5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 401")


# --- malformed requests -------------------------------------------------------------------


def test_oversized_header_gets_json_431_that_quotes_nothing(slow_clients_service):
    status, headers, body = raw_exchange(
        slow_clients_service,
        f"GET /health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SECRET}\r\n\r\n".encode(),
    )
    assert status == 431
    assert headers["content-type"].startswith("application/json")
    answer = json.loads(body)
    assert set(answer) == {"error", "field"}
    assert "8190 bytes" in answer["error"]
    assert "Bearer" not in body.decode()
    assert_no_echo(body.decode(), SECRET)
    assert_no_echo(slow_clients_service.logs(), SECRET)


@pytest.mark.parametrize(
    "request_bytes, problem",
    [
        (
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Note: a\x01private-words\r\n\r\n",
            "malformed HTTP request",
        ),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfcprivate-words\r\n\r\n", "HTTPS"),
        (b"GET /private-words HTTP/9.7\r\nHost: x\r\n\r\n", "request line"),
    ],
)
def test_malformed_request_gets_json_400_that_quotes_nothing(
    slow_clients_service, request_bytes, problem
):
    status, headers, body = raw_exchange(slow_clients_service, request_bytes)
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    answer = json.loads(body)
    assert answer["field"] is None
    assert problem in answer["error"]
    assert "private-words" not in body.decode()


@pytest.mark.parametrize("path", ["/v1/conversations", "/health", "/nowhere"])
def test_body_not_matching_its_encoding_logs_no_traceback(slow_clients_service, path):
    """The answer goes out before aiohttp drains the rest of the body; the drain's decoding
    error used to be logged as an unhandled exception with a traceback, once per request."""
    before = slow_clients_service.logs()
    for _ in range(20):
        conn = http.client.HTTPConnection("127.0.0.1", slow_clients_service.port, timeout=10)
        try:
            conn.request(
                "POST",
                path,
                body=b"x" * 4000,
                headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
            )
            response = conn.getresponse()
            assert response.status < 500
            response.read()
        finally:
            conn.close()
    time.sleep(0.5)
    added = slow_clients_service.logs()[len(before) :]
    assert "Traceback" not in added and "Unhandled exception" not in added, added
    assert added.count("\n") <= 3, added


def test_broken_chunked_body_gets_a_400_that_quotes_nothing(slow_clients_service):
    status, headers, body = raw_exchange(
        slow_clients_service,
        b"POST /v1/conversations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + INGEST.encode()
        + b"\r\nContent-Type: application/json\r\n"
        b'Transfer-Encoding: chunked\r\n\r\n2\r\n{"\r\nzz-private-words\r\n\r\n',
    )
    assert status == 400
    answer = json.loads(body)
    assert "private-words" not in answer["error"], answer


# --- idle connections and a low open-files limit ------------------------------------------


def test_idle_keepalive_connection_is_closed(database):
    path, url = database
    svc = start(path.parent, url, HTTP_KEEPALIVE_TIMEOUT_SECONDS="1")
    try:
        svc.wait_healthy()
        with connect(svc) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            assert closed_by_server(sock)
        with connect(svc) as silent:  # a connection that never sends anything
            assert closed_by_server(silent)
    finally:
        svc.kill()


def test_service_recovers_from_running_out_of_file_descriptors_with_a_short_log(database):
    path, url = database
    svc = start(
        path.parent,
        url,
        max_open_files=64,
        # Idle connections held 3 s: long enough for the once-a-second open-files watch.
        HTTP_KEEPALIVE_TIMEOUT_SECONDS="3",
        HTTP_REQUEST_TIMEOUT_SECONDS="1",
    )
    idle: list[socket.socket] = []
    try:
        svc.wait_healthy()
        idle = [connect(svc) for _ in range(100)]  # more than the service can hold open
        deadline = time.monotonic() + 60
        answered = False
        while not answered and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(svc.base_url + "/ready", timeout=5) as resp:
                    answered = resp.status == 200
            except OSError:
                time.sleep(0.2)
        assert answered, "the service never answered again:\n" + svc.logs()[-3000:]
        assert svc.get_json("/health")[0] == 200
    finally:
        for sock in idle:
            sock.close()
        svc.terminate()
    lines = svc.logs().splitlines()
    # asyncio's loop reports the failed accepts; uvloop's reports nothing (libuv drains its
    # backlog by itself), and the open-files watch says it instead. Both, throttled.
    said = [line for line in lines if ACCEPT_ERROR in line or OUT_OF_FILES in line]
    assert 1 <= len(said) <= 4, "\n".join(lines[:30])
    assert len(lines) < 40, "\n".join(lines[:40])


# --- the start-up line --------------------------------------------------------------------


def test_startup_line_says_where_it_listens_and_what_stays_closed(slow_clients_service, database):
    path, _ = database
    (started,) = slow_clients_service.events(STARTED)
    assert started["url"] == f"http://127.0.0.1:{slow_clients_service.port}"
    assert started["database"] == str(path)
    assert started["dashboard"] == "off"  # no ADMIN_TOKEN: nobody could log in
    warnings = [
        line
        for line in slow_clients_service.logs().splitlines()
        if "level=warning" in line and "_TOKEN" in line
    ]
    assert len(warnings) == 1
    assert "ADMIN_TOKEN is not set" in warnings[0] and "503" in warnings[0]


def test_startup_line_hides_database_credentials(tmp_path):
    port = free_port()  # nothing listens there: the service starts degraded
    url = f"postgresql://alice:pw-8d1c5e3f@127.0.0.1:{port}/prompts"
    svc = start(tmp_path, url)
    try:
        svc.wait_healthy()
        (started,) = svc.events(STARTED)
    finally:
        svc.kill()
    assert started["database"] == f"postgresql://127.0.0.1:{port}/prompts"
    logs = svc.logs()
    assert "pw-8d1c5e3f" not in logs and "alice" not in logs
    for token, api in (("ADMIN_TOKEN", "admin API"), ("INGEST_TOKEN", "application API")):
        (line,) = [x for x in logs.splitlines() if f"{token} is not set" in x]
        assert "level=warning" in line and api in line and "503" in line


def test_startup_with_both_tokens_warns_about_neither(database, tmp_path):
    _, url = database
    svc = start(tmp_path, url, ADMIN_TOKEN="adm-0a1b2c3d-token", INGEST_TOKEN=INGEST)
    try:
        svc.wait_healthy()
        assert svc.events(STARTED)
    finally:
        svc.kill()
    assert not re.search(r"_TOKEN is not set", svc.logs())
