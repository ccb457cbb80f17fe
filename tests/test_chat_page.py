"""The gateway's chat page (``/``) in headless Chromium, at a phone's width (390 px) and
a desktop's (1280 px): layout, keyboard, the ``aria-live`` reply region, live stats,
Stop (with ``DELETE /v1/streams/{id}`` on resumable gateways), the reconnecting state,
Markdown rendering that model output cannot inject HTML into, and ``?api_key=``.

Every page talks to a real gateway (uvicorn on a random port) serving the demo model;
the screenshots' Markdown reply comes from the scripted upstream (model ``markdown``),
and replies whose exact text a test needs (hostile HTML, a cut stream) are answered or
cut by Playwright's routing. Streams that must still be running when a test looks (live
stats, Stop, a dropped connection) use the demo model's ``stall@N`` fault: N tokens,
then nothing, until the client gives up.

The screenshots are written to ``build/screenshots/``: ``chat-390.png`` and
``chat-1280.png`` (a finished conversation), ``chat-390-streaming.png`` (live stats).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx2
import pytest

from tests.conftest import REPO, serve
from tests.gateway_helpers import Upstream, gateway_config, upstream_app
from tests.resume_helpers import Proxy
from tokenwire.config import from_mapping
from tokenwire.gateway import create_app

pytestmark = pytest.mark.integration

SCREENSHOTS = REPO / "build" / "screenshots"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
WIDTHS = pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["390px", "1280px"])
WAIT = 30_000  # ms: the machine may be loaded; every wait is for a state, not a time

STALL = "demo:stall@3"  # three tokens, then the stream stays open without a token
STALLING = {
    "models": {"stalling": {"provider": "demo", "model": STALL}},
    "agents": {"stalling": {"provider": "demo", "model": STALL}},
}
RESUME = {"gateway": {"resume": "memory"}}


# -- helpers --------------------------------------------------------------------------------


@contextmanager
def gateway(config: dict[str, Any] | None = None) -> Iterator[str]:
    with serve(create_app(from_mapping(config or {}))) as url:
        yield url


@dataclass
class Tab:
    page: Any
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)


@contextmanager
def chat_page(
    browser: Any, url: str, viewport: dict[str, int] = DESKTOP, path: str = "/"
) -> Iterator[Tab]:
    phone = viewport["width"] < 600
    context = browser.new_context(viewport=viewport, is_mobile=phone, has_touch=phone)
    page = context.new_page()
    page.set_default_timeout(WAIT)
    tab = Tab(page)

    def dialog(d: Any) -> None:
        tab.dialogs.append(d.message)
        d.dismiss()

    def request(r: Any) -> None:
        if r.method == "DELETE":
            tab.deletes.append(r.url)

    page.on("dialog", dialog)
    page.on("pageerror", lambda exc: tab.errors.append(str(exc)))
    page.on("request", request)
    try:
        page.goto(url + path)
        page.wait_for_selector("#agent option", state="attached")
        yield tab
        assert tab.errors == [], tab.errors
    finally:
        context.close()


def choose(page: Any, protocol: str, name: str) -> None:
    """Pick a protocol, wait for its list of agents or models, pick ``name``."""
    page.select_option("#protocol", protocol)
    page.wait_for_selector(f"#agent option[value='{name}']", state="attached")
    page.select_option("#agent", name)  # kept when the list is filled again


def send(page: Any, text: str) -> None:
    page.fill("#message", text)
    page.click("#send")


LAST_REPLY = "[...document.querySelectorAll('.assistant')].pop()"


def reply_state(page: Any, state: str) -> None:
    """The last reply is in ``state``."""
    page.wait_for_function(f"(s) => {LAST_REPLY}?.dataset.state === s", arg=state)


def tokens_shown(page: Any, count: int) -> None:
    """The last reply (still streaming) shows ``count`` tokens."""
    page.wait_for_function(
        f"""(n) => {{
          const r = {LAST_REPLY};
          return r && r.dataset.state === 'streaming' &&
                 r.querySelector('.count')?.textContent === n + ' tokens';
        }}""",
        arg=count,
    )


def active_streams(url: str) -> int:
    text = httpx2.get(url + "/metrics", timeout=10).text
    match = re.search(r"^tokenwire_active_streams (\d+)", text, re.M)
    assert match, text
    return int(match.group(1))


def until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Wait for a condition of the server's state (polled, with a generous deadline)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def agent_stream(pieces: list[str]) -> str:
    """The body of a ``/chat/stream`` reply."""
    events = [f"data: {json.dumps({'chunk': p})}\n\n" for p in pieces]
    return "".join(events) + "data: [DONE]\n\n"


def openai_stream(pieces: list[str], completion_tokens: int | None = None) -> str:
    """The body of a streamed OpenAI chat completion."""

    def chunk(choices: list[Any], **extra: Any) -> str:
        body: dict[str, Any] = {"id": "chatcmpl-t", "object": "chat.completion.chunk"}
        body.update(model="demo", choices=choices, **extra)
        return f"data: {json.dumps(body)}\n\n"

    def delta(**fields: Any) -> list[Any]:
        return [{"index": 0, "delta": fields, "finish_reason": None}]

    events = [chunk(delta(role="assistant", content=""))]
    events += [chunk(delta(content=p)) for p in pieces]
    if completion_tokens is not None:
        usage = {"prompt_tokens": 5, "completion_tokens": completion_tokens}
        events.append(chunk([], usage=usage))
    return "".join(events) + "data: [DONE]\n\n"


ROUTES = {"agent": "**/chat/stream?*", "openai": "**/v1/chat/completions"}


def answer(page: Any, protocol: str, body: str, when: str | None = None) -> None:
    """Answer the page's next requests for a reply with ``body`` (those whose URL or
    request body contains ``when``, when given; the others reach the gateway)."""

    def handle(route: Any) -> None:
        request = route.request
        if when is not None and when not in request.url + (request.post_data or ""):
            route.continue_()
            return
        route.fulfill(status=200, headers={"content-type": "text/event-stream"}, body=body)

    page.route(ROUTES[protocol], handle)


def pieces_of(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


RECORD_STATES = """() => {
  window.states = [];
  const log = document.getElementById('log');
  new MutationObserver(() => {
    const reply = [...log.querySelectorAll('.assistant')].pop();
    if (!reply) return;
    const badge = reply.querySelector('.badge');
    const shown = badge && badge.checkVisibility() ? badge.textContent : '';
    const seen = reply.dataset.state + '|' + shown;
    if (window.states[window.states.length - 1] !== seen) window.states.push(seen);
  }).observe(log, {subtree: true, childList: true, attributes: true, characterData: true});
}"""


def check_layout(page: Any, viewport: dict[str, int], button: str = "#send") -> None:
    """Every control inside the viewport, the button (Send, or Stop while a reply
    streams) clickable, nothing scrolls sideways."""
    width, height = viewport["width"], viewport["height"]
    for selector in ("#protocol", "#agent", "#message", button):
        box = page.locator(selector).bounding_box()
        assert box is not None, selector
        assert box["x"] >= 0 and box["y"] >= 0, (selector, box)
        assert box["x"] + box["width"] <= width and box["y"] + box["height"] <= height, (
            selector,
            box,
            viewport,
        )
    box = page.locator(button).bounding_box()
    assert box["width"] >= 44 and box["height"] >= 44  # a finger's target
    centre = [box["x"] + box["width"] / 2, box["y"] + box["height"] / 2]
    on_top = "([x, y, b]) => document.elementFromPoint(x, y)?.closest(b) !== null"
    assert page.evaluate(on_top, [*centre, button])
    page.click(button, trial=True)  # visible, enabled, not covered
    sizes = page.evaluate(
        """() => {
          const main = document.querySelector('main');
          return {inner: innerWidth, doc: document.documentElement.scrollWidth,
                  body: document.body.scrollWidth,
                  main: main.scrollWidth, mainBox: main.clientWidth};
        }"""
    )
    assert sizes["inner"] == width, sizes  # a phone did not zoom out to fit something wider
    assert sizes["doc"] <= width and sizes["body"] <= width, sizes
    assert sizes["main"] <= sizes["mainBox"], sizes


# -- layout, keyboard, the reply region -----------------------------------------------------


@WIDTHS
def test_layout_keyboard_and_the_reply_region(browser: Any, viewport: dict[str, int]) -> None:
    with serve(upstream_app(Upstream())) as upstream_url:
        config = gateway_config(upstream_url)
        # At about a model's pace, so that the screenshots show plausible figures.
        config["providers"]["paced"] = {"type": "demo", "speed": 4}
        config["agents"] = {"assistant": {"provider": "paced"}}
        config["models"] = {"showcase": {"provider": "oa", "model": "markdown"}}
        with gateway(config) as url, chat_page(browser, url, viewport) as tab:
            page = tab.page
            check_layout(page, viewport)
            assert page.evaluate("document.activeElement.id") == "message"

            # Shift+Enter starts a new line; Enter sends.
            page.keyboard.type("Tell me")
            page.keyboard.press("Shift+Enter")
            page.keyboard.type("a story")
            assert page.input_value("#message") == "Tell me\na story"
            assert page.locator(".msg").count() == 0
            page.keyboard.press("Enter")
            reply_state(page, "done")
            assert page.input_value("#message") == ""
            assert page.inner_text(".user") == "Tell me\na story"

            # The reply is inside the polite live region, and no longer busy.
            region = page.evaluate(
                """() => {
                  const reply = document.querySelector('.assistant');
                  const live = reply.closest('[aria-live]');
                  return {live: live && live.getAttribute('aria-live'),
                          role: live && live.getAttribute('role'),
                          busy: reply.getAttribute('aria-busy'),
                          text: live ? live.innerText : ''};
                }"""
            )
            assert region["live"] == "polite" and region["role"] == "log"
            assert region["busy"] is None
            reply = page.inner_text(".assistant .text")
            assert len(reply.split()) > 5 and reply in region["text"]
            stats = page.inner_text(".assistant .stats")
            assert "time to first token" in stats and "tokens/s" in stats

            # A second message, sent with the button, to a model answering in Markdown:
            # its wide code block scrolls in its own box, not the page.
            choose(page, "openai", "showcase")
            send(page, "Show me some Markdown")
            reply_state(page, "done")
            last = page.locator(".assistant").nth(1)
            assert last.locator("pre code.language-python").count() == 1
            assert last.locator("li").count() == 2
            check_layout(page, viewport)
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / f"chat-{viewport['width']}.png"))


# -- live stats ----------------------------------------------------------------------------


def test_stats_are_live_while_the_reply_streams(browser: Any) -> None:
    config = {
        "providers": {
            "paced": {"type": "demo", "time_to_first_token": 0.05, "time_per_token": 0.02}
        },
        "agents": {"paced": {"provider": "paced", "model": "demo:stall@40"}},
    }
    with gateway(config) as url, chat_page(browser, url, PHONE) as tab:
        page = tab.page
        choose(page, "agent", "paced")
        send(page, "hello")
        # Before the first token: the time waited so far.
        page.wait_for_selector(".assistant .stats .ttft")
        # While streaming (the reply cannot end: it stalls after 40 tokens).
        page.wait_for_function(
            """() => {
              const r = document.querySelector('.assistant');
              const count = parseInt(r.querySelector('.count')?.textContent || '0', 10);
              return r.dataset.state === 'streaming' && count >= 3 &&
                     /^\\d+(\\.\\d)? tokens\\/s$/.test(r.querySelector('.rate').textContent);
            }"""
        )
        live = page.evaluate(
            """() => {
              const r = document.querySelector('.assistant');
              const q = s => r.querySelector(s);
              return {state: r.dataset.state, busy: r.getAttribute('aria-busy'),
                      stats: q('.stats').innerText, text: q('.text').textContent,
                      ttft: q('.ttft').textContent, ttftHelp: q('.ttft').title,
                      rate: q('.rate').textContent, rateHelp: q('.rate').title};
            }"""
        )
        assert live["state"] == "streaming" and live["busy"] == "true"
        assert re.fullmatch(r"time to first token \d+ ms", live["ttft"]), live
        assert (
            "tokens after the first" in live["rateHelp"]
            and "since the first token" in live["rateHelp"]
        )
        assert "first token" in live["ttftHelp"]
        assert "streaming" in live["stats"] and live["text"]
        # The figures move on while the reply is still streaming (more tokens, or a rate
        # falling while it stalls).
        page.wait_for_function(
            """(before) => {
              const r = document.querySelector('.assistant');
              return r.dataset.state === 'streaming' &&
                     r.querySelector('.stats').innerText !== before;
            }""",
            arg=live["stats"],
        )
        check_layout(page, PHONE, button="#stop")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "chat-390-streaming.png"))
        page.click("#stop")
        reply_state(page, "stopped")
        stats = page.inner_text(".assistant .stats")
        assert "stopped" in stats and "time to first token" in stats and "tokens/s" in stats


def test_final_stats_use_the_reported_usage(browser: Any) -> None:
    with gateway() as url, chat_page(browser, url) as tab:
        page = tab.page
        choose(page, "openai", "demo")
        answer(page, "openai", openai_stream(["Hello", ", ", "world", "!"], completion_tokens=42))
        send(page, "hello")
        reply_state(page, "done")
        count = page.locator(".assistant .count")
        assert count.text_content() == "42 tokens"
        assert "usage" in (count.get_attribute("title") or "")
        assert page.text_content(".assistant .text") == "Hello, world!"


# -- Stop ----------------------------------------------------------------------------------


@pytest.mark.parametrize("resume", [True, False], ids=["resumable", "not-resumable"])
@pytest.mark.parametrize("protocol", ["agent", "openai"])
def test_stop_cancels_the_reply(browser: Any, protocol: str, resume: bool) -> None:
    config = {**STALLING, **(RESUME if resume else {})}
    with gateway(config) as url, chat_page(browser, url) as tab:
        page = tab.page
        choose(page, protocol, "stalling")
        send(page, "hello")
        tokens_shown(page, 3)
        assert active_streams(url) == 1
        assert page.is_visible("#stop") and not page.is_visible("#send")
        if resume:
            stream_id = page.get_attribute(".assistant", "data-stream-id")
            assert stream_id
            with page.expect_response(lambda r: r.request.method == "DELETE") as cancel:
                page.click("#stop")
            response = cancel.value
            assert response.url == f"{url}/v1/streams/{stream_id}"
            assert response.json() == {"id": stream_id, "object": "stream", "status": "cancelled"}
            page.wait_for_selector(".assistant[data-cancel=cancelled]", state="attached")
        else:
            page.click("#stop")
        reply_state(page, "stopped")
        assert "stopped" in page.inner_text(".assistant .stats")
        assert page.is_visible("#send") and page.is_hidden("#stop")
        # The gateway's reply is over: cancelled, or closed with its connection.
        until(lambda: active_streams(url) == 0, "the gateway's stream to end")
        if resume:
            again = httpx2.delete(f"{url}/v1/streams/{stream_id}", timeout=10)
            assert again.json()["status"] == "finished"
        else:
            assert tab.deletes == []
        # The page is ready for the next message (Escape stops too).
        send(page, "again")
        tokens_shown(page, 3)
        page.keyboard.press("Escape")
        reply_state(page, "stopped")


# -- reconnecting ----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["agent", "openai"])
def test_a_cut_reply_shows_reconnecting_and_resumes(
    browser: Any, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The first response ends after three events (as if the connection dropped): the
    page says it is reconnecting, reconnects with Last-Event-ID and shows the whole
    reply, once."""
    caplog.set_level(logging.INFO, logger="tokenwire.gateway.access")
    with gateway(RESUME) as url, chat_page(browser, url) as tab:
        page = tab.page
        if protocol != "agent":
            choose(page, protocol, "demo")
        asked: list[str | None] = []
        whole: dict[str, Any] = {}

        def handle(route: Any) -> None:
            asked.append(route.request.headers.get("last-event-id"))
            if len(asked) > 1:
                route.continue_()
                return
            response = route.fetch()
            body = response.text()
            kept: list[str] = []
            for block in body.split("\n\n"):
                kept.append(block)
                if sum("data:" in b for b in kept) == 3:
                    break
            whole.update(body=body, last=re.findall(r"^id: (.+)$", "\n".join(kept), re.M)[-1])
            headers = {
                "content-type": "text/event-stream",
                "x-tokenwire-stream-id": response.headers["x-tokenwire-stream-id"],
            }
            route.fulfill(status=200, headers=headers, body="\n\n".join(kept) + "\n\n")

        page.route(ROUTES[protocol], handle)
        page.evaluate(RECORD_STATES)
        send(page, "Tell me a story")
        reply_state(page, "done")
        states = page.evaluate("window.states")
        assert "reconnecting|reconnecting…" in states, states
        assert states.index("reconnecting|reconnecting…") < states.index("done|")
        # The second request resumed the reply after the last event received (the
        # browser's own Last-Event-ID header is not shown to the route: the gateway's
        # access log tells).
        assert len(asked) == 2 and asked[0] is None
        if protocol != "agent":
            assert asked[1] == whole["last"]
        access = [json.loads(r.getMessage()) for r in caplog.records if r.name.endswith(".access")]
        assert [line["outcome"] for line in access if line["outcome"] == "resume"] == ["resume"]
        expected = expected_text(protocol, whole["body"])
        assert len(expected) > 20
        assert page.text_content(".assistant .text") == expected


