"""`tokenwire serve` against hostile clients: huge and slow request heads, connection
floods under a small file-descriptor limit, idle keep-alive connections, odd keys and
ids. The gateway runs as a real subprocess so that its memory and descriptors can be
read from /proc."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx2
import pytest

from .hostile_helpers import connect, gateway_process, read_response, wait_until

pytestmark = pytest.mark.integration

LIMITS = """
[gateway]
max_head_bytes = 16384
max_request_headers = 50
head_timeout = {head_timeout}
keep_alive_timeout = 1
max_connections = {max_connections}
"""


def limits(head_timeout: float = 1, max_connections: int = 0) -> str:
    return LIMITS.format(head_timeout=head_timeout, max_connections=max_connections)


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    return int(response[9:12])


def test_a_huge_header_gets_431_and_costs_no_memory(tmp_path: Path) -> None:
    with gateway_process(limits(), tmp_path) as gw:
        before = gw.status("VmHWM")
        sock = connect(gw.port)
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent = 0
        block = b"a" * 65536
        try:
            while sent < 64 * 1024 * 1024:
                sock.sendall(block)
                sent += len(block)
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = read_response(sock)
        sock.close()
        # Cut off soon after the limit (plus what socket buffers hold), far from 64 MiB.
        assert sent < 32 * 1024 * 1024
        if response:  # the answer can be lost to the reset of a client still sending
            assert status_of(response) == 431
        grown = gw.status("VmHWM") - before
        assert grown < 20 * 1024, f"peak RSS grew {grown} KiB"
        assert httpx2.get(gw.url + "/healthz", timeout=5).status_code == 200


def test_too_many_header_lines_get_431(tmp_path: Path) -> None:
    with gateway_process(limits(), tmp_path) as gw:
        sock = connect(gw.port)
        lines = b"".join(b"x-h-%d: v\r\n" % i for i in range(60))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n")
        response = read_response(sock)
        assert status_of(response) == 431
        assert b"header lines" in response
        sock.close()


def test_slow_heads_are_answered_408_and_closed(tmp_path: Path) -> None:
    with gateway_process(limits(head_timeout=1), tmp_path) as gw:
        baseline = gw.fds()
        sockets = []
        for _ in range(50):
            sock = connect(gw.port, timeout=20)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
            sockets.append(sock)
        started = time.monotonic()
        for sock in sockets:
            response = read_response(sock)
            assert status_of(response) == 408, response
            sock.close()
        assert time.monotonic() - started < 15
        assert wait_until(lambda: gw.fds() <= baseline + 2, 10)


def test_idle_connections_and_keep_alive_are_closed(tmp_path: Path) -> None:
    with gateway_process(limits(head_timeout=1), tmp_path) as gw:
        idle = connect(gw.port, timeout=20)  # sends nothing at all
        kept = connect(gw.port, timeout=20)
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        response = read_response(kept)  # the answer, then the close after keep_alive_timeout
        assert status_of(response) == 200 and response.endswith(b'{"status":"ok"}')
        assert read_response(idle) == b""  # closed after head_timeout, with nothing to say
        idle.close()
        kept.close()


def test_connections_over_the_cap_get_503_not_a_hang(tmp_path: Path) -> None:
    with gateway_process(limits(head_timeout=5, max_connections=20), tmp_path) as gw:
        idle = [connect(gw.port, timeout=20) for _ in range(20)]
        assert wait_until(lambda: gw.fds() >= 20 + 5, 10)
        refused = []
        for _ in range(10):
            sock = connect(gw.port, timeout=20)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            refused.append(read_response(sock))
            sock.close()
        for response in refused:
            assert status_of(response) == 503
            assert b"retry-after: 1" in response.lower()
        # Once the idle ones are dropped (head_timeout), the gateway answers again.
        for sock in idle:
            read_response(sock)
            sock.close()
        assert httpx2.get(gw.url + "/healthz", timeout=5).status_code == 200


def test_a_connection_flood_under_a_small_fd_limit_keeps_healthz_answering(
    tmp_path: Path,
) -> None:
    # 256 descriptors: the automatic cap is (256 - 64) / 2 = 96 connections.
    with gateway_process(limits(head_timeout=2), tmp_path, nofile=256) as gw:
        flood: list[socket.socket] = []
        for _ in range(400):
            try:
                flood.append(connect(gw.port, timeout=20))
            except OSError:
                break
        # While the flood is open, /healthz gets an answer (503 at worst), quickly.
        started = time.monotonic()
        answer = None
        while answer is None and time.monotonic() - started < 15:
            try:
                answer = httpx2.get(gw.url + "/healthz", timeout=5).status_code
            except httpx2.TransportError:
                continue
        assert answer in (200, 503), answer
        for sock in flood:
            sock.close()
        assert gw.proc.poll() is None, "the gateway died"
        assert wait_until(lambda: httpx2.get(gw.url + "/healthz", timeout=5).status_code == 200, 20)
        assert gw.fds() < 100


def test_never_reading_clients_of_resumable_replies_hold_bounded_memory(
    tmp_path: Path,
) -> None:
    from .hostile_helpers import Exchange, openai_sse, raw_upstream, sse_head

    done: list[int] = []
    part = openai_sse("x" * 50_000).split(b"\n\n")[1] + b"\n\n"

    async def ten_megabytes(exchange: Exchange) -> None:
        await exchange.send(sse_head(b"connection: close\r\n"))
        for _ in range(200):
            exchange.writer.write(part)
            await exchange.writer.drain()
        await exchange.send(b"data: [DONE]\n\n")
        exchange.writer.close()
        done.append(1)

    with raw_upstream(ten_megabytes) as up:
        config = (
            f'[providers.raw]\ntype = "openai"\nbase_url = "{up.url}/v1"\n'
            '[models.raw]\nprovider = "raw"\n'
            '[gateway]\nresume = "memory"\nresume_memory_bytes = 8388608\n'
        )
        # Allocations of 32 KiB and more (the 50 KB events and their copies) are mapped
        # and unmapped one by one, so RSS follows the bytes alive, not the allocator's
        # high-water from events in transit (which rises with the machine's load).
        allocator = {"MALLOC_MMAP_THRESHOLD_": "32768"}
        with gateway_process(config, tmp_path, env=allocator) as gw:
            body = (
                b'{"model": "raw", "stream": true, "messages": [{"role": "user", "content": "x"}]}'
            )
            for _ in range(2):  # warm-up: first-use allocations are not what is measured
                warm = httpx2.post(gw.url + "/v1/chat/completions", content=body, timeout=30)
                assert warm.status_code == 200
            done.clear()
            before = gw.status("VmRSS")
            clients = []
            for _ in range(20):
                sock = connect(gw.port)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.sendall(
                    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(body), body)
                )
                clients.append(sock)  # never read
            assert wait_until(lambda: len(done) == 20, 60), f"{len(done)} of 20 replies sent"
            # Measured once the gateway has relayed every reply into its log (the
            # upstream having written them says nothing of a gateway slowed by load).
            assert wait_until(lambda: _active_streams(gw.url) == 0, 60), "replies still relayed"
            grown = gw.status("VmRSS") - before
            for sock in clients:
                sock.close()
        # 20 x 10 MB of events would be 200 MB kept (without the bound RSS grows about
        # 210 MB here); the log keeps at most 8 MiB (a few MB seen).
        assert grown < 50 * 1024, f"RSS grew {grown} KiB"


def _active_streams(url: str) -> float:
    """The gateway's ``tokenwire_active_streams`` (replies being relayed now)."""
    text = httpx2.get(url + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("tokenwire_active_streams "):
            return float(line.split()[1])
    raise AssertionError("no tokenwire_active_streams in /metrics")
