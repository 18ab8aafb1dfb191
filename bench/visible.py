"""202-to-visible: how long after its 202 an alert is in Alertmanager.

A steady, open-loop stream of distinct issue alerts (``--rate`` webhooks/s, sent on schedule
whether or not earlier ones were answered, so a slow answer cannot slow the load down) goes
to the bridge, which delivers to a real Alertmanager through the recording proxy
(``bench/recorder.py``). An alert is visible once Alertmanager has answered 2xx to the first
post carrying it; 202-to-visible is that moment minus the moment the load generator read the
202 (both CLOCK_MONOTONIC).

``active`` first preloads the bridge with ``--active-alerts`` distinct issue alerts (wrk,
once through, as fast as the bridge takes them; how fast they reached Alertmanager is the
delivery figure), then runs the same steady stream while the bridge's periodic re-send of
every active alert runs, once per ``--resend-interval`` (``alertmanager.resend_interval``;
each its own bridge and preload): the product's default, 60 s, is what users run; 10 s is
the stress (100,000 alerts re-sent 10,000/s, more than two cores take, so rounds never
pause). Right after the stream, the bridge's CPU per re-sent alert is sampled with no
fresh load (``resends_alone``). The measuring window starts with a re-send round: after
the warm-up the bench watches the proxy's file for a pause of ``ROUND_GAP`` s with no
re-sent post (the last round ended) and starts at the next re-sent post (the next round
began); a bridge whose re-sends never pause for ``interval`` s is in a round all the time,
and the window starts
then. The proxy's file shows how many re-sent alerts went out in the window and how long
Alertmanager took over each re-sent post (a fresh alert queued meanwhile waits for the one
under way). A fresh alert should not wait behind them. The bridge's memory with that many
alerts active is read from /proc at the end.

``--baseline DIR`` runs every measurement again on another source tree of the bridge right
after this one's (``bench.servers.bridge``'s ``checkout``), so both see the same machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench import openloop, payloads, processes, servers
from bench.ingest import CONCURRENCY, HERE
from bench.recorder import Post, Recording


@dataclass
class Sent:
    identity: str
    scheduled: float
    answered: float  # the answer's first bytes (monotonic)
    status: int


def open_loop(url: str, start: int, count: int, rate: float) -> list[Sent]:
    """Post ``count`` distinct issue alerts (numbers ``start``...) at ``rate`` per second,
    each at its scheduled time (``bench/openloop.py``)."""
    host = url.split("//", 1)[1]
    requests = [
        openloop.http_request(
            host,
            "/webhooks/sentry",
            {
                "Sentry-Hook-Resource": "event_alert",
                "Sentry-Hook-Signature": payloads.sign(body),
                "Content-Type": "application/json",
            },
            body,
        )
        for _, body in payloads.webhooks(count, metric_share=0, start=start)
    ]
    answers = asyncio.run(openloop.run(url, requests, rate))
    return [
        Sent(payloads.issue_identity(start + n), a.scheduled, a.first_byte, a.status)
        for n, a in enumerate(answers)
    ]


def first_visible(
    posts: Iterable[Post], into: dict[str, float], carried: dict[str, Post] | None = None
) -> None:
    """For every identity not yet in ``into``: when Alertmanager accepted it firing (and,
    into ``carried``, the post that carried it)."""
    for post in posts:
        if 200 <= post.status < 300:
            for identity, firing in post.alerts:
                if firing and identity not in into:
                    into[identity] = post.answered
                    if carried is not None:
                        carried[identity] = post


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def wait_visible(
    recording: Recording,
    wanted: set[str],
    seen: dict[str, float],
    limit: float,
    stall: float | None = None,
) -> list[Post]:
    """Read the proxy's file until every identity in ``wanted`` is visible, or ``limit``
    seconds passed, or (``stall``) no new one became visible for that long; returns the
    posts read meanwhile."""
    posts: list[Post] = []
    now = time.monotonic()
    deadline, progress = now + limit, now
    while True:
        new = recording.poll()
        posts += new
        known = len(seen)
        first_visible(new, seen)
        now = time.monotonic()
        if len(seen) > known:
            progress = now
        if wanted <= seen.keys() or now > deadline:
            return posts
        if stall is not None and now - progress > stall:
            return posts
        time.sleep(0.2)  # polling a file for a condition, with a deadline


# Seconds with no re-sent post that mean a re-send round ended (a round's posts follow one
# another within milliseconds; the pause between rounds at 60 s is tens of seconds).
ROUND_GAP = 2.0


def until_round(recording: Recording, own: set[str], interval: float) -> str:
    """Wait until a re-send round begins (module docstring): a post carrying an alert not in
    ``own`` (the warm-up's) is a re-send. Says how the window was placed."""
    started = quiet_since = time.monotonic()
    paused = False
    while True:
        resent = any(i not in own for p in recording.poll() for i, _ in p.alerts)
        now = time.monotonic()
        if resent and paused:
            return f"window from a round's start ({now - started:.1f} s wait)"
        if resent:
            quiet_since = now
        elif now - quiet_since >= ROUND_GAP:
            paused = True
        if not paused and now - started > interval + ROUND_GAP:
            return "window in a round under way (re-sends never paused: rounds behind)"
        if now - started > 2 * interval + 30:
            return "no re-send round seen to start the window with"
        time.sleep(0.05)  # polling a file for a condition, with a deadline


def preload(
    stack: servers.Stack, tmp: Path, count: int, recording: Recording, limit: float
) -> dict[str, float]:
    """``count`` distinct issue alerts through the bridge, once each, as fast as it takes
    them (wrk, ``bench/preload.lua``), for at most ``limit`` seconds; then until
    Alertmanager has them all (or none more arrive for 15 s)."""
    records = tmp / "preload.bin"
    payloads.write_wrk_records(records, count, metric_share=0)
    wanted = {payloads.issue_identity(n) for n in range(count)}
    seen: dict[str, float] = {}
    command = ["wrk", "-t1", f"-c{CONCURRENCY}", f"-d{limit:.0f}s", "-s"]
    command += [str(HERE / "preload.lua"), stack.url, "--", str(records), "/webhooks/sentry"]
    command += ["0", str(count)]
    start = time.monotonic()
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    accepted = time.monotonic() - start
    # PRELOAD: all were answered; RESULT (bench/wrk.lua's summary): the time limit came first.
    m = re.search(r"^(?:PRELOAD answered|RESULT requests)=(\d+) .*?non2xx=(\d+)", out, re.M)
    if not m:
        raise RuntimeError(f"wrk (preload) printed no result:\n{out}")
    wait_visible(recording, wanted, seen, 600, stall=15)
    visible = sum(1 for w in wanted if w in seen)
    last = max((seen[w] for w in wanted if w in seen), default=start)
    return {
        "accepted_s": accepted,
        "answered": min(float(count), float(m.group(1))),
        "cut": float("PRELOAD" not in out),
        "non2xx": float(m.group(2)),
        "visible": visible,
        "visible_s": last - start,
    }


def steady(
    stack: servers.Stack,
    recording: Recording,
    start: int,
    rate: float,
    seconds: float,
    align: Callable[[set[str]], str] | None = None,
    profile: Path | None = None,
) -> tuple[dict[str, float], str]:
    """The measured stream; ``align`` (given the warm-up's identities) waits for the moment
    to start it and says how it was placed."""
    count = int(rate * seconds)
    roots = dict(stack.groups)
    # A second of warm-up on other identities (first connections, first posts), not
    # measured; once they are in Alertmanager, any other alert the proxy sees is a re-send.
    warm = open_loop(stack.url, start + count, int(rate), rate)
    wait_visible(recording, {s.identity for s in warm if s.status == 202}, {}, 60)
    placed = align({s.identity for s in warm}) if align is not None else ""
    before = {name: processes.cpu_seconds(pid) for name, pid in roots.items()}
    with _profiled(roots["bridge"], seconds, profile):
        sent = open_loop(stack.url, start, count, rate)
    wanted = {s.identity for s in sent if s.status == 202}
    seen: dict[str, float] = {}
    posts = wait_visible(recording, wanted, seen, 60)
    carried: dict[str, Post] = {}
    first_visible(posts, {}, carried)
    window_end = max((s.answered for s in sent), default=0.0)
    resent = [
        p for p in posts if p.received <= window_end and any(i not in wanted for i, _ in p.alerts)
    ]
    after = {name: processes.cpu_seconds(pid) for name, pid in roots.items()}
    took = [(p.answered - p.received) * 1000 for p in resent]
    visible = [(seen[s.identity] - s.answered) * 1000 for s in sent if s.identity in seen]
    answer = [(s.answered - s.scheduled) * 1000 for s in sent]
    # Where a fresh alert's time went: from its 202 to the proxy reading the post that
    # carried it (the bridge: take, decide, queue, wait for its lane), then Alertmanager.
    # A re-send post in flight meanwhile is one a fresh alert may have waited behind.
    fresh = [(s.answered, carried[s.identity]) for s in sent if s.identity in carried]
    to_post = [(p.received - at) * 1000 for at, p in fresh]
    in_am = [(p.answered - p.received) * 1000 for _, p in fresh]
    behind = sum(
        1 for at, p in fresh if any(r.answered > at and r.received < p.received for r in resent)
    )
    out = {
        "sent": count,
        "accepted": len(wanted),
        "visible": len(visible),
        "visible_p50_ms": _pct(visible, 50),
        "visible_p99_ms": _pct(visible, 99),
        "visible_max_ms": max(visible, default=float("nan")),
        "answer_p50_ms": _pct(answer, 50),
        "answer_p99_ms": _pct(answer, 99),
        "to_post_p50_ms": _pct(to_post, 50),
        "to_post_p99_ms": _pct(to_post, 99),
        "in_am_p50_ms": _pct(in_am, 50),
        "in_am_p99_ms": _pct(in_am, 99),
        "behind_resend": behind / max(1, len(fresh)),
        "resent_alerts": sum(sum(1 for i, _ in p.alerts if i not in wanted) for p in resent),
        "resent_posts": len(resent),
        "resent_post_p50_ms": _pct(took, 50),
        "resent_post_max_ms": max(took, default=float("nan")),
    }
    for name in roots:
        out[f"cpu_us {name}"] = (after[name] - before[name]) / max(1, len(wanted)) * 1e6
    if align is not None:
        out |= resends_alone(recording, roots["bridge"])
    return out, placed


# Seconds the bridge's CPU is sampled while it only re-sends (``resends_alone``).
RESEND_SAMPLE = 5.0


def resends_alone(recording: Recording, bridge: int) -> dict[str, float]:
    """The bridge's CPU per re-sent alert with no fresh load: sampled for RESEND_SAMPLE
    seconds right after the stream, while the round the window started with usually still
    runs (at 60 s, 100,000 alerts take longer than the stream's 20 s); every post the proxy
    sees then is a re-send. NaN when the round had ended (nothing re-sent)."""
    recording.poll()  # what was posted before the sample
    before = processes.cpu_seconds(bridge)
    time.sleep(RESEND_SAMPLE)  # the measuring interval itself, not a wait for a condition
    cpu = processes.cpu_seconds(bridge) - before
    alerts = sum(len(p.alerts) for p in recording.poll() if 200 <= p.status < 300)
    return {
        "alone_resent": alerts,
        "alone_cpu_us_per_resent": cpu / alerts * 1e6 if alerts else float("nan"),
    }


@contextlib.contextmanager
def _profiled(pid: int, seconds: float, out: Path | None) -> Iterator[None]:
    """py-spy sampling the bridge through the stream (``--py-spy``: collapsed stacks in
    ``out``, a line per stack with its sample count), without pausing it."""
    if out is None:
        yield
        return
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        raise SystemExit(f"--py-spy: no {spy}; install it there first (pip install py-spy)")
    command = [str(spy), "record", "-p", str(pid), "-d", f"{seconds:.0f}", "-r", "200"]
    command += ["-f", "raw", "-o", str(out), "--nonblocking", "--threads"]
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as spy_run:
        try:
            yield
        finally:
            spy_run.wait(seconds + 30)


def _steady_line(label: str, r: dict[str, float]) -> str:
    cpu = ", ".join(
        f"{k.removeprefix('cpu_us ')} {v:.0f}" for k, v in r.items() if k.startswith("cpu_us")
    )
    alone = (
        f"; re-sends alone after it: {r['alone_resent']:.0f} alerts in {RESEND_SAMPLE:.0f} s, "
        f"bridge CPU {r['alone_cpu_us_per_resent']:.1f} us per re-sent alert"
        if "alone_resent" in r
        else ""
    )
    return (
        f"  {label}: 202-to-visible p50 {r['visible_p50_ms']:.1f} ms, "
        f"p99 {r['visible_p99_ms']:.1f} ms (max {r['visible_max_ms']:.0f}); "
        f"{r['visible']:.0f}/{r['accepted']:.0f} visible of {r['sent']:.0f} sent; "
        f"answer (from its scheduled time) p50 {r['answer_p50_ms']:.1f} ms, "
        f"p99 {r['answer_p99_ms']:.1f} ms; 202 to the post carrying it p50 "
        f"{r['to_post_p50_ms']:.1f} ms, p99 {r['to_post_p99_ms']:.1f} ms, then Alertmanager p50 "
        f"{r['in_am_p50_ms']:.1f} ms, p99 {r['in_am_p99_ms']:.1f} ms; "
        f"{r['behind_resend']:.0%} with a re-send post in flight meanwhile; "
        "CPU us/webhook over the run, re-sends included: "
        f"{cpu}; re-sent meanwhile: {r['resent_alerts']:.0f} alerts "
        f"in {r['resent_posts']:.0f} posts"
        + (
            f" (Alertmanager took p50 {r['resent_post_p50_ms']:.0f} ms, max "
            f"{r['resent_post_max_ms']:.0f} ms over one)"
            if r["resent_posts"]
            else ""
        )
        + alone
    )


@dataclass(frozen=True)
class Options:
    rate: float  # webhooks/s, open loop
    seconds: float  # of the steady stream
    # alertmanager.resend_interval while alerts are active: a bridge and preload each
    resend_intervals: tuple[float, ...]
    preload_seconds: float  # at most, for the preload
    baseline: Path | None = None  # another source tree, measured right after this one
    py_spy: Path | None = None  # a directory: the bridge sampled through each stream


def run(stores: list[servers.StoreName], options: Options, *, active: int, idle: bool) -> None:
    """``idle``: the steady stream into an otherwise idle bridge; ``active``: after
    preloading ``active`` alerts (0: skip); each on this tree, then on the baseline's."""
    print(
        f"202-to-visible: open loop at {options.rate:.0f} webhooks/s for {options.seconds:.0f} "
        "s, distinct issue alerts, through a recording proxy in front of a real Alertmanager"
    )
    runs = [(0, 0.0)] if idle else []
    runs += [(active, interval) for interval in options.resend_intervals] if active else []
    for store in stores:
        for preloaded, interval in runs:
            try:
                for checkout in [None] + ([options.baseline] if options.baseline else []):
                    _one(store, preloaded, interval, options, checkout)
            except servers.Unsupported as exc:
                print(f"  {store}: skipped: {exc}")
                break


def _one(
    store: servers.StoreName,
    preloaded: int,
    interval: float,
    options: Options,
    checkout: Path | None,
) -> None:
    name = f"{store} @baseline" if checkout else store
    label = f"{name}, idle"
    settings = {}
    if preloaded:
        settings["alertmanager"] = {"resend_interval": f"{interval:g}s"}
    with tempfile.TemporaryDirectory() as tmpdir, contextlib.ExitStack() as running:
        tmp = Path(tmpdir)
        pg = running.enter_context(servers.postgres_server()) if store == "postgres" else None
        with servers.bridge(
            tmp, store=store, pg=pg, record=True, settings=settings, checkout=checkout
        ) as stack:
            assert stack.recorded is not None
            recording = Recording(stack.recorded)
            if preloaded:
                loaded = preload(stack, tmp, preloaded, recording, options.preload_seconds)
                label = f"{name}, {loaded['visible']:,.0f} active, re-sent every {interval:g} s"
                print(
                    f"  {label}: preload: {loaded['answered']:,.0f} webhooks in "
                    f"{loaded['accepted_s']:.1f} s "
                    + ("(cut at --preload-seconds) " if loaded["cut"] else "")
                    + f"({loaded['answered'] / loaded['accepted_s']:.0f}/s accepted, "
                    f"{loaded['non2xx']:.0f} non-2xx); {loaded['visible']:,.0f} visible in "
                    "Alertmanager after "
                    f"{loaded['visible_s']:.1f} s "
                    f"({loaded['visible'] / loaded['visible_s']:.0f} alerts/s end to end)"
                )
                memory = processes.memory_mib(stack.groups["bridge"])
            align = None
            if preloaded:
                align = lambda own: until_round(recording, own, interval)  # noqa: E731
            profile = None
            if options.py_spy is not None:
                options.py_spy.mkdir(parents=True, exist_ok=True)
                profile = options.py_spy / (re.sub(r"\W+", "-", label).strip("-") + ".txt")
            result, placed = steady(
                stack,
                recording,
                preloaded + 1_000_000,
                options.rate,
                options.seconds,
                align,
                profile,
            )
            print(_steady_line(label + (f" ({placed})" if placed else ""), result), flush=True)
            if preloaded:
                after = processes.memory_mib(stack.groups["bridge"])
                print(
                    f"  {label}: bridge memory ({after['processes']:.0f} proc): RSS "
                    f"{memory['rss']:.0f} MiB after the preload, {after['rss']:.0f} MiB "
                    f"after the steady run (PSS {after['pss']:.0f} MiB, peak RSS "
                    f"{after['peak_rss']:.0f} MiB)"
                )
