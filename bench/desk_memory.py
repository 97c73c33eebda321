#!/usr/bin/env python3
"""Desk app: memory of all its processes (the app with its embedded core, WebKit's web and
network processes), idle and after calls (issue 17 item 4). Starts a fresh app under the X display
it is given, waits for the page, then IDLE seconds, and sums RSS and PSS from
/proc/<pid>/smaps_rollup over the app and every process below it; then places CALLS 911 calls one
after another (sipp, 300 ms each) and measures again, so growth per call shows.

    bench/desk-memory.sh [CALLS] [IDLE_S]      (Xvfb + openbox; SOSDESK_DESK_APPS and SOSDESK_DESK_ENV_<label> as in
                                                bench/desk_first_alert.py to compare builds)

SOSDESK_BENCH_REMOTE=1: the desk as on an officer's computer in production, connected to a core
that runs elsewhere (`[remote]`): the core (`sosdesk serve`, SOSDESK_BIN or target/debug/sosdesk)
is started apart and its memory is printed on its own line, not in the desk's sum.

SOSDESK_BENCH_MAPS=N: also, for each process, its N largest parts by PSS from /proc/<pid>/smaps
(each file mapped, [heap], [stack], anonymous memory): where the memory goes.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from desk_first_alert import APPS, WAIT, app_env, free_port, records, sipp, wait  # noqa: E402
from desk_first_alert import lab_ports, write_lab  # noqa: E402

import json  # noqa: E402
import tempfile  # noqa: E402


def tree(pid):
    """`pid` and every process below it."""
    out = [pid]
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            out += tree(int(p.name))
    return out


def each_process(pid, file):
    """(process name, text of /proc/<p>/`file`) for `pid` and every process below it; a process
    that ended meanwhile is left out."""
    for p in tree(pid):
        try:
            yield Path(f"/proc/{p}/comm").read_text().strip(), Path(f"/proc/{p}/{file}").read_text()
        except OSError:
            continue


def memory(pid):
    """{process name: (RSS kB, PSS kB)} over the tree of `pid`."""
    found = {}
    for name, rollup in each_process(pid, "smaps_rollup"):
        kb = {line.split(":")[0]: int(line.split()[1]) for line in rollup.splitlines()[1:] if line.split()[1:2]}
        rss, pss = found.get(name, (0, 0))
        found[name] = (rss + kb.get("Rss", 0), pss + kb.get("Pss", 0))
    return found


def part_sizes(pid):
    """{(process name, part): (RSS kB, PSS kB)} over the tree of `pid`, from /proc/<pid>/smaps: each
    file mapped (by file name), [heap], [stack], and anonymous memory."""
    sizes = {}
    for name, smaps in each_process(pid, "smaps"):
        part = "anonymous"
        for line in smaps.splitlines():
            head = line.split()
            if not head:
                continue
            if not head[0].endswith(":"):  # a mapping's first line: address perms offset dev inode [path]
                part = Path(head[5]).name if len(head) > 5 else "anonymous"
            elif head[0] in ("Rss:", "Pss:"):
                r, s = sizes.get((name, part), (0, 0))
                sizes[(name, part)] = (r + int(head[1]), s) if head[0] == "Rss:" else (r, s + int(head[1]))
    return sizes


def parts(pid, top):
    """The `top` largest parts of each process in the tree of `pid`, by PSS, as printable lines."""
    by_proc = {}
    for (name, part), size in part_sizes(pid).items():
        by_proc.setdefault(name, []).append((part, size))
    return [f"  {name}: " + ", ".join(f"{n} {r // 1024}/{s // 1024}"
                                      for n, (r, s) in sorted(items, key=lambda kv: -kv[1][1])[:top])
            + " (RSS/PSS MB)" for name, items in sorted(by_proc.items())]


MAPS = int(os.environ.get("SOSDESK_BENCH_MAPS", "0"))


def show(label, what, m):
    total = (sum(r for r, _ in m.values()), sum(p for _, p in m.values()))
    parts = ", ".join(f"{n} {r // 1024}/{p // 1024}" for n, (r, p) in sorted(m.items()))
    print(f"{label} {what}: total RSS {total[0] // 1024} MB, PSS {total[1] // 1024} MB ({parts}; RSS/PSS MB)",
          flush=True)


REMOTE = os.environ.get("SOSDESK_BENCH_REMOTE") == "1"
CORE_BIN = os.environ.get("SOSDESK_BIN", str(Path(__file__).resolve().parent.parent / "target/debug/sosdesk"))


def run(label, app, calls, idle):
    d = Path(tempfile.mkdtemp(prefix="sosdesk-memory-"))
    ports = lab_ports(set())
    config = write_lab(d, ports, d / "desk.db")
    core = None
    if REMOTE:
        # The lab config as a headless core; the desk gets only where it is and an account.
        core_log = open(d / "core.log", "w")
        core = subprocess.Popen([CORE_BIN, "serve", "--config", str(config)], stdout=core_log, stderr=subprocess.STDOUT)
        core_log.close()
        config = d / "remote-desk.toml"
        config.write_text(f'[remote]\napi = "http://127.0.0.1:{ports[8443]}"\n'
                          'username = "desk2"\npassword = "control-room-secret"\n')
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
    proc = subprocess.Popen([app, "--config", str(config)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait(lambda: any("page_load" in r for r in records(metrics)), "the page to show")
        time.sleep(idle)  # idle on purpose: what the desk holds when nothing happens
        show(label, f"idle {idle} s", memory(proc.pid))
        if MAPS:
            print("\n".join(parts(proc.pid, MAPS)), flush=True)
        if core:
            show(label, "the remote core (not in the desk's sum)", memory(core.pid))
        for _ in range(calls):
            peers = [sipp(d, "provider_answer.xml", "-p", str(ports[5070])),
                     sipp(d, "caller_hangs_up.xml", f"127.0.0.1:{ports[5060]}", "-s", "933",
                          "-set", "hold_ms", "300", "-p", str(free_port(set(ports.values()))))]
            for p in peers:
                p.wait(timeout=WAIT)
        if calls:
            time.sleep(idle)
            show(label, f"after {calls} test calls and {idle} s", memory(proc.pid))
    finally:
        if core:
            core.terminate()
            core.wait(timeout=10)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def main():
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    idle = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    for label, app in APPS:
        run(label, app, calls, idle)


if __name__ == "__main__":
    main()
