#!/usr/bin/env python3
"""Desk app: memory over a long run with calls coming and going (issue 17 item 4). Starts a fresh
app (its embedded core takes the calls) under the X display it is given, waits for the page,
then for MINUTES places test calls (933) one after another with sipp (a provider that answers, a
caller that hangs up after 300 ms) and samples RSS/PSS of all the desk's processes once a
minute. Prints one line per sample, then the growth: PSS per call as the least-squares slope
over the samples after WARMUP minutes (the first calls fill caches and the board's list of
finished calls, which is bounded), and first → last; then where the growth after the warm-up is:
the parts of each process (each file mapped, heap, anonymous memory; /proc/<pid>/smaps) whose
RSS changed most between the first sample after the warm-up and the last.

    bench/desk-soak.sh [MINUTES] [WARMUP] [REST]   (default 60, 10 and 0; Xvfb + openbox;
                                                    SOSDESK_DESK_APP: the app, e.g. the release build)

REST: after the calls, that many minutes with none, still sampled once a minute: whether what
grew with the calls is given back when they stop (garbage not yet collected, caches that age
out) or kept (retained per call), with the same breakdown by part at the end of the rest.

SOSDESK_SOAK_HEAPTRACK=FILE: the app runs under heaptrack (Debian's package), its profile written
to FILE.zst; at the end the app is killed (SIGKILL), so what heaptrack calls "leaked" is the
heap the app held at that moment, and the largest holders are printed by allocation site. Two
runs of different lengths tell what grows with the calls from what is bounded (BENCHMARKS.md:
the app's heap after 640 and 3,190 calls). heaptrack's own processes are left out of the sums.
"""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from desk_first_alert import APP, WAIT, free_port, records, sipp, wait  # noqa: E402
from desk_first_alert import lab_ports, write_lab  # noqa: E402
from desk_memory import memory, part_sizes  # noqa: E402

SAMPLE_S = 60


def totals(m):
    """(RSS MB, PSS MB, {process: PSS MB}) of a `memory()` result."""
    return (sum(r for r, _ in m.values()) / 1024, sum(p for _, p in m.values()) / 1024,
            {n: p / 1024 for n, (_, p) in m.items()})


def finished(peers):
    """Whether both sipp peers of a call ended well. A call that does not finish within WAIT
    (say, another program took the provider's port between two calls, so the core holds the
    caller and retries its routes) is counted as failed and its peers ended: the run goes on."""
    ok = True
    for p in peers:
        try:
            ok = p.wait(timeout=WAIT) == 0 and ok
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            ok = False
    return ok


class Pid:
    def __init__(self, pid):
        self.pid = pid


