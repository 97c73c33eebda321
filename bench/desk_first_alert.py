#!/usr/bin/env python3
"""Desk app: core event → alert painted, for the FIRST alert of a fresh app and for a later one
(issue 17 item 1). Each round starts a fresh sosdesk-desk (its own config, store, settings and
HOME) under the X display it is given, places one 911 call with sipp, then a second, and reads
the app's paint metrics (SOSDESK_DESK_METRICS: event reached the desk → card painted, after two
animation frames). Prints one line per round and p50/p95 of each kind.

    bench/desk-first-alert.sh [ROUNDS]        (default 20; runs this under Xvfb + openbox)

Uses the built app (target/debug/sosdesk-desk, or SOSDESK_DESK_APP). To compare two builds in
the same run, name them: SOSDESK_DESK_APPS="before=/tmp/a,after=/tmp/b" — rounds alternate
between them; SOSDESK_DESK_ENV_<label>="VAR=value …" adds environment variables to that one
(the same build with and without a setting). Loopback only; every process it starts is ended by it."""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "desk_e2e"))
from test_desk import SIPP, free_port, lab_ports, write_lab  # noqa: E402

APP = os.environ.get("SOSDESK_DESK_APP") or str(
    Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")).resolve() / "debug" / "sosdesk-desk")
APPS = [tuple(a.split("=", 1)) for a in os.environ.get("SOSDESK_DESK_APPS", f"app={APP}").split(",")]
WAIT = 30


def app_env(label):
    """The environment variables SOSDESK_DESK_ENV_<label> ("VAR=value VAR2=value") gives the app
    named `label`: one build compared with and without a setting in the same run."""
    pairs = os.environ.get(f"SOSDESK_DESK_ENV_{label}", "").split()
    return dict(p.split("=", 1) for p in pairs if "=" in p)


def records(path):
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def wait(cond, what):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.02)  # polling a file the app appends to, not a pause for synchronisation
    raise RuntimeError(f"timed out waiting for {what}")


def sipp(directory, scenario, *args):
    cmd = ["sipp", "-sf", str(SIPP / scenario), "-i", "127.0.0.1", "-m", "1", "-timeout", "30",
           "-timeout_error", "-nostdin", *args]
    return subprocess.Popen(cmd, cwd=directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def first_paint(metrics, known):
    """The first painted event of a call not in `known`: (call id, event → painted ms, the part
    of it in the page: event received there → painted, and of that the page's own work before
    the frames: card built, board updated)."""
    for r in records(metrics):
        if "event_to_paint_ms" in r and r["call_id"] not in known:
            return r["call_id"], r["event_to_paint_ms"], r.get("page_ms") or 0.0, r.get("dom_ms") or 0.0
    return None


def round_(n, label, app):
    d = Path(tempfile.mkdtemp(prefix=f"sosdesk-first-alert-{n}-"))
    ports = lab_ports(set())
    config = write_lab(d, ports, d / "desk.db")
    cfg_home = d / "config" / "org.sosdesk.desk"
    cfg_home.mkdir(parents=True)
    (cfg_home / "settings.json").write_text(json.dumps({"officer_name": "Bench", "theme": "system"}))
    (d / "home").mkdir()
    metrics = d / "metrics.jsonl"
    env = dict(os.environ, HOME=str(d / "home"), XDG_CONFIG_HOME=str(d / "config"),
               XDG_DATA_HOME=str(d / "data"), XDG_RUNTIME_DIR=str(d), SOSDESK_DESK_METRICS=str(metrics),
               **app_env(label))
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    log = open(d / "app.log", "w")
    app = subprocess.Popen([app, "--config", str(config)], env=env, stdout=log, stderr=subprocess.STDOUT)
    peers = []
    try:
        wait(lambda: any("page_load" in r for r in records(metrics)), "the page to show")
        out = []
        known = []
        for _ in range(2):
            peers.append(sipp(d, "provider_answer.xml", "-p", str(ports[5070])))
            peers.append(sipp(d, "caller_hangs_up.xml", f"127.0.0.1:{ports[5060]}", "-s", "911",
                              "-set", "hold_ms", "300", "-p", str(free_port(set(ports.values())))))
            call, ms, page, dom = wait(lambda: first_paint(metrics, known), "the alert to be painted")
            known.append(call)
            out.append((ms, page, dom))
            for p in peers:
                p.wait(timeout=WAIT)
            peers.clear()
        return out
    finally:
        for p in peers:
            p.kill()
        app.terminate()
        try:
            app.wait(timeout=10)
        except subprocess.TimeoutExpired:
            app.kill()
        log.close()


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    results = {label: ([], []) for label, _ in APPS}
    for n in range(1, rounds + 1):
        for label, app in APPS:
            a, b = round_(n, label, app)
            results[label][0].append(a)
            results[label][1].append(b)
            print(f"{label} round {n}: first alert {a[0]:.1f} ms (in the page {a[1]:.1f}, its DOM work {a[2]:.1f}), "
                  f"second call {b[0]:.1f} ms (in the page {b[1]:.1f}, its DOM work {b[2]:.1f})", flush=True)
    for label, (first, later) in results.items():
        for name, v in (("first alert of a fresh app", first), ("a later alert", later)):
            for part, i in (("event -> painted", 0), ("  of which in the page", 1),
                            ("    of which the page's DOM work (before the frames)", 2)):
                x = [r[i] for r in v]
                print(f"{label}: {name}, {part}: p50 {statistics.median(x):.1f} ms, p95 {pct(x, 0.95):.1f} ms, "
                      f"min {min(x):.1f}, max {max(x):.1f} (n={len(x)})")


if __name__ == "__main__":
    main()