def expected_text(protocol: str, body: str) -> str:
    out = []
    for line in body.splitlines():
        if not line.startswith("data: {"):
            continue
        data = json.loads(line[6:])
        if protocol == "agent":
            out.append(data["chunk"])
        elif data.get("choices"):
            out.append(data["choices"][0]["delta"].get("content") or "")
    return "".join(out)


@pytest.mark.parametrize("protocol", ["agent", "openai"])
def test_a_dropped_connection_shows_reconnecting(browser: Any, protocol: str) -> None:
    """The network drops every connection mid-reply: "reconnecting…" until the page is
    connected again, the reply is not repeated, and Stop still cancels it."""
    with gateway({**STALLING, **RESUME}) as url:
        proxy = Proxy(int(url.rsplit(":", 1)[1]))
        try:
            with chat_page(browser, proxy.url) as tab:
                page = tab.page
                choose(page, protocol, "stalling")
                send(page, "hello")
                tokens_shown(page, 3)
                text = page.text_content(".assistant .text")
                page.evaluate(RECORD_STATES)
                before = proxy.connections
                proxy.cut()
                page.wait_for_function("window.states.includes('reconnecting|reconnecting…')")
                # ... and back to streaming once connected again.
                page.wait_for_function(
                    "window.states.lastIndexOf('streaming|streaming') >"
                    " window.states.indexOf('reconnecting|reconnecting…')"
                )
                assert proxy.connections > before
                tokens_shown(page, 3)
                assert page.text_content(".assistant .text") == text
                with page.expect_response(lambda r: r.request.method == "DELETE") as cancel:
                    page.click("#stop")
                assert cancel.value.json()["status"] == "cancelled"
                reply_state(page, "stopped")
            until(lambda: active_streams(url) == 0, "the gateway's stream to end")
        finally:
            proxy.close()


