"""``/metrics`` adds up across worker processes: the per-process files and their merge,
then ``tokenwire serve --workers 2`` under the official OpenAI SDK."""

from __future__ import annotations

import os
import re
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx2
import openai
import pytest

from tests.hostile_helpers import gateway_process, wait_until
from tokenwire.gateway.metrics import Registry
from tokenwire.gateway.metrics_files import (
    METRICS_DIR_ENV,
    SUFFIX,
    SeriesFile,
    SharedRegistry,
    read_worker_files,
)
from tokenwire.gateway.records import GatewayMetrics

REQUESTS = "tokenwire_requests_total"


def samples(text: str, name: str) -> dict[str, float]:
    """The samples of ``name`` in an exposition: label text -> value."""
    found = {}
    for line in text.splitlines():
        match = re.fullmatch(re.escape(name) + r"(\{.*\})? (\S+)", line)
        if match:
            found[match.group(1) or ""] = float(match.group(2))
    return found


def total(text: str, name: str) -> float:
    return sum(samples(text, name).values())


def render(metrics: GatewayMetrics) -> str:
    return metrics.registry.render().decode()


# --- the merge --------------------------------------------------------------------------


def test_counters_and_histogram_buckets_are_summed_over_workers(tmp_path: Path) -> None:
    one, two = GatewayMetrics(str(tmp_path)), GatewayMetrics(str(tmp_path))
    for _ in range(3):
        one.requests.inc("/v1/chat/completions", "demo", "200")
    two.requests.inc("/v1/chat/completions", "demo", "200")
    two.requests.inc("/v1/chat/completions", "demo", "200")
    two.requests.inc("/v1/messages", "demo", "400")
    one.ttft.observe(0.003, "demo", "demo")
    two.ttft.observe(0.004, "demo", "demo")
    two.ttft.observe(0.2, "demo", "demo")
    two.tokens.inc("demo", "demo", "output", amount=40)

    assert len(list(tmp_path.glob("*" + SUFFIX))) == 2
    for metrics in (one, two):  # whichever worker answers
        text = render(metrics)
        requests = samples(text, REQUESTS)
        assert requests == {
            '{endpoint="/v1/chat/completions",model="demo",status="200"}': 5,
            '{endpoint="/v1/messages",model="demo",status="400"}': 1,
        }
        buckets = samples(text, "tokenwire_time_to_first_token_seconds_bucket")
        assert buckets['{model="demo",upstream="demo",le="0.005"}'] == 2
        assert buckets['{model="demo",upstream="demo",le="0.1"}'] == 2
        assert buckets['{model="demo",upstream="demo",le="0.25"}'] == 3
        assert buckets['{model="demo",upstream="demo",le="+Inf"}'] == 3
        assert samples(text, "tokenwire_time_to_first_token_seconds_count") == {
            '{model="demo",upstream="demo"}': 3
        }
        ttft_sum = samples(text, "tokenwire_time_to_first_token_seconds_sum")
        assert ttft_sum['{model="demo",upstream="demo"}'] == pytest.approx(0.207)
        assert total(text, "tokenwire_tokens_total") == 40
    # Each worker's own figures stay its own.
    assert one.requests.get("/v1/chat/completions", "demo", "200") == 3


def test_one_process_renders_the_same_in_both_modes(tmp_path: Path) -> None:
    def feed(metrics: GatewayMetrics) -> None:
        metrics.requests.inc("/v1/chat/completions", 'we"ird\nmodel\\ é', "200")
        metrics.active.inc()
        metrics.active.inc()
        metrics.active.dec()
        for value in (0.0005, 0.003, 0.07, 7.0):
            metrics.gap.observe(value, "demo", "demo")
        metrics.errors.inc("timeout", "up\u2028stream")

    alone, shared = GatewayMetrics(), GatewayMetrics(str(tmp_path))
    assert type(alone.registry) is Registry
    assert isinstance(shared.registry, SharedRegistry)
    assert render(alone) == render(shared)  # nothing yet: the gauge at 0
    feed(alone)
    feed(shared)
    assert render(alone) == render(shared)