def app_under(root, cmd):
    """The process below `root` whose command line is `cmd` (the app that heaptrack started)."""
    out = subprocess.run(["pgrep", "-f", "-x", " ".join(cmd)], capture_output=True, text=True).stdout.split()
    for pid in map(int, out):
        ppid = pid
        while ppid > 1:
            try:
                ppid = int(Path(f"/proc/{ppid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                break
            if ppid == root:
                return Pid(pid)
    return None


def print_heap(profile):
    """The heap the app held at its end, total and by the allocation sites that held most."""
    out = subprocess.run(["heaptrack_print", "-f", profile, "--print-leaks", "1", "--print-peaks", "0",
                          "--print-allocators", "0", "--print-temporary", "0", "-n", "25", "-s", "0"],
                         capture_output=True, text=True).stdout.splitlines()
    for line in out:
        if line.startswith(("total memory leaked", "peak heap memory")):
            print(f"heap: {line}", flush=True)
    sites = [(out[i], out[i + 1].strip()) for i in range(len(out) - 1) if " leaked over " in out[i]
             and not out[i].startswith(" ")]
    for held, site in sites:
        site = re.sub(r"::h[0-9a-f]{16}$", "", site)  # the symbol's hash
        print(f"heap held: {held.split(' leaked')[0]:>9} at {site}", flush=True)


def slope(points):
    """Least-squares slope of (x, y) points; None with fewer than two distinct x."""
    n = len(points)
    if n < 2:
        return None
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def main():
    minutes = float(sys.argv[1]) if len(sys.argv) > 1 else 60
    warmup = float(sys.argv[2]) if len(sys.argv) > 2 else 10
    rest = float(sys.argv[3]) if len(sys.argv) > 3 else 0
    d = Path(tempfile.mkdtemp(prefix="sosdesk-soak-"))
    ports = lab_ports(set())
    config = write_lab(d, ports, d / "desk.db")
    cfg_home = d / "config" / "org.sosdesk.desk"
    cfg_home.mkdir(parents=True)
    (cfg_home / "settings.json").write_text(json.dumps({"officer_name": "Bench", "theme": "system"}))
    (d / "home").mkdir()
    metrics = d / "metrics.jsonl"
    env = dict(os.environ, HOME=str(d / "home"), XDG_CONFIG_HOME=str(d / "config"),
               XDG_DATA_HOME=str(d / "data"), XDG_RUNTIME_DIR=str(d), SOSDESK_DESK_METRICS=str(metrics))
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    log = open(d / "app.log", "w")
    print(f"app {APP}; {minutes:g} min of calls, samples every {SAMPLE_S} s; work dir {d}", flush=True)
    heap = os.environ.get("SOSDESK_SOAK_HEAPTRACK")
    cmd = [APP, "--config", str(config)]
    proc = subprocess.Popen((["heaptrack", "-o", heap] if heap else []) + cmd, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    app = proc
    samples = []  # (minute, calls, failed, rss, pss, per process)
    at_warmup = None  # part_sizes() at the first sample after the warm-up
    try:
        wait(lambda: any("page_load" in r for r in records(metrics)), "the page to show")
        if heap:
            # The app itself, below heaptrack's script (whose interpreter is not the desk's memory).
            app = wait(lambda: app_under(proc.pid, cmd), "the app under heaptrack")
        start = time.monotonic()
        calls = failed = 0
        next_sample = start
        while True:
            now = time.monotonic()
            if now >= next_sample:
                sizes = memory(app.pid)
                rss, pss, parts = totals(sizes)
                minute = (now - start) / 60
                samples.append((minute, calls, failed, rss, pss, parts))
                each = ", ".join(f"{n} {v:.0f}" for n, v in sorted(parts.items()))
                each += "; RSS " + ", ".join(f"{n} {r / 1024:.0f}" for n, (r, _) in sorted(sizes.items()))
                print(f"min {minute:5.1f}: {calls:5d} calls ({failed} failed), RSS {rss:6.1f} MB, "
                      f"PSS {pss:6.1f} MB (PSS {each})", flush=True)
                if proc.poll() is not None:
                    raise RuntimeError(f"the app ended (exit {proc.returncode}); log {d / 'app.log'}")
                if at_warmup is None and minute >= warmup:
                    at_warmup = part_sizes(app.pid)
                if minute >= minutes:
                    at_end = part_sizes(app.pid)
                    break
                next_sample += SAMPLE_S
            peers = [sipp(d, "provider_answer.xml", "-p", str(ports[5070])),
                     sipp(d, "caller_hangs_up.xml", f"127.0.0.1:{ports[5060]}", "-s", "933",
                          "-set", "hold_ms", "300", "-p", str(free_port(set(ports.values()))))]
            calls += 1
            failed += not finished(peers)
        rested = []  # (minute after the calls, rss, pss, per process)
        for m in range(1, int(rest) + 1):
            time.sleep(SAMPLE_S)
            sizes = memory(app.pid)
            rss, pss, parts = totals(sizes)
            rested.append((m, rss, pss, parts))
            each = ", ".join(f"{n} {v:.0f}" for n, v in sorted(parts.items()))
            print(f"rest {m:3d} min: RSS {rss:6.1f} MB, PSS {pss:6.1f} MB (PSS {each})", flush=True)
        at_rest = part_sizes(app.pid) if rested else None
        steady = [(s[1], s[4]) for s in samples if s[0] >= warmup]
        per_call = slope(steady)
        first, last = samples[0], samples[-1]
        print(f"PSS {first[4]:.1f} MB idle -> {last[4]:.1f} MB after {last[1]} calls ({last[2]} failed) in "
              f"{last[0]:.0f} min; RSS {first[3]:.1f} -> {last[3]:.1f} MB", flush=True)
        if per_call is None:
            print("growth per call: too few samples after the warm-up", flush=True)
        else:
            w = [s for s in samples if s[0] >= warmup]
            rss_per_call = slope([(s[1], s[3]) for s in w])
            print(f"growth after {warmup:g} min warm-up: {per_call * 1024:.2f} kB PSS per call "
                  f"(least squares over {len(steady)} samples; {w[0][4]:.1f} -> {w[-1][4]:.1f} MB over "
                  f"{w[-1][1] - w[0][1]} calls); {rss_per_call * 1024:.2f} kB RSS per call ({w[0][3]:.1f} -> "
                  f"{w[-1][3]:.1f} MB; RSS does not change when another program maps the same libraries, PSS does)",
                  flush=True)
        if at_warmup is not None:
            keys = set(at_warmup) | set(at_end)
            grown = {k: tuple(b - a for a, b in zip(at_warmup.get(k, (0, 0)), at_end.get(k, (0, 0)))) for k in keys}
            top = sorted(grown.items(), key=lambda kv: -abs(kv[1][0]))[:12]
            print("where RSS/PSS changed after the warm-up (kB): "
                  + ", ".join(f"{n}: {part} {r:+d}/{ps:+d}" for (n, part), (r, ps) in top), flush=True)
        if at_rest is not None:
            print(f"after {len(rested)} min without calls: RSS {rested[-1][1]:.1f} MB, PSS {rested[-1][2]:.1f} MB "
                  f"(at the last call: RSS {last[3]:.1f}, PSS {last[4]:.1f} MB)", flush=True)
            keys = set(at_end) | set(at_rest)
            given = {k: tuple(b - a for a, b in zip(at_end.get(k, (0, 0)), at_rest.get(k, (0, 0)))) for k in keys}
            top = sorted(given.items(), key=lambda kv: -abs(kv[1][0]))[:8]
            print("where RSS/PSS changed in the rest (kB): "
                  + ", ".join(f"{n}: {part} {r:+d}/{ps:+d}" for (n, part), (r, ps) in top), flush=True)
        if heap:
            # Killed, not ended: what it holds now is what heaptrack reports as never freed.
            os.kill(app.pid, signal.SIGKILL)
            proc.wait(timeout=600)
            print_heap(heap + ".zst")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


if __name__ == "__main__":
    main()