# -- Markdown, and HTML that is only text ---------------------------------------------------

HOSTILE = (
    "Some **bold**, *italic*, _more_ and `code <b>here</b>`.\n\n"
    "```python\n"
    'print("<b>hi</b>")\n'
    "for i in range(3):\n"
    "    print(i)\n"
    "```\n\n"
    "- one\n"
    "- two, see [the docs](https://example.com/docs?a=1&b=2)\n\n"
    "1. first\n"
    "2. second\n\n"
    'Tags are text: <img src=x onerror="window.pwned=1;alert(1)"> and '
    '<script>window.pwned=2;alert(2)</script> and <a href="javascript:alert(3)">a</a>, '
    "[bad](javascript:alert(4)), <b onmouseover=alert(5)>b</b> and "
    '<iframe src="javascript:alert(6)"></iframe>.\n'
)
ALLOWED_TAGS = {"p", "strong", "em", "code", "pre", "ul", "ol", "li", "a"}


@pytest.mark.parametrize("protocol", ["agent", "openai"])
def test_markdown_renders_and_html_in_replies_stays_text(browser: Any, protocol: str) -> None:
    with gateway() as url, chat_page(browser, url) as tab:
        page = tab.page
        if protocol != "agent":
            choose(page, protocol, "demo")
        # In small pieces: the reply is rendered again and again while it grows.
        pieces = pieces_of(HOSTILE, 5)
        body = agent_stream(pieces) if protocol == "agent" else openai_stream(pieces)
        answer(page, protocol, body)
        send(page, "hello")
        reply_state(page, "done")
        found = page.evaluate(
            """() => {
              const t = document.querySelector('.assistant .text');
              const all = [...t.querySelectorAll('*')];
              const texts = s => [...t.querySelectorAll(s)].map(e => e.textContent);
              return {
                tags: [...new Set(all.map(e => e.tagName.toLowerCase()))],
                handlers: all.flatMap(e => [...e.attributes].map(a => a.name))
                             .filter(n => n.startsWith('on')),
                code: [...t.querySelectorAll('pre > code')].map(c => [c.className, c.textContent]),
                inline: texts('p > code'), strong: texts('strong'), em: texts('em'),
                bullets: texts('ul > li'), numbered: texts('ol > li'),
                links: [...t.querySelectorAll('a')]
                         .map(a => [a.getAttribute('href'), a.rel, a.target, a.textContent]),
                images: document.querySelectorAll('img, iframe').length,
                scripts: document.querySelectorAll('script').length,
                pwned: window.pwned === undefined ? null : window.pwned,
                text: t.innerText,
              };
            }"""
        )
        assert set(found["tags"]) <= ALLOWED_TAGS, found["tags"]
        assert found["handlers"] == []
        assert found["code"] == [
            ["language-python", 'print("<b>hi</b>")\nfor i in range(3):\n    print(i)']
        ]
        assert found["inline"] == ["code <b>here</b>"]
        assert found["strong"] == ["bold"] and found["em"] == ["italic", "more"]
        assert found["bullets"] == ["one", "two, see the docs"]
        assert found["numbered"] == ["first", "second"]
        assert found["links"] == [
            [
                "https://example.com/docs?a=1&b=2",
                "noopener noreferrer nofollow",
                "_blank",
                "the docs",
            ]
        ]
        assert found["images"] == 0 and found["scripts"] == 1  # the page's own
        assert found["pwned"] is None and tab.dialogs == []
        for shown in (
            '<img src=x onerror="window.pwned=1;alert(1)">',
            "<script>window.pwned=2;alert(2)</script>",
            '<a href="javascript:alert(3)">a</a>',
            "[bad](javascript:alert(4))",
            "<b onmouseover=alert(5)>b</b>",
        ):
            assert shown in found["text"]
        # Hovering and clicking around the reply runs nothing either.
        page.hover(".assistant .text p:last-of-type")
        page.click(".assistant .text p:last-of-type")
        assert page.evaluate("window.pwned === undefined") and tab.dialogs == []


# -- a gateway with keys ------------------------------------------------------------------


def test_the_api_key_in_the_page_address_is_used(
    browser: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TW_TEST_PAGE_KEYS", "page-key-1")
    config = {**STALLING, "gateway": {"resume": "memory", "api_keys_env": "TW_TEST_PAGE_KEYS"}}
    with gateway(config) as url:
        with chat_page(browser, url) as tab:
            page = tab.page
            page.wait_for_selector("#notice:not([hidden])")
            assert "api_key" in page.inner_text("#notice")
            send(page, "hello")
            reply_state(page, "error")
        with chat_page(browser, url, path="/?api_key=page-key-1") as tab:
            page = tab.page
            assert page.is_hidden("#notice")
            choose(page, "agent", "stalling")  # the agents' list needs the key
            send(page, "hello")
            tokens_shown(page, 3)
            # Stop's DELETE carries the key too (a stream belongs to its key).
            with page.expect_response(lambda r: r.request.method == "DELETE") as cancel:
                page.click("#stop")
            assert cancel.value.json()["status"] == "cancelled"
            choose(page, "openai", "demo")
            send(page, "hello")
            reply_state(page, "done")
            assert len(page.locator(".assistant .text").nth(1).inner_text().split()) > 5