def test_gauges_count_live_processes_only_counters_every_file(tmp_path: Path) -> None:
    staying, leaving = GatewayMetrics(str(tmp_path)), GatewayMetrics(str(tmp_path))
    staying.active.inc()
    leaving.active.inc()
    leaving.active.inc()
    leaving.requests.inc("/v1/messages", "demo", "200")
    staying.requests.inc("/v1/messages", "demo", "200")
    assert samples(render(staying), "tokenwire_active_streams") == {"": 3}

    assert isinstance(leaving.registry, SharedRegistry)
    leaving.registry.close()  # its lock released, as at a worker's exit
    text = render(staying)
    assert samples(text, "tokenwire_active_streams") == {"": 1}
    assert total(text, REQUESTS) == 2  # counts never go backwards
    assert [f.alive for f in read_worker_files(str(tmp_path))].count(False) == 1


def test_a_killed_process_gauges_are_dropped(tmp_path: Path) -> None:
    """A real process, killed with SIGKILL (no clean-up of any kind) while streaming."""
    script = (
        "import sys\n"
        "from tokenwire.gateway.records import GatewayMetrics\n"
        "m = GatewayMetrics(sys.argv[1])\n"
        "m.active.inc(); m.active.inc()\n"
        "m.requests.inc('/v1/chat/completions', 'demo', '200', amount=4)\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    here = GatewayMetrics(str(tmp_path))
    here.active.inc()
    worker = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline() == "ready\n"
        text = render(here)
        assert samples(text, "tokenwire_active_streams") == {"": 3}
        assert total(text, REQUESTS) == 4
    finally:
        worker.kill()
        worker.wait(30)
        assert worker.stdin is not None and worker.stdout is not None
        worker.stdin.close()
        worker.stdout.close()
    text = render(here)
    assert samples(text, "tokenwire_active_streams") == {"": 1}
    assert total(text, REQUESTS) == 4


def test_the_series_bound_holds_per_process_and_merged(tmp_path: Path) -> None:
    registries = [SharedRegistry(str(tmp_path)) for _ in range(2)]
    counters = [r.counter("c_total", "help", ("model",), max_series=3) for r in registries]
    histograms = [r.histogram("h", "help", (1.0,), ("model",), max_series=3) for r in registries]
    for worker, (counter, histogram) in enumerate(zip(counters, histograms, strict=True)):
        for i in range(10):
            counter.inc(f"w{worker}-m{i}")
            histogram.observe(0.5, f"w{worker}-m{i}")
        assert len(counter.values) == 4 and counter.get("other") == 7
        assert len(histogram.data) == 4 and histogram.count("other") == 7

    text = registries[0].render().decode()
    merged = samples(text, "c_total")
    assert len(merged) == 4  # three series and "other", not eight
    assert sum(merged.values()) == 20  # nothing lost
    assert merged['{model="other"}'] == 14 + 3
    counts = samples(text, "h_count")
    assert len(counts) == 4 and sum(counts.values()) == 20
    for registry in registries:
        registry.close()


def test_the_file_grows_and_values_stay_current(tmp_path: Path) -> None:
    registry = SharedRegistry(str(tmp_path))
    registry.file.close()
    registry.file = SeriesFile(str(tmp_path), size=64)  # grows on the first series
    counter = registry.counter("c_total", "help", ("n",))
    for i in range(500):
        counter.inc(str(i), amount=i)
    counter.inc("0", amount=0.5)  # a slot written before every growth
    assert os.path.getsize(registry.file.path) >= registry.file.used > 500 * 16
    merged = samples(registry.render().decode(), "c_total")
    assert len(merged) == 500 and merged['{n="0"}'] == 0.5 and merged['{n="499"}'] == 499
    registry.close()


def test_stray_and_damaged_files_are_ignored(tmp_path: Path) -> None:
    metrics = GatewayMetrics(str(tmp_path))
    metrics.requests.inc("/v1/messages", "demo", "200")
    (tmp_path / f"1-dead{SUFFIX}").write_bytes(b"not a metrics file at all")
    (tmp_path / f"2-dead{SUFFIX}").write_bytes(b"")
    (tmp_path / "3-starting.tmp").write_bytes(b"x" * 100)
    (own,) = (f for f in read_worker_files(str(tmp_path)) if f.alive)
    mine = Path(own.path).read_bytes()
    used = struct.unpack_from("<Q", mine, 8)[0]  # the header's bytes in use
    (tmp_path / f"4-cut{SUFFIX}").write_bytes(mine[: used - 4])  # its one series cut off
    assert total(render(metrics), REQUESTS) == 1


def test_a_forked_child_writes_a_file_of_its_own(tmp_path: Path) -> None:
    """An app made before a fork (a preloading server): parent and child must not write
    to the same slots."""
    metrics = GatewayMetrics(str(tmp_path))
    metrics.requests.inc("/v1/messages", "demo", "200", amount=5)
    metrics.active.inc()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(read)
            metrics.requests.inc("/v1/messages", "demo", "200", amount=2)
            code = 0 if metrics.requests.get("/v1/messages", "demo", "200") == 2 else 3
        finally:
            os.write(write, b"x")
            os._exit(code)
    os.close(write)
    assert os.read(read, 1) == b"x"
    os.close(read)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    metrics.requests.inc("/v1/messages", "demo", "200")
    text = render(metrics)
    assert total(text, REQUESTS) == 8
    assert samples(text, "tokenwire_active_streams") == {"": 1}  # the parent's stream
    assert len(read_worker_files(str(tmp_path))) == 2


def test_the_directory_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(METRICS_DIR_ENV, raising=False)
    assert type(GatewayMetrics().registry) is Registry
    monkeypatch.setenv(METRICS_DIR_ENV, str(tmp_path / "metrics"))
    assert isinstance(GatewayMetrics().registry, SharedRegistry)
    assert len(list((tmp_path / "metrics").glob("*" + SUFFIX))) == 1


# --- tokenwire serve --workers 2 -----------------------------------------------------------


def chat(base_url: str) -> str:
    """One streamed completion with the official SDK, on a connection of its own."""
    with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0) as client:
        stream = client.chat.completions.create(
            model="demo",
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=8,
            stream=True,
        )
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def served_by(directory: Path) -> dict[str, float]:
    """Requests counted per worker file."""
    return {
        Path(f.path).name: sum(v[0] for _, v in f.series.get(REQUESTS, ()))
        for f in read_worker_files(str(directory))
    }


@pytest.mark.integration
def test_serve_with_workers_adds_up_metrics(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"  # where the server makes its metrics directory
    temp.mkdir()
    with gateway_process(
        "[gateway]\n",
        tmp_path,
        "--workers",
        "2",
        "--log-level",
        "warning",
        env={"TMPDIR": str(temp)},
    ) as gw:
        assert wait_until(lambda: len(list(temp.glob(f"tokenwire-metrics-*/*{SUFFIX}"))) == 2)
        (directory,) = temp.glob("tokenwire-metrics-*")

        def scrape() -> str:
            response = httpx2.get(gw.url + "/metrics", headers={"connection": "close"}, timeout=10)
            assert response.status_code == 200
            return response.text

        def every_scrape_agrees(check: Callable[[str], None]) -> None:
            for _ in range(8):  # a new connection each: both workers answer some
                check(scrape())

        # At least 6 requests, and on until both workers have served some.
        made = 0
        deadline = time.monotonic() + 120
        while made < 6 or sum(1 for n in served_by(directory).values() if n) < 2:
            assert time.monotonic() < deadline and made < 80, served_by(directory)
            assert chat(gw.url + "/v1")
            made += 1

        def all_counted(text: str) -> None:
            assert total(text, REQUESTS) == made, text
            assert samples(text, REQUESTS) == {
                '{endpoint="/v1/chat/completions",model="demo",status="200"}': made
            }
            count = samples(text, "tokenwire_time_to_first_token_seconds_count")
            assert count == {'{model="demo",upstream="demo"}': made}
            assert samples(text, "tokenwire_active_streams") == {"": 0}

        every_scrape_agrees(all_counted)

        # A worker killed outright: its counts stay, uvicorn starts another in its place.
        victim = next(name for name, n in served_by(directory).items() if n)
        pid = int(victim.split("-")[0])
        os.kill(pid, signal.SIGKILL)

        def replaced() -> bool:
            files = read_worker_files(str(directory))
            return sum(f.alive for f in files) == 2 and len(files) == 3

        assert wait_until(replaced, timeout=60), read_worker_files(str(directory))
        every_scrape_agrees(all_counted)
        for _ in range(2):
            assert chat(gw.url + "/v1")
        made += 2
        every_scrape_agrees(all_counted)
    # The server removed its metrics directory at exit.
    assert not directory.exists()
