"""End-to-end tests of the desk app in its real webview (WebKitGTK), under Xvfb with openbox,
driven through tauri-driver + WebKitWebDriver with Selenium (DESIGN.md, Testing).

sipp places real emergency calls into the core that runs inside the app; the tests read what an
officer sees (text on the screen, the window stacking order from the window manager), press
Acknowledge, and check the audit store (a real SQLite file) and the sound the alarm produced.

Run through tests/desk_e2e/run.sh, which provides the X display. Needs: the built app
(SOSDESK_DESK_APP), tauri-driver, WebKitWebDriver, sipp, openbox, xprop, xclock.
Screenshots go to SOSDESK_E2E_ARTIFACTS (default target/desk-e2e).
"""

import array
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import (NoAlertPresentException, NoSuchElementException,
                                        StaleElementReferenceException, WebDriverException)
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.options import ArgOptions
from selenium.webdriver.support.ui import Select, WebDriverWait

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "support"))
from g711 import tone, tone_level, ulaw_decode, ulaw_encode  # noqa: E402
SIPP = REPO / "tests" / "sipp"
HERE = Path(__file__).resolve().parent
SOUND_RATE = 48_000  # the test sound card's rate (float stereo), see paced_sink.py
APP = os.environ.get("SOSDESK_DESK_APP") or str(
    Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "debug" / "sosdesk-desk"
)
if not os.access(APP, os.X_OK):
    # WebKitWebDriver waits forever for an app that does not exist: fail fast instead.
    sys.exit(f"desk app not found at {APP}: build it (cargo build -p sosdesk-desk) or set SOSDESK_DESK_APP")
ARTIFACTS = Path(os.environ.get("SOSDESK_E2E_ARTIFACTS", REPO / "target" / "desk-e2e"))
# The headless core (`sosdesk serve`) for the remote desk tests; `cargo test` builds it.
CORE_BIN = os.environ.get("SOSDESK_BIN") or str(
    Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "debug" / "sosdesk"
)
OFFICER = "Officer Dana Test"
WAIT = 30  # seconds: an upper bound for a condition, never a pause


def free_port(used):
    """A port free for both UDP and TCP, below the ephemeral range (sipp and the kernel use that)."""
    for _ in range(500):
        port = 20000 + (int.from_bytes(os.urandom(2), "big") % 12000)
        if port in used:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
                u.bind(("127.0.0.1", port))
                t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                t.bind(("127.0.0.1", port))
        except OSError:
            continue
        used.add(port)
        return port
    raise RuntimeError("no free port")

CALLER_HZ = 500
OPERATOR_HZ = 1100
# The microphone's tone. The ALSA null device behind the file microphone has no clock, so the
# app reads it faster than real time and keeps whole chunks (5 ms at a time); 2000 Hz has a
# period of 4 samples at 8 kHz, so a chunk boundary never breaks its phase.
DESK_HZ = 2000


class RtpPeer:
    """The emergency operator's audio: a UDP socket that learns sosdesk's RTP address from the
    sipp provider (its "rtp <ip> <port>" datagram), then sends a tone in 20 ms µ-law packets and
    keeps what it hears, decoded, with arrival times."""

    def __init__(self, tone_hz=OPERATOR_HZ):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.005)
        self.port = self.sock.getsockname()[1]
        self.heard = []  # (monotonic time, [samples])
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.tone = bytes(ulaw_encode(v) for v in tone(tone_hz))
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        dest, seq, ts, next_send = None, 0, 0, time.monotonic()
        while not self.stop.is_set():
            try:
                data, _ = self.sock.recvfrom(2048)
                if data.startswith(b"rtp "):
                    _, ip, port = data.decode().split()
                    dest = (ip, int(port))
                elif len(data) > 12 and data[1] & 0x7F in (0, 8):
                    cc = data[0] & 0x0F
                    payload = data[12 + 4 * cc:]
                    with self.lock:
                        self.heard.append((time.monotonic(), [ulaw_decode(b) for b in payload]))
            except socket.timeout:
                pass
            if dest and time.monotonic() >= next_send:
                off = (ts % 8000)
                header = bytes([0x80, 0]) + seq.to_bytes(2, "big") + ts.to_bytes(4, "big") + (0x5D5D).to_bytes(4, "big")
                self.sock.sendto(header + self.tone[off:off + 160], dest)
                seq, ts = (seq + 1) & 0xFFFF, ts + 160
                next_send += 0.02

    def level(self, hz, after=0.0, until=None):
        """The loudest `hz` level over 200 ms windows of what arrived between `after` and `until`."""
        with self.lock:
            samples = [v for t, p in self.heard if t >= after and (until is None or t <= until) for v in p]
        return max((tone_level(samples[i:i + 1600], hz) for i in range(0, max(len(samples) - 1599, 0), 800)),
                   default=0.0)

    def close(self):
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


class TauriOptions(ArgOptions):
    """tauri-driver's capabilities: the app to start and its arguments."""

    def __init__(self, application, args):
        super().__init__()
        self.application = application
        self.app_args = args

    def to_capabilities(self):
        return {"browserName": "wry", "tauri:options": {"application": self.application, "args": self.app_args}}

    @property
    def default_capabilities(self):
        return {}


def lab_ports(used):
    """The lab config's ports, each mapped to a free one."""
    return {old: free_port(used) for old in (5060, 5070, 5071, 5080, 5090, 8080, 8443)}


def write_lab(directory, ports, store):
    """examples/lab.toml on `ports`, its audit store at `store`; returns the file."""
    lab = (REPO / "examples" / "lab.toml").read_text()
    for old, new in ports.items():
        lab = lab.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
    lab = lab.replace('path = "../sosdesk-lab.db"', f'path = "{store}"')
    lab = lab.replace('msag = "msag.csv"', f'msag = "{REPO / "examples" / "msag.csv"}"')
    config = directory / "lab.toml"
    config.write_text(lab)
    return config


def api_post(port, account, path, body):
    """A request to the core's HTTP API as `account` (user, password): what another desk sends."""
    import base64
    import urllib.request
    auth = base64.b64encode(f"{account[0]}:{account[1]}".encode()).decode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=WAIT) as resp:
        return resp.status, json.loads(resp.read())


class HeadlessCore:
    """`sosdesk serve` on the lab config (free ports, its own store): the core a remote desk
    connects to, as on another machine."""

    def __init__(self):
        if not os.access(CORE_BIN, os.X_OK):
            sys.exit(f"sosdesk not found at {CORE_BIN}: build it (cargo build) or set SOSDESK_BIN")
        self.dir = Path(tempfile.mkdtemp(prefix="sosdesk-e2e-core-"))
        self.ports = lab_ports(set())
        self.store = self.dir / "core.db"
        self.config = write_lab(self.dir, self.ports, self.store)
        self.api = self.ports[8443]
        self.proc = None
        self.start()

    def start(self):
        log = open(self.dir / "core.log", "a")
        self.proc = subprocess.Popen([CORE_BIN, "serve", "--config", str(self.config)], stdout=log,
                                     stderr=subprocess.STDOUT)
        log.close()
        wait_tcp(self.api, self.proc, "sosdesk serve")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(WAIT)

    def close(self):
        self.stop()
        if not os.environ.get("SOSDESK_E2E_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)


def wait_until(cond, what, timeout=WAIT):
    """`cond()`'s first true value, polled; for what is seen outside the webview."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)  # polling a file another process writes
    raise AssertionError(f"timed out waiting for {what}")


def wait_tcp(port, proc, what):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)  # polling a port that is coming up
    raise RuntimeError(f"{what} did not listen on {port}")


def window_ids_by_name():
    """Client windows the window manager knows, bottom to top, with their titles."""
    out = subprocess.run(["xprop", "-root", "_NET_CLIENT_LIST_STACKING"], capture_output=True, text=True).stdout
    ids = re.findall(r"0x[0-9a-f]+", out)
    names = []
    for wid in ids:
        name = subprocess.run(["xprop", "-id", wid, "_NET_WM_NAME", "WM_NAME"], capture_output=True, text=True).stdout
        names.append((wid, name))
    return names


def stacking_index(title_part):
    for i, (wid, name) in enumerate(window_ids_by_name()):
        if title_part in name:
            return i, wid
    return None, None


def desk_windows():
    """The ids of every desk app's window on the display."""
    return {wid for wid, name in window_ids_by_name() if "sosdesk" in name}


def stacking_position(window):
    """Where `window` is in the window manager's stacking order (0: bottom), or None."""
    ids = [wid for wid, _ in window_ids_by_name()]
    return ids.index(window) if window in ids else None


def window_pid(window):
    """The process that owns `window` (_NET_WM_PID), or None."""
    out = subprocess.run(["xprop", "-id", window, "_NET_WM_PID"], capture_output=True, text=True).stdout
    m = re.search(r"= (\d+)", out)
    return int(m.group(1)) if m else None


class Desk:
    """One app session: its own config, store, settings folder, HOME (for the ALSA config) and
    tauri-driver."""

    def __init__(self, name, with_sound, desk_account=None, mic_hz=None, remote=None, prepare=None,
                 edit_config=None):
        """`remote`: a HeadlessCore to connect to (remote desk mode, as the lab's desk2)
        instead of running the core in the app. `prepare(desk)`: runs once the folder, config
        and store path exist, before the app starts (e.g. to import LIS data into its store).
        `edit_config(text)`: the lab config changed before the app starts."""
        self.dir = Path(tempfile.mkdtemp(prefix=f"sosdesk-e2e-{name}-"))
        used = set(remote.ports.values()) if remote else set()
        self.ports = remote.ports if remote else lab_ports(used)
        self.core = self.ports[5060]
        self.provider = self.ports[5070]
        self.driver_port = free_port(used)
        self.native_port = free_port(used)
        self.caller_ports = iter(sorted(free_port(used) for _ in range(8)))
        if remote:
            self.store = remote.store
            self.config = self.dir / "remote-desk.toml"
            self.config.write_text(f'[remote]\napi = "http://127.0.0.1:{remote.api}"\n'
                                   'username = "desk2"\npassword = "control-room-secret"\n')
        else:
            self.store = self.dir / "desk.db"
            self.config = write_lab(self.dir, self.ports, self.store)
            if edit_config:
                self.config.write_text(edit_config(self.config.read_text()))
        if prepare:
            prepare(self)
        cfg_home = self.dir / "config"
        (cfg_home / "org.sosdesk.desk").mkdir(parents=True)
        (cfg_home / "org.sosdesk.desk" / "settings.json").write_text(
            json.dumps({"officer_name": OFFICER, "theme": "system", "desk_account": desk_account})
        )
        home = self.dir / "home"
        home.mkdir()
        self.home = home
        self.alarm_raw = self.dir / "alarm.raw"
        if with_sound:
            playback = self.sound_card()
            if mic_hz is None:
                (home / ".asoundrc").write_text("pcm.!default { %s }\n" % playback)
            else:
                # A microphone too: what the app captures is a tone read from a file (16-bit
                # 8 kHz mono, converted by the plug plugin to whatever the app asks for).
                mic = self.dir / "mic.raw"
                mic.write_bytes(b"".join(v.to_bytes(2, "little", signed=True) for v in tone(mic_hz, 120)))
                (home / ".asoundrc").write_text(
                    "pcm.!default { type asym; playback.pcm { %s }\n"
                    '  capture.pcm { type plug; slave { pcm "deskmic"; format S16_LE; rate 8000; channels 1 } } }\n'
                    'pcm.deskmic { type file; slave.pcm "null"; file "/dev/null"; infile "%s"; format "raw" }\n'
                    % (playback, mic))
        env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(cfg_home),
                   XDG_DATA_HOME=str(self.dir / "data"), XDG_RUNTIME_DIR=str(self.dir),
                   SOSDESK_DESK_METRICS=str(self.dir / "metrics.jsonl"))
        env.pop("DBUS_SESSION_BUS_ADDRESS", None)
        self.log = open(self.dir / "tauri-driver.log", "w")
        self.tauri_driver = subprocess.Popen(
            ["tauri-driver", "--port", str(self.driver_port), "--native-port", str(self.native_port)],
            env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        wait_tcp(self.driver_port, self.tauri_driver, "tauri-driver")
        wait_tcp(self.native_port, self.tauri_driver, "WebKitWebDriver")
        self.sipps = []
        # This session's own window, told from any other desk's still on the display (an earlier
        # session's app that is slow to exit on a loaded machine).
        others = desk_windows()
        self.driver = webdriver.Remote(
            command_executor=f"http://127.0.0.1:{self.driver_port}",
            options=TauriOptions(APP, ["--config", str(self.config)]),
        )
        self.wait_for(lambda d: d.find_element(By.ID, "status-core").get_attribute("data-state") == "running",
                      "the connection to the core" if remote else "the embedded core to run")
        self.window = wait_until(lambda: next(iter(sorted(desk_windows() - others)), None), "the desk's window")

    def sound_card(self):
        """ALSA's file plugin as the default device: what the alarm plays lands in a file the
        test can listen to. Without it the machine has no sound card (the no-device path). The
        plug plugin fixes the format (float stereo 48 kHz) so the paced sink knows the rate."""
        return ('type plug; slave { pcm { type file; slave.pcm "null"; format "raw"; '
                'file "|/usr/bin/python3 %s %d %s" }; format FLOAT_LE; rate %d; channels 2 }'
                % (HERE / "paced_sink.py", SOUND_RATE * 2 * 4, self.alarm_raw, SOUND_RATE))

    def wait_for(self, cond, what, timeout=WAIT):
        try:
            # The UI redraws a card on every event, so an element found a moment ago may be gone.
            ignored = (NoSuchElementException, StaleElementReferenceException)
            return WebDriverWait(self.driver, timeout, poll_frequency=0.05, ignored_exceptions=ignored).until(cond)
        except Exception as e:
            self.screenshot(f"FAILED-{re.sub(r'[^a-z0-9]+', '-', what.lower())}")
            raise AssertionError(f"timed out waiting for {what}\n{self.diagnostics()}") from e

    def screenshot(self, name):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        try:
            self.driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
        except WebDriverException as e:
            # A page that crashed has no screenshot; the failure itself is what matters.
            print(f"no screenshot {name}: {e.msg}", file=sys.stderr)

    def diagnostics(self, lines=40):
        """What a failed wait leaves to read in CI's output: the end of the app's log (the
        embedded core logs there) and the errors of this test's sipp peers."""
        out = []
        log = self.dir / "tauri-driver.log"
        if log.exists():
            text = re.sub(r"\x1b\[[0-9;]*m", "", log.read_text(errors="replace"))
            tail = [line for line in text.splitlines() if "alert painted" not in line][-lines:]
            out += ["--- the app's log (last lines, paint timings left out):", *tail]
        for err in sorted(self.dir.glob("*.err")):
            out += [f"--- {err.name}:", *err.read_text(errors="replace").splitlines()[:lines]]
        return "\n".join(out)

    def sipp(self, scenario, *args, remote=True, timeout=30):
        cmd = ["sipp", "-sf", str(SIPP / scenario), "-i", "127.0.0.1", "-m", "1", "-timeout", str(timeout),
               "-timeout_error", "-nostdin", "-trace_err", "-error_file", str(self.dir / f"{scenario}.err")]
        if remote:
            cmd.insert(1, f"127.0.0.1:{self.core}")
        cmd += list(args)
        p = subprocess.Popen(cmd, cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.sipps.append(p)
        return p

    def start_provider(self_):
        p = self_.sipp("provider_answer.xml", "-p", str(self_.provider), remote=False)
        return p

    def call(self, number, name, hold_ms=20000):
        return self.sipp("caller_hangs_up.xml", "-s", number, "-set", "name", name,
                         "-set", "hold_ms", str(hold_ms), "-p", str(next(self.caller_ports)))

    def media_call(self, number, name, peer, hold_ms=30000, caller_hz=CALLER_HZ):
        """A call whose caller streams a tone with sipp's rtp_stream and whose operator's audio is
        `peer` (a test RTP socket); returns the caller and provider sipp processes and the alert
        card, once the call is answered."""
        (self.dir / "caller_tone.ulaw").write_bytes(bytes(ulaw_encode(v) for v in tone(caller_hz)))
        timeout = hold_ms // 1000 + 30
        provider = self.sipp("media_provider.xml", "-p", str(self.provider), "-set", "mport", str(peer.port),
                             "-set", "pt", "0", "-set", "codec", "PCMU", remote=False, timeout=timeout)
        caller = self.sipp("media_caller_stream.xml", "-s", number, "-set", "name", name,
                           "-set", "hold_ms", str(hold_ms), "-p", str(next(self.caller_ports)), timeout=timeout)
        card = self.card(name)
        card.wait_attr("data-state", "answered", f"the call of {name} to be answered")
        return caller, provider, card

    def card(self, caller_name):
        """The alert card whose caller name is exactly `caller_name`."""
        def find(d):
            for c in d.find_elements(By.CSS_SELECTOR, "article.alert-card"):
                if c.find_element(By.CSS_SELECTOR, ".caller-name").text == caller_name:
                    return c.get_attribute("data-call-id")
            return False
        return Card(self, self.wait_for(find, f"the alert of {caller_name!r}"))

    def kill_sipps(self, settle=True):
        """Ends this test's SIP peers, then waits until the core calls none of them any more."""
        for p in self.sipps:
            if p.poll() is None:
                p.kill()
                p.wait()
            if p.stderr:
                p.stderr.close()
        self.sipps.clear()
        if settle:
            self.settle()

    def settle(self):
        # A call whose caller was killed while the core still routed it keeps the core sending
        # INVITEs to the provider's port until both routes time out (2 s each in the lab
        # config). The next test's provider, on that same port, would take that stale INVITE
        # for its one call and leave the real one unanswered.
        self.wait_for(lambda d: not d.find_elements(By.CSS_SELECTOR, 'article.alert-card[data-state="routing"]'),
                      "no call still being routed")

    def status_text(self, element_id):
        # textContent: the status details are hidden until the officer asks for them.
        return self.driver.find_element(By.ID, element_id).get_attribute("textContent")

    def keys(self, keys):
        """Types `keys` into whatever has the focus, as an officer at the keyboard does."""
        ActionChains(self.driver).send_keys(keys).perform()

    def headline(self):
        """The status line: (level, text, action)."""
        h = self.driver.find_element(By.ID, "status-headline")
        read = lambda i: self.driver.find_element(By.ID, i).get_attribute("textContent")
        return h.get_attribute("data-level"), read("headline-text"), read("headline-action")

    def web_processes(self):
        """The pids of this app's WebKit web processes (the page's renderer), found among the
        descendants of this session's tauri-driver."""
        parents = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                # pid (comm) state ppid ...: comm may hold spaces, so split after its ')'.
                text = stat.read_text()
            except OSError:
                continue
            pid, rest = int(text.split(" ", 1)[0]), text.rsplit(")", 1)[1].split()
            parents[pid] = (int(rest[1]), text[text.index("(") + 1:text.rindex(")")])
        def under_driver(pid):
            while pid > 1 and pid in parents:
                pid = parents[pid][0]
                if pid == self.tauri_driver.pid:
                    return True
            return False
        return sorted(pid for pid, (_, comm) in parents.items()
                      if comm.startswith("WebKitWebProces") and under_driver(pid))

    def page_loads(self):
        """Each start of the page (a reload after a crash included), as the call ids of the
        alert cards it drew."""
        path = self.dir / "metrics.jsonl"
        if not path.exists():
            return []
        # Whole lines only: the app may be writing the last one.
        lines = path.read_text().split("\n")[:-1]
        records = [json.loads(line) for line in lines if line.strip()]
        return [r["alerts_shown"] for r in records if "page_load" in r]

    def alarm(self):
        return self.driver.find_element(By.ID, "alarm-indicator").get_attribute("data-alarm")

    def db(self, sql, *params):
        con = sqlite3.connect(f"file:{self.store}?mode=ro", uri=True)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    def close(self):
        try:
            self.driver.quit()
        except Exception:
            pass
        for p in self.sipps:
            if p.poll() is None:
                p.kill()
        self.tauri_driver.terminate()
        try:
            self.tauri_driver.wait(10)
        except subprocess.TimeoutExpired:
            self.tauri_driver.kill()
        # The app is gone with its window before the next session starts: a lingering one is ended.
        window = getattr(self, "window", None)
        if window is not None:
            try:
                wait_until(lambda: window not in desk_windows(), "the desk's window to close", timeout=10)
            except AssertionError:
                pid = window_pid(window)
                if pid:
                    print(f"the desk app {pid} outlived its session: killed", file=sys.stderr)
                    os.kill(pid, signal.SIGKILL)
        self.log.close()
        if os.environ.get("SOSDESK_E2E_KEEP"):
            print(f"kept {self.dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


class Card:
    """One alert card, found afresh by its call id on every access (the UI redraws cards)."""

    def __init__(self, desk, call_id):
        self.desk = desk
        self.call_id = call_id

    def element(self):
        return self.desk.driver.find_element(By.CSS_SELECTOR, f'article.alert-card[data-call-id="{self.call_id}"]')

    def fresh(self, read):
        """`read(card element)`, again if the card was redrawn in between."""
        for _ in range(20):
            try:
                return read(self.element())
            except StaleElementReferenceException:
                continue
        return read(self.element())

    def attr(self, name):
        return self.fresh(lambda e: e.get_attribute(name))

    def text(self, selector):
        return self.fresh(lambda e: e.find_element(By.CSS_SELECTOR, selector).text)

    def find_all(self, selector):
        return self.fresh(lambda e: e.find_elements(By.CSS_SELECTOR, selector))

    def click(self, selector):
        self.fresh(lambda e: e.find_element(By.CSS_SELECTOR, selector).click())

    def attr_of(self, selector, name):
        return self.fresh(lambda e: e.find_element(By.CSS_SELECTOR, selector).get_attribute(name))

    def wait_attr(self, name, values, what):
        values = (values,) if isinstance(values, str) else values
        return self.desk.wait_for(lambda _: self.attr(name) in values, what)


class EmergencyCallOnTheDesk(unittest.TestCase):
    """A 911 call with the alarm on a (file-backed) sound device."""

    @classmethod
    def setUpClass(cls):
        cls.desk = Desk("sound", with_sound=True)

    @classmethod
    def tearDownClass(cls):
        cls.desk.close()

    def tearDown(self):
        self.desk.kill_sipps()

    def test_emergency_call_alert_acknowledge_history(self):
        d = self.desk
        # Another window on top of the desk first: the alert must come above it.
        clock = subprocess.Popen(["xclock", "-geometry", "600x600+0+0"])
        try:
            self._emergency_call(d, clock)
        finally:
            clock.kill()

    def _emergency_call(self, d, clock):
        deadline = time.monotonic() + WAIT
        while stacking_index("xclock")[0] is None and time.monotonic() < deadline:
            time.sleep(0.05)  # waiting for the window manager to map xclock
        app_i = stacking_position(d.window)
        clock_i, _ = stacking_index("xclock")
        self.assertIsNotNone(app_i, window_ids_by_name())
        self.assertGreater(clock_i, app_i, "precondition: xclock starts above the desk")
        self.assertEqual(d.alarm(), "off")

        provider = d.start_provider()
        caller = d.call("9911", "Alice Example")
        card = d.card("Alice Example")
        self.assertEqual(card.attr("data-test-call"), "false")
        self.assertIn("EMERGENCY", card.text(".alert-kind"))
        self.assertIn("+15555550100", card.text(".callback-number"))
        self.assertIn("9911", card.text(".dialed"))
        address = card.text(".location-address")
        self.assertIn("Microsoft Way", address)
        self.assertIn("Redmond", address)
        self.assertEqual(card.text(".location-floor"), "Floor 2")
        self.assertEqual(card.text(".location-room"), "Room 210")
        self.assertEqual(card.attr_of(".location-trust", "data-trust"), "verify")
        detected = card.text(".detected-at")
        self.assertRegex(detected, r"\d{4}")  # the date is shown, not only the time
        card.wait_attr("data-state", "answered", "the call to be answered")

        # Above every other window: the window manager's stacking order and its ABOVE state.
        app_wid = d.window
        app_i = stacking_position(app_wid)
        clock_i, _ = stacking_index("xclock")
        self.assertGreater(app_i, clock_i, f"the alert window is not above xclock: {window_ids_by_name()}")
        state = subprocess.run(["xprop", "-id", app_wid, "_NET_WM_STATE"], capture_output=True, text=True).stdout
        self.assertIn("_NET_WM_STATE_ABOVE", state)

        # The alarm sounds: loud samples reached the audio device.
        d.wait_for(lambda _: d.alarm() == "sounding", "the alarm to sound")
        # The device gets silence from the moment it opens until the siren is added to its mixer
        # (and the null sink behind the file plays faster than real time): look at the samples
        # from the first sound on.
        loudness = d.wait_for(lambda _: alarm_loudness(d), "alarm audio on the device")
        peak, rms = loudness
        self.assertGreater(peak, 0.5, "the alarm is not loud")
        self.assertGreater(rms, 0.3, "the alarm is not loud")
        d.screenshot("alert-emergency")

        card.click("button.ack-button")
        card.wait_attr("data-acknowledged", "true", "the acknowledgement")
        self.assertIn(OFFICER, card.text(".ack-by"))
        d.wait_for(lambda _: d.alarm() == "off", "the alarm to stop")
        call_id = card.call_id
        rows = d.db("SELECT payload FROM events WHERE call_id = ? AND kind = 'acknowledged'", call_id)
        self.assertEqual(len(rows), 1)
        self.assertEqual(json.loads(rows[0][0])["kind"]["by"], OFFICER)
        d.screenshot("alert-acknowledged")

        self.assertEqual(caller.wait(WAIT), 0, caller.stderr.read().decode())
        self.assertEqual(provider.wait(WAIT), 0, provider.stderr.read().decode())
        card.wait_attr("data-state", "ended", "the call to end")

        # History: the call, its audited timeline, the chain check.
        d.driver.find_element(By.ID, "tab-history").click()
        d.driver.find_element(By.ID, "history-search").send_keys("Alice")
        d.driver.find_element(By.ID, "history-run").click()
        # The history table is redrawn whenever a call event arrives: read and click it afresh.
        row_sel = f'tr.history-row[data-call-id="{call_id}"]'
        row_text = d.wait_for(lambda drv: drv.find_element(By.CSS_SELECTOR, row_sel).text, "the call in the history")
        self.assertIn("Alice Example", row_text)
        self.assertIn(OFFICER, row_text)

        def open_detail(drv):
            cell = drv.find_element(By.CSS_SELECTOR, f"{row_sel} td")
            drv.execute_script("arguments[0].scrollIntoView({block: 'center'})", cell)
            cell.click()
            return True

        d.wait_for(open_detail, "a click on the history row")
        d.wait_for(lambda drv: drv.find_element(By.ID, "chain-check").get_attribute("data-ok") == "true",
                   "the chain check")
        kinds = d.wait_for(
            lambda drv: [r.text for r in drv.find_elements(By.CSS_SELECTOR, "#call-detail tr.timeline-row")] or False,
            "the call's audited timeline",
        )
        for kind in ("detected", "routed", "answered", "acknowledged", "ended"):
            self.assertTrue(any(kind in k for k in kinds), f"{kind} missing from the timeline {kinds}")
        d.screenshot("history-detail")
        d.driver.find_element(By.ID, "tab-alerts").click()


def alarm_loudness(d, window=48_000):
    """Peak and RMS of `window` float samples from the first non-silent one; None until the
    device has received that much sound."""
    samples = array.array("f")
    try:
        with open(d.alarm_raw, "rb") as f:
            data = f.read(64 * 1024 * 1024)
    except FileNotFoundError:
        return None
    samples.frombytes(data[: len(data) // 4 * 4])
    start = next((i for i, v in enumerate(samples) if abs(v) > 0.01), None)
    if start is None or len(samples) - start < window:
        return None
    part = samples[start:start + window]
    return max(abs(v) for v in part), (sum(v * v for v in part) / window) ** 0.5


class JoiningTheCall(unittest.TestCase):
    """The officer's own leg in a call, through the core's conference address, with a sound
    device and a microphone (ALSA file plugins: the microphone plays a 2000 Hz tone)."""

    @classmethod
    def setUpClass(cls):
        cls.desk = Desk("join", with_sound=True, desk_account="desk2", mic_hz=DESK_HZ)

    @classmethod
    def tearDownClass(cls):
        cls.desk.close()

    def tearDown(self):
        # A test that failed half-way may leave the desk in a call: leave it, so the next test
        # starts from no leg.
        d = self.desk
        try:
            if d.driver.find_elements(By.CSS_SELECTOR, '#call-bar .leg-state[data-state="connected"]'):
                self.bar_click("leg-leave")
                self.wait_leg("the leg to end", state="ended")
        finally:
            d.kill_sipps()

    def leg(self, selector="#call-bar .leg-state"):
        return self.desk.driver.find_element(By.CSS_SELECTOR, selector)

    def wait_leg(self, what, **attrs):
        def ok(_):
            e = self.leg()
            return all(e.get_attribute(f"data-{k}") == v for k, v in attrs.items()) and e
        return self.desk.wait_for(ok, what)

    def bar_click(self, cls):
        # The bar is redrawn when the leg changes (device reports): find the button afresh.
        self.desk.wait_for(
            lambda drv: drv.find_element(By.CSS_SELECTOR, f"#call-bar button.{cls}").click() or True,
            f"a click on {cls}",
        )

    def test_listen_talk_mute_leave_while_the_alarm_keeps_sounding(self):
        d = self.desk
        peer = RtpPeer()
        try:
            caller, provider, card = d.media_call("911", "Bob Stream", peer, hold_ms=30000)
            d.wait_for(lambda _: d.alarm() == "sounding", "the alarm to sound")

            # Listen: the officer hears caller and operator, and is heard by nobody.
            card.click(".leg-controls button.join-listen")
            self.wait_leg("the listening leg", state="connected", mode="listen", **{"call-id": card.call_id})
            self.wait_leg("call audio at the desk", hearing="true")
            d.wait_for(lambda _: "Listening" in self.leg().text, "the listening words")
            d.wait_for(lambda _: self.leg("#call-bar .leg-speaker").get_attribute("data-ok") == "true",
                       "the call audio on the speaker")
            joined = d.wait_for(lambda _: d.db("SELECT payload FROM events WHERE kind = 'desk-joined'"), "desk-joined")
            self.assertEqual(json.loads(joined[0][0])["kind"]["desk"], "Control room")
            self.assertEqual(json.loads(joined[0][0])["kind"]["mode"], "listen")
            # Hearing the call never silences the alarm of an unacknowledged call.
            self.assertEqual(d.alarm(), "sounding")
            d.screenshot("leg-listening")
            listen_end = time.monotonic()

            # Talk: the microphone's tone reaches the operator.
            self.bar_click("leg-talk")
            self.wait_leg("the talking leg", state="connected", mode="talk")
            d.wait_for(lambda _: self.leg("#call-bar .leg-microphone").get_attribute("data-ok") == "true",
                       "the microphone")
            talking = time.monotonic()
            d.wait_for(lambda _: peer.level(DESK_HZ, after=talking) > 1500, "the officer's voice at the operator")
            self.assertLess(peer.level(DESK_HZ, until=listen_end), 100, "a listening desk was heard")
            self.assertGreater(peer.level(CALLER_HZ), 1500, "the caller's stream reaches the operator")
            d.screenshot("leg-talking")

            # Mute: nothing more from the desk.
            self.bar_click("leg-mute")
            self.wait_leg("muted", muted="true")
            muted = time.monotonic() + 0.3  # what was in flight
            d.wait_for(lambda _: any(t > muted + 1.0 for t, _ in list(peer.heard)), "a second of audio after muting")
            self.assertLess(peer.level(DESK_HZ, after=muted), 100, "a muted desk was heard")

            # Leave: the call goes on without the desk, and the alarm still follows the board.
            self.bar_click("leg-leave")
            self.wait_leg("the leg to end", state="ended")
            d.wait_for(lambda _: d.db("SELECT 1 FROM events WHERE kind = 'desk-left'"), "desk-left in the audit log")
            self.assertEqual(card.attr("data-state"), "answered", "the call must go on after the desk leaves")
            self.assertEqual(d.alarm(), "sounding")
            card.click("button.ack-button")
            d.wait_for(lambda _: d.alarm() == "off", "the alarm to stop")

            self.assertEqual(caller.wait(WAIT + 60), 0, caller.stderr.read().decode())
            self.assertEqual(provider.wait(WAIT), 0, provider.stderr.read().decode())
            card.wait_attr("data-state", "ended", "the call to end")

            # The recording, checked against the audit log, plays from the history.
            d.wait_for(lambda _: d.db("SELECT 1 FROM events WHERE call_id = ? AND kind = 'recorded'", card.call_id),
                       "the recording in the audit log")
            d.driver.find_element(By.ID, "tab-history").click()
            row_sel = f'tr.history-row[data-call-id="{card.call_id}"]'

            def open_detail(drv):
                cell = drv.find_element(By.CSS_SELECTOR, f"{row_sel} td")
                drv.execute_script("arguments[0].scrollIntoView({block: 'center'})", cell)
                cell.click()
                return drv.find_element(By.ID, "detail-recording").is_displayed()

            d.wait_for(open_detail, "the call's recording in the history")
            check = d.driver.find_element(By.ID, "recording-check")
            self.assertEqual(check.get_attribute("data-ok"), "true", check.text)
            self.assertIn("matches the audit log", check.text)
            d.driver.find_element(By.ID, "recording-play").click()
            d.wait_for(lambda drv: drv.find_element(By.ID, "playback-state").get_attribute("data-state") == "playing",
                       "the recording to play")
            d.driver.find_element(By.ID, "recording-stop").click()
            d.wait_for(lambda drv: drv.find_element(By.ID, "playback-state").get_attribute("data-state") == "stopped",
                       "the playback to stop")
            d.screenshot("recording-playback")
            d.driver.find_element(By.ID, "tab-alerts").click()
        finally:
            peer.close()

    def test_hearing_one_call_never_stops_the_alarm_of_another(self):
        d = self.desk
        peer = RtpPeer()
        try:
            caller, provider, first = d.media_call("911", "Carol First", peer, hold_ms=20000)
            first.click(".leg-controls button.join-listen")
            self.wait_leg("the listening leg", state="connected", mode="listen", **{"call-id": first.call_id})
            first.click("button.ack-button")
            d.wait_for(lambda _: d.alarm() == "off", "the alarm to stop after the acknowledgement")
            # While the officer listens to the first call, a second emergency comes in.
            second_caller = d.call("9911", "Dave Second", hold_ms=500)
            second = d.card("Dave Second")
            d.wait_for(lambda _: d.alarm() == "sounding", "the alarm of the second call")
            self.wait_leg("the first call still heard", state="connected", hearing="true", **{"call-id": first.call_id})
            # Joining it is offered only after leaving the first: one leg at a time.
            button = second.fresh(lambda e: e.find_element(By.CSS_SELECTOR, ".leg-controls button.join-listen"))
            self.assertFalse(button.is_enabled())
            d.screenshot("leg-second-alarm")
            second.click("button.ack-button")
            self.bar_click("leg-leave")
            self.wait_leg("the leg to end", state="ended")
            second_caller.kill()
        finally:
            peer.close()


class CallerTextAndTestCalls(unittest.TestCase):
    """No sound device here: the visual-only alarm, caller markup shown as text, test calls."""

    @classmethod
    def setUpClass(cls):
        cls.desk = Desk("nosound", with_sound=False)

    @classmethod
    def tearDownClass(cls):
        cls.desk.close()

    def tearDown(self):
        self.desk.kill_sipps()

    def test_markup_in_a_display_name_is_shown_as_text(self):
        d = self.desk
        name = "<img src=x onerror=alert(1)>"
        provider = d.start_provider()
        caller = d.call("911", name, hold_ms=500)
        card = d.card(name)
        self.assertEqual(card.find_all("img"), [])
        self.assertEqual(d.driver.find_elements(By.CSS_SELECTOR, "img[src=x]"), [])
        with self.assertRaises(NoAlertPresentException):
            d.driver.switch_to.alert.text
        # No device: the alarm is visual, and the status bar says why.
        d.wait_for(lambda _: d.alarm() == "silent", "the visual-only alarm")
        audio = d.driver.find_element(By.ID, "status-audio")
        self.assertEqual(audio.get_attribute("data-ok"), "false")
        self.assertIn("visual only", d.status_text("status-audio"))
        d.screenshot("alert-markup-name")
        card.click("button.ack-button")
        d.wait_for(lambda _: d.alarm() == "off", "the alarm to stop")
        self.assertEqual(caller.wait(WAIT), 0, caller.stderr.read().decode())
        self.assertEqual(provider.wait(WAIT), 0, provider.stderr.read().decode())

    def test_a_leg_without_sound_devices_stays_connected_and_says_why(self):
        d = self.desk
        peer = RtpPeer()
        try:
            caller, provider, card = d.media_call("911", "Erin Nodevice", peer, hold_ms=8000)
            # The lab's first account (the lobby desk) may only listen: no Talk is offered.
            self.assertEqual(card.find_all(".leg-controls button.join-talk"), [])
            card.click(".leg-controls button.join-listen")
            leg = lambda sel: d.driver.find_element(By.CSS_SELECTOR, f"#call-bar {sel}")
            d.wait_for(lambda _: leg(".leg-state").get_attribute("data-state") == "connected", "the leg")
            d.wait_for(lambda _: leg(".leg-speaker").get_attribute("data-ok") == "false", "the missing speaker")
            self.assertIn("stays connected", leg(".leg-speaker").text)
            d.wait_for(lambda _: leg(".leg-state").get_attribute("data-hearing") == "true", "call audio arriving")
            joined = d.db("SELECT payload FROM events WHERE kind = 'desk-joined'")
            self.assertEqual(json.loads(joined[-1][0])["kind"]["desk"], "Lobby desk")
            d.screenshot("leg-no-device")
            card.click("button.ack-button")
            # The caller hangs up while the desk is on: desk and operator stay connected
            # (last-party clear) until the desk leaves, which then ends the operator's leg.
            self.assertEqual(caller.wait(WAIT), 0, caller.stderr.read().decode())
            d.wait_for(lambda _: d.db("SELECT 1 FROM events WHERE kind = 'party-left'"), "party-left")
            self.assertEqual(leg(".leg-state").get_attribute("data-state"), "connected")
            self.assertIsNone(provider.poll(), "the operator must stay connected with the desk")
            d.driver.find_element(By.CSS_SELECTOR, "#call-bar button.leg-leave").click()
            self.assertEqual(provider.wait(WAIT), 0, provider.stderr.read().decode())
            d.wait_for(lambda _: leg(".leg-state").get_attribute("data-state") == "ended", "the leg to end")
            card.wait_attr("data-state", "ended", "the call to end with the last party")
        finally:
            peer.close()

    def test_test_call_is_marked_and_raises_no_alarm(self):
        d = self.desk
        provider = d.start_provider()
        caller = d.call("933", "Address Test", hold_ms=500)
        card = d.card("Address Test")
        self.assertEqual(card.attr("data-test-call"), "true")
        self.assertIn("TEST", card.text(".alert-kind"))
        self.assertEqual(card.find_all("button.ack-button"), [])
        card.wait_attr("data-state", ("answered", "ended"), "the test call to connect")
        self.assertEqual(d.alarm(), "off")
        self.assertEqual(d.driver.find_element(By.ID, "status-core").get_attribute("data-state"), "running")
        d.screenshot("alert-test-call")
        self.assertEqual(caller.wait(WAIT), 0, caller.stderr.read().decode())
        self.assertEqual(provider.wait(WAIT), 0, provider.stderr.read().decode())

    def test_place_test_call_button_sends_a_real_call(self):
        d = self.desk
        provider = d.start_provider()
        d.driver.find_element(By.ID, "place-test-call").click()
        result = d.wait_for(
            lambda drv: (t := drv.find_element(By.ID, "test-call-result").text) and not t.endswith("…") and t,
            "the test call result",
        )
        self.assertIn("answered", result)
        self.assertEqual(provider.wait(WAIT), 0, provider.stderr.read().decode())
        card = d.card("sosdesk desk test")
        self.assertEqual(card.attr("data-test-call"), "true")
        self.assertEqual(d.alarm(), "off")
        rows = d.db("SELECT COUNT(*) FROM calls WHERE test_call = 1 AND caller_name = 'sosdesk desk test'")
        self.assertEqual(rows[0][0], 1)


    def test_zz_the_alarm_sounds_once_a_sound_device_appears(self):
        # Runs last in this class (it gives the desk a sound card). An emergency while there is
        # no device: the alarm is visual. Then a device appears (a headset plugged in, a sound
        # server back): the siren starts on it, without waiting for another emergency.
        d = self.desk
        provider = d.start_provider()
        caller = d.call("911", "Dev Appearing", hold_ms=500)
        card = d.card("Dev Appearing")
        d.wait_for(lambda _: d.alarm() == "silent", "the visual-only alarm")
        asoundrc = d.home / ".asoundrc"
        try:
            asoundrc.write_text("pcm.!default { %s }\n" % d.sound_card())
            d.wait_for(lambda _: d.alarm() == "sounding", "the alarm to sound on the new device")
            peak, _ = d.wait_for(lambda _: alarm_loudness(d), "alarm audio on the new device")
            self.assertGreater(peak, 0.5, "the alarm is not loud")
            card.click("button.ack-button")
            d.wait_for(lambda _: d.alarm() == "off", "the alarm to stop")
        finally:
            asoundrc.unlink(missing_ok=True)
        self.assertEqual(caller.wait(WAIT), 0, caller.stderr.read().decode())
        self.assertEqual(provider.wait(WAIT), 0, provider.stderr.read().decode())


class ConsoleAndStatus(unittest.TestCase):
    """Issue 17: one status line an officer reads at a glance (details on demand), a call worked
    from the keyboard alone, a notification target's retries folded into one line, and the
    high-contrast theme. No sound device and no notification daemon here: both said in plain
    words."""

    @classmethod
    def setUpClass(cls):
        cls.desk = Desk("console", with_sound=False)

    @classmethod
    def tearDownClass(cls):
        cls.desk.close()

    def tearDown(self):
        self.desk.kill_sipps()

    def test_status_line_keyboard_only_folded_retries_and_high_contrast(self):
        d = self.desk
        # Ready, in plain words; addresses and paths only under Details, which start closed.
        d.wait_for(lambda _: d.headline()[1].startswith("Ready"), "the ready line")
        self.assertEqual(d.headline()[0], "ready")
        details = d.driver.find_element(By.ID, "status-details")
        self.assertFalse(details.is_displayed())
        main = d.driver.find_element(By.CSS_SELECTOR, "#statusbar .status-main").text
        for raw in ("127.0.0.1", "/", "os error", "sqlite"):
            self.assertNotIn(raw, main)
        self.assertIn("Keys:", d.driver.find_element(By.ID, "shortcuts").text)

        # No provider answers: the lab's two routes time out (2 s each) and the line says so.
        # The caller stays 25 s after the answer; the keyboard part below takes a few.
        caller = d.sipp("caller_hangs_up.xml", "-s", "911", "-set", "name", "Rita Routes", "-set", "hold_ms", "25000",
                        "-p", str(next(d.caller_ports)), timeout=90)
        d.wait_for(lambda _: d.headline()[0] == "down", "the routes-down line")
        self.assertEqual(d.headline()[1:], (
            "No route up for us-hq, uk-london — their emergency calls cannot get through",
            "Call your telecom administrator now.",
        ))
        # Details on demand (the D key): the missing sound device and notification service in
        # plain words, with what they mean.
        d.keys("d")
        d.wait_for(lambda _: details.is_displayed(), "the status details")
        also = d.driver.find_element(By.ID, "headline-also").text
        self.assertIn("No alarm sound on this computer — the alarm is visual only. Check the speakers or headset.", also)
        self.assertIn("No desktop pop-ups (no notification service) — alerts still come to the front of the screen", also)
        self.assertNotIn("unix:path", also)
        # The wiremap's share of located calls (issue 16), for the admin.
        self.assertIn("Located by the wiremap (last 7 days): calls", d.status_text("status-located"))
        d.screenshot("status-routes-down-details")
        d.keys("d")
        d.wait_for(lambda _: not details.is_displayed(), "the details to close")

        # The provider is back: the core's next round through the routes reaches the primary;
        # the secondary, never answered, stays down.
        provider = d.sipp("provider_answer.xml", "-p", str(d.provider), remote=False, timeout=90)
        card = d.card("Rita Routes")
        card.wait_attr("data-state", "answered", "the call to be answered")
        d.wait_for(lambda _: d.headline()[0] == "degraded", "the one-route-down line")
        d.screenshot("status-one-route-down")
        self.assertEqual(d.headline()[1], "Route provider-secondary is down — calls use the next route of their policy")

        # The lab's notification phone never answers: its attempts fold into one line.
        d.wait_for(lambda _: card.find_all('.timeline li[data-kind="notified"][data-repeats]'), "folded retries")
        subjects = [li.get_attribute("data-subject") for li in card.find_all('.timeline li[data-kind="notified"]')]
        self.assertEqual(len(subjects), len(set(subjects)), subjects)
        self.assertIn("attempts)", card.text('.timeline li[data-kind="notified"][data-repeats]'))

        # Keyboard only: N takes the call, A acknowledges it, L joins it listening, T is
        # refused for an account that may only listen.
        d.keys("n")
        card.wait_attr("aria-current", "true", "the call selected by N")
        d.wait_for(lambda drv: drv.switch_to.active_element.get_attribute("data-call-id") == card.call_id,
                   "the focus on the selected call")
        d.keys("a")
        card.wait_attr("data-acknowledged", "true", "the acknowledgement by A")
        d.keys("l")
        leg = lambda sel: d.driver.find_element(By.CSS_SELECTOR, f"#call-bar {sel}")
        d.wait_for(lambda _: leg(".leg-state").get_attribute("data-state") == "connected", "the leg joined by L")
        self.assertEqual(leg(".leg-state").get_attribute("data-mode"), "listen")
        d.keys("t")
        d.wait_for(lambda _: card.find_all(".card-error"), "the refusal of T")
        self.assertIn("may only listen", card.text(".card-error"))
        d.screenshot("console-keyboard-leg")

        # High contrast, readable from across the room: black and white.
        d.driver.find_element(By.ID, "tab-settings").click()
        d.screenshot("view-settings")
        Select(d.driver.find_element(By.ID, "settings-theme")).select_by_value("high-contrast")
        d.driver.find_element(By.ID, "tab-alerts").click()
        bg = d.driver.execute_script("return getComputedStyle(document.body).backgroundColor")
        self.assertEqual(bg, "rgb(0, 0, 0)")
        d.screenshot("console-high-contrast")
        d.driver.find_element(By.ID, "tab-settings").click()
        Select(d.driver.find_element(By.ID, "settings-theme")).select_by_value("system")
        d.driver.find_element(By.ID, "tab-history").click()
        d.screenshot("view-history")
        d.driver.find_element(By.ID, "tab-alerts").click()

        leg(".leg-leave").click()
        d.wait_for(lambda _: leg(".leg-state").get_attribute("data-state") == "ended", "the leg to end")
        self.assertEqual(caller.wait(WAIT), 0, caller.stderr.read().decode())
        self.assertEqual(provider.wait(WAIT), 0, provider.stderr.read().decode())


    def test_zz_a_click_held_while_its_card_is_redrawn_still_acknowledges(self):
        """The officer presses Acknowledge, an event of the call redraws its card (the lab's
        notification phone never answers: an attempt about every second), then the officer lets
        go: that is a click, and the call is acknowledged. A card rebuilt from new elements lost
        such clicks (the press on a button no longer in the page)."""
        d = self.desk
        provider = d.sipp("provider_answer.xml", "-p", str(d.provider), remote=False, timeout=90)
        caller = d.call("911", "Hana Held", hold_ms=15000)
        card = d.card("Hana Held")
        card.wait_attr("data-state", "answered", "the call to be answered")
        d.wait_for(lambda _: d.alarm() == "silent", "the visual-only alarm")
        seq = int(card.attr("data-seq"))

        def press(e):
            button = e.find_element(By.CSS_SELECTOR, "button.ack-button")
            d.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
            ActionChains(d.driver).move_to_element(button).click_and_hold().perform()

        card.fresh(press)
        d.wait_for(lambda _: int(card.attr("data-seq")) > seq, "an event of the call while Acknowledge is held down")
        ActionChains(d.driver).release().perform()
        card.wait_attr("data-acknowledged", "true", "the acknowledgement by the click held across a redraw")
        d.wait_for(lambda _: d.alarm() == "off", "the alarm to stop")
        rows = d.db("SELECT payload FROM events WHERE call_id = ? AND kind = 'acknowledged'", card.call_id)
        self.assertEqual(len(rows), 1, rows)
        self.assertEqual(caller.wait(WAIT), 0, caller.stderr.read().decode())
        self.assertEqual(provider.wait(WAIT), 0, provider.stderr.read().decode())

class WebhookReceiver:
    """Alert webhooks on loopback: each request's path kept; `/first` accepted (200), `/second`
    refused (503), so the desk shows one delivered target and one being retried."""

    def __init__(self):
        import http.server

        self.paths = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.paths.append(self.path)
                self.send_response(200 if self.path == "/first" else 503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class EscalationOnTheDesk(unittest.TestCase):
    """Issue 15 item 2: the alert shows where the escalation stands: the tier reached, whom it
    alerted and how that went, a countdown to the next tier, and that an acknowledgement
    stopped it, by whom. The us-hq policy alerts webhook `first` at once and `second` after
    AFTER_S unless someone acknowledges."""

    AFTER_S = 10

    @classmethod
    def setUpClass(cls):
        cls.hooks = WebhookReceiver()
        tables = "".join(
            f'\n[[channel]]\nname = "{n}"\nkind = "webhook"\nurl = "http://127.0.0.1:{cls.hooks.port}/{n}"\n'
            f'secret = "e2e-webhook-secret-0123456789"\n' for n in ("first", "second"))
        policy = f'channels = ["first"]\nescalation = [{{ after_s = {cls.AFTER_S}, channels = ["second"] }}]\n'

        def edit(text):
            return text.replace('name = "us-hq"\n', f'name = "us-hq"\n{policy}', 1) + tables

        try:
            cls.desk = Desk("escalation", with_sound=False, edit_config=edit)
        except Exception:
            cls.hooks.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.desk.close()
        cls.hooks.close()

    def tearDown(self):
        self.desk.kill_sipps()

    def test_tier_targets_countdown_and_the_acknowledgement_that_stops_it(self):
        d = self.desk
        origin = f"http://127.0.0.1:{self.hooks.port}"
        d.start_provider()
        d.call("911", "Esme Stopped")
        card = d.card("Esme Stopped")
        d.wait_for(lambda _: card.find_all(f'.escalation li[data-target="{origin}"][data-outcome="delivered"]'),
                   "tier 1's webhook delivered")
        self.assertEqual(card.attr_of(".escalation", "data-tier"), "1")
        self.assertIn(f"Tier 1 · webhook first → {origin}: delivered", card.text(".escalation-targets"))
        # The countdown to tier 2 (or, on a very slow machine, that it is due).
        self.assertRegex(card.text(".escalation-next"), r"^tier 2 (in 0:(0\d|10)|due now)$")
        d.screenshot("escalation-tier-1-countdown")
        card.click(".ack-button")
        d.wait_for(lambda _: card.attr_of(".escalation", "data-stopped") == "true", "the escalation stopped")
        self.assertEqual(card.text(".escalation-state"),
                         f"Escalation: stopped at tier 1 of 2: acknowledged by {OFFICER}")
        self.assertFalse(card.find_all(".escalation-next"), "no countdown once stopped")
        d.screenshot("escalation-stopped-by-acknowledgement")
        d.kill_sipps()

        # Nobody acknowledges the next call: tier 2 is alerted, and its refused webhook shows.
        d.start_provider()
        d.call("911", "Omar Escalated")
        card = d.card("Omar Escalated")
        d.wait_for(lambda _: card.find_all('.escalation li[data-tier="2"][data-outcome="retrying"]'),
                   "tier 2's webhook refused and retried", timeout=WAIT + self.AFTER_S)
        self.assertEqual(card.attr_of(".escalation", "data-tier"), "2")
        targets = card.text(".escalation-targets")
        self.assertIn(f"Tier 2 · webhook second → {origin}: failed, retrying", targets)
        # Both webhooks share one origin: tier 1's delivery stays its own.
        self.assertIn(f"Tier 1 · webhook first → {origin}: delivered", targets)
        self.assertIn("all 2 tiers alerted · not acknowledged", card.text(".escalation-state"))
        self.assertIn("/second", self.hooks.paths)
        d.screenshot("escalation-tier-2")
        card.click(".ack-button")
        d.wait_for(lambda _: f"acknowledged by {OFFICER}" in card.text(".escalation-state"),
                   "the acknowledgement after the last tier")


class CrashedPage(unittest.TestCase):
    """The page's web process dies (a WebKit crash, the kernel's memory killer): the desk
    reloads the page, and the officer sees the same alerts on it again."""

    @classmethod
    def setUpClass(cls):
        cls.desk = Desk("crash", with_sound=False)

    @classmethod
    def tearDownClass(cls):
        cls.desk.close()

    def tearDown(self):
        # No settling: the webdriver session ended with the page.
        self.desk.kill_sipps(settle=False)

    def test_a_page_whose_web_process_dies_comes_back_with_its_alerts(self):
        d = self.desk
        provider = d.start_provider()
        caller = d.call("911", "Fay Crash", hold_ms=500)
        card = d.card("Fay Crash")
        self.assertEqual(caller.wait(WAIT), 0, caller.stderr.read().decode())
        self.assertEqual(provider.wait(WAIT), 0, provider.stderr.read().decode())
        card.wait_attr("data-state", "ended", "the call to end")
        self.assertEqual(len(d.page_loads()), 1, "the page started once")
        [old] = d.web_processes()
        os.kill(old, signal.SIGKILL)
        # WebKitWebDriver ends its session with the page's process, so the new page is seen
        # through what it reports to the desk: its start, and the cards it drew (their call
        # ids, read from its DOM).
        loads = wait_until(lambda: len(d.page_loads()) >= 2 and d.page_loads(), "the page to start again")
        self.assertEqual(loads[1:], [[card.call_id]], "the reloaded page shows the alert")
        new = d.web_processes()
        self.assertEqual(len(new), 1)
        self.assertNotEqual(new, [old])


class RemoteDeskApp(unittest.TestCase):
    """The desk app on "another machine": the core runs headless (`sosdesk serve`), the app
    connects to its HTTP API with a remote desk file and registers over SIP as the lab's desk2
    (Control room)."""

    @classmethod
    def setUpClass(cls):
        cls.core = HeadlessCore()
        cls.desk = Desk("remote", with_sound=False, remote=cls.core)

    @classmethod
    def tearDownClass(cls):
        cls.desk.close()
        cls.core.close()

    def tearDown(self):
        self.desk.kill_sipps()

    def test_alerts_shared_acknowledgement_and_a_core_that_goes_away(self):
        d, core = self.desk, self.core
        d.wait_for(lambda _: "registered as sip:desk2@" in d.status_text("status-remote"), "the SIP registration")
        self.assertIn("live events from the core", d.status_text("status-remote"))
        self.assertIn("Connected to the core", d.status_text("status-core"))

        # An emergency call at the core reaches this desk, with the caller's location.
        provider = d.start_provider()
        caller = d.call("9911", "Remote Alice", hold_ms=1500)
        card = d.card("Remote Alice")
        self.assertIn("EMERGENCY", card.text(".alert-kind"))
        self.assertIn("Microsoft Way", card.text(".location-address"))
        self.assertEqual(card.text(".location-room"), "Room 210")
        d.wait_for(lambda _: d.alarm() == "silent", "the (visual) alarm")
        d.screenshot("remote-alert")

        # The lobby desk acknowledges it (through the API, as its app does): this desk shows
        # who took it and where, and falls silent (us-hq: any desk's acknowledgement counts).
        status, ev = api_post(core.api, ("desk1", "lobby-desk-secret"),
                              f"/api/v1/calls/{card.call_id}/acknowledge", {"officer": "Officer Lobby"})
        self.assertEqual((status, ev["kind"]["desk"]), (200, "Lobby desk"))
        card.wait_attr("data-acknowledged", "true", "the other desk's acknowledgement")
        self.assertIn("Acknowledged by Officer Lobby (Lobby desk)", card.text(".ack-by"))
        d.wait_for(lambda _: d.alarm() == "off", "the alarm to stop")
        d.screenshot("remote-acknowledged-elsewhere")
        self.assertEqual(caller.wait(WAIT), 0, caller.stderr.read().decode())
        self.assertEqual(provider.wait(WAIT), 0, provider.stderr.read().decode())

        # This desk's own acknowledgement is audited at the core with the officer and the desk.
        provider = d.start_provider()
        caller = d.call("911", "Remote Bob", hold_ms=500)
        card = d.card("Remote Bob")
        d.wait_for(lambda _: d.alarm() == "silent", "the alarm for the second call")
        card.click("button.ack-button")
        card.wait_attr("data-acknowledged", "true", "this desk's acknowledgement")
        rows = d.db("SELECT payload FROM events WHERE call_id = ? AND kind = 'acknowledged'", card.call_id)
        self.assertEqual(len(rows), 1)
        kind = json.loads(rows[0][0])["kind"]
        self.assertEqual((kind["by"], kind["desk"]), (OFFICER, "Control room"))
        self.assertEqual(caller.wait(WAIT), 0, caller.stderr.read().decode())
        self.assertEqual(provider.wait(WAIT), 0, provider.stderr.read().decode())

        # The core goes away: the desk says so plainly, and reconnects by itself when it is back.
        core.stop()
        d.wait_for(lambda drv: drv.find_element(By.ID, "status-core").get_attribute("data-state") == "disconnected",
                   "the desk to show it lost the core")
        self.assertIn("NOT CONNECTED", d.status_text("status-core"))
        self.assertIn("NOT CONNECTED", d.status_text("status-remote"))
        d.screenshot("remote-not-connected")
        core.start()
        d.wait_for(lambda drv: drv.find_element(By.ID, "status-core").get_attribute("data-state") == "running",
                   "the desk to reconnect")
        provider = d.start_provider()
        caller = d.call("911", "Remote Carol", hold_ms=500)
        d.card("Remote Carol")
        d.wait_for(lambda _: d.alarm() == "silent", "the alarm after the reconnection")
        self.assertEqual(caller.wait(WAIT), 0, caller.stderr.read().decode())
        self.assertEqual(provider.wait(WAIT), 0, provider.stderr.read().decode())


# A floor plan as an editor exports it (800 × 400): four rooms, their numbers.
FLOOR_PLAN_SVG = """<svg xmlns="http://www.w3.org/2000/svg" width="800" height="400" viewBox="0 0 800 400">
  <rect x="4" y="4" width="792" height="392" fill="#f4f4f0" stroke="#222" stroke-width="8"/>
  <g stroke="#222" stroke-width="4"><line x1="400" y1="0" x2="400" y2="400"/><line x1="0" y1="200" x2="800" y2="200"/></g>
  <g font-size="40" font-family="sans-serif" fill="#444">
    <text x="30" y="60">301</text><text x="430" y="60">302</text><text x="30" y="260">303</text><text x="430" y="260">304</text>
  </g>
</svg>
"""
SUBNET_HEADER = ("Subnet,Description,Location,CompanyName,HouseNumber,HouseNumberSuffix,PreDirectional,StreetName,"
                 "StreetSuffix,PostDirectional,City,State,PostalCode,Country,Floor,Room,FloorPlan,FloorPlanX,FloorPlanY")
PIN = (0.3, 0.7)  # room 303: left half, lower half


class FloorPlanOnTheAlert(unittest.TestCase):
    """Issue 16 item 4: the caller's ERL has a floor plan (imported with the CSV's FloorPlan
    columns into the desk's store before it starts); the alert and the call detail show the plan
    with the pin on the caller's point, and the pin stays there when the window is resized."""

    @classmethod
    def setUpClass(cls):
        def import_plan(desk):
            (desk.dir / "floor3.svg").write_text(FLOOR_PLAN_SVG)
            csv = desk.dir / "subnets.csv"
            # The lab's callers come from 127.0.0.1: the wiremap beats the lab's site ERL.
            csv.write_text(f"{SUBNET_HEADER}\n127.0.0.1/32,Lab,East wing,Litware,1234,,,163rd,Ave,NE,Redmond,WA,"
                           f"98052,US,3,303,floor3.svg,{PIN[0]},{PIN[1]}\n")
            out = subprocess.run([CORE_BIN, "lis", "import", str(csv), "--kind", "subnets", "--store", str(desk.store)],
                                 capture_output=True, text=True)
            assert out.returncode == 0, out.stdout + out.stderr
        if not os.access(CORE_BIN, os.X_OK):
            sys.exit(f"sosdesk not found at {CORE_BIN}: build it (cargo build) or set SOSDESK_BIN")
        cls.desk = Desk("floorplan", with_sound=False, prepare=import_plan)

    @classmethod
    def tearDownClass(cls):
        cls.desk.close()

    def tearDown(self):
        self.desk.kill_sipps()

    def pin_on_image(self, scope):
        """Where the pin's centre is on the plan's image, as fractions of its drawn width and
        height, once the image is loaded and drawn (None until then)."""
        return self.desk.driver.execute_script(
            """
            const fig = arguments[0].querySelector('figure.floor-plan[data-loaded="true"]');
            if (!fig) return null;
            const img = fig.querySelector('img.floor-plan-image'), pin = fig.querySelector('.floor-plan-pin');
            if (!img.complete || img.naturalWidth === 0) return null;
            fig.scrollIntoView({block: 'center'});
            const i = img.getBoundingClientRect(), p = pin.getBoundingClientRect();
            if (i.width < 50) return null;
            return [(p.left + p.width / 2 - i.left) / i.width, (p.top + p.height / 2 - i.top) / i.height,
                    i.width, i.height, img.naturalWidth, img.currentSrc.slice(0, 26)];
            """,
            scope,
        )

    def assert_pin(self, where, scope_of, what):
        d = self.desk
        found = d.wait_for(lambda _: self.pin_on_image(scope_of()), f"the floor plan with its pin {what}")
        x, y, width, height, natural, src = found
        self.assertEqual(src, "data:image/svg+xml;base64,", where)
        self.assertAlmostEqual(x, PIN[0], delta=0.01, msg=f"{where}: pin at x {x}")
        self.assertAlmostEqual(y, PIN[1], delta=0.01, msg=f"{where}: pin at y {y}")
        # Drawn at the plan's proportions (800 × 400), whatever the width.
        self.assertAlmostEqual(width / height, 2.0, delta=0.05, msg=where)
        return width

    def test_the_alert_and_the_call_detail_show_the_plan_with_the_pin(self):
        d = self.desk
        provider = d.start_provider()
        caller = d.call("9911", "Floor Plan Caller", hold_ms=4000)
        card = d.card("Floor Plan Caller")
        self.assertEqual(card.text(".location-room"), "Room 303")
        self.assertEqual(card.attr_of("figure.floor-plan", "data-x"), str(PIN[0]))
        wide = self.assert_pin("alert", card.element, "on the alert")
        d.screenshot("alert-floor-plan")

        # Another window size: the board lays its cards out anew (one column when narrow, so this
        # card gets wider), the plan is drawn at the card's new size and the pin stays on its spot.
        d.driver.set_window_size(820, 700)
        d.wait_for(lambda _: abs(self.assert_pin("resized alert", card.element, "after a resize") - wide) > 20,
                   "the plan to scale with the card")
        d.screenshot("alert-floor-plan-resized")
        d.driver.set_window_size(1280, 860)

        self.assertEqual(caller.wait(WAIT), 0, caller.stderr.read().decode())
        self.assertEqual(provider.wait(WAIT), 0, provider.stderr.read().decode())
        card.wait_attr("data-state", "ended", "the call to end")

        # The call detail in the history shows the same plan and pin.
        call_id = card.call_id
        d.driver.find_element(By.ID, "tab-history").click()
        d.driver.find_element(By.ID, "history-run").click()
        row_sel = f'tr.history-row[data-call-id="{call_id}"]'

        def open_detail(drv):
            cell = drv.find_element(By.CSS_SELECTOR, f"{row_sel} td")
            drv.execute_script("arguments[0].scrollIntoView({block: 'center'})", cell)
            cell.click()
            return True

        d.wait_for(open_detail, "a click on the history row")
        self.assert_pin("call detail", lambda: d.driver.find_element(By.ID, "detail-summary"), "in the call detail")
        d.screenshot("history-detail-floor-plan")



# A campus map at the proportions its edges have in Web Mercator (674 × 500); the point of
# caller_pidf_geo.xml (47.6445, -122.131, ±25 m) is at its centre.
SITE_MAP_SVG = """<svg xmlns="http://www.w3.org/2000/svg" width="674" height="500" viewBox="0 0 674 500">
  <rect width="674" height="500" fill="#eef2e6"/>
  <rect x="200" y="150" width="274" height="200" fill="#c8c2b4" stroke="#555" stroke-width="3"/>
  <text x="230" y="190" font-size="24">Building 4</text>
  <path d="M0 420 H674" stroke="#fff" stroke-width="18"/>
</svg>
"""
SITE_MAP_EDGES = {"north": 47.646, "south": 47.643, "west": -122.134, "east": -122.128}
SITE_MAP_POINT = (47.6445, -122.131, 25.0)


def site_map_expected():
    """Where the point and its uncertainty are on the map, as fractions of the image (the
    projection of src/location/sitemap.rs, computed here independently)."""
    import math
    lat, lon, r = SITE_MAP_POINT
    e = SITE_MAP_EDGES
    merc = lambda d: math.asinh(math.tan(math.radians(d)))  # noqa: E731
    width, height = math.radians(e["east"] - e["west"]), merc(e["north"]) - merc(e["south"])
    ground = 6378137.0 * math.cos(math.radians(lat))
    return ((lon - e["west"]) / (e["east"] - e["west"]), (merc(e["north"]) - merc(lat)) / height,
            r / (width * ground), r / (height * ground))


class SiteMapOnTheAlert(unittest.TestCase):
    """Issue 16 item 4: a caller's PIDF-LO gives a point (no address); the desk's store has a site
    map around it (`lis sitemap set` before the app starts). The alert and the call detail show
    the map with the pin on the point and the uncertainty circle, the geo: link kept."""

    @classmethod
    def setUpClass(cls):
        def set_map(desk):
            (desk.dir / "campus.svg").write_text(SITE_MAP_SVG)
            e = SITE_MAP_EDGES
            out = subprocess.run([CORE_BIN, "lis", "sitemap", "set", "--name", "HQ campus",
                                  "--image", str(desk.dir / "campus.svg"), "--north", str(e["north"]),
                                  "--south", str(e["south"]), "--west", str(e["west"]), "--east", str(e["east"]),
                                  "--store", str(desk.store)], capture_output=True, text=True)
            assert out.returncode == 0, out.stdout + out.stderr
            assert "warning" not in out.stdout, out.stdout
        if not os.access(CORE_BIN, os.X_OK):
            sys.exit(f"sosdesk not found at {CORE_BIN}: build it (cargo build) or set SOSDESK_BIN")
        cls.desk = Desk("sitemap", with_sound=False, prepare=set_map)

    @classmethod
    def tearDownClass(cls):
        cls.desk.close()

    def tearDown(self):
        self.desk.kill_sipps()

    def drawn(self, scope):
        """The pin's centre and the uncertainty ellipse's size on the drawn map, as fractions of
        the image's drawn width and height, once the image is loaded and drawn (None until then)."""
        return self.desk.driver.execute_script(
            """
            const fig = arguments[0].querySelector('figure.site-map[data-loaded="true"]');
            if (!fig) return null;
            const img = fig.querySelector('img.site-map-image'), pin = fig.querySelector('.site-map-pin');
            const area = fig.querySelector('.site-map-uncertainty');
            if (!img.complete || img.naturalWidth === 0) return null;
            fig.scrollIntoView({block: 'center'});
            const i = img.getBoundingClientRect(), p = pin.getBoundingClientRect(), a = area.getBoundingClientRect();
            if (i.width < 50) return null;
            return [(p.left + p.width / 2 - i.left) / i.width, (p.top + p.height / 2 - i.top) / i.height,
                    a.width / i.width, a.height / i.height, (a.left + a.width / 2 - i.left) / i.width,
                    i.width / i.height, img.currentSrc.slice(0, 26), img.alt,
                    fig.querySelector('figcaption').textContent, pin.getAttribute('aria-label')];
            """,
            scope,
        )

    def assert_map(self, where, scope_of):
        found = self.desk.wait_for(lambda _: self.drawn(scope_of()), f"the site map with its pin ({where})")
        x, y, aw, ah, ax, ratio, src, alt, caption, label = found
        ex, ey, erx, ery = site_map_expected()
        self.assertEqual(src, "data:image/svg+xml;base64,", where)
        self.assertEqual((alt, caption, label), ("Site map: HQ campus", "Site map: HQ campus", "Caller's position ±25 m"))
        self.assertAlmostEqual(x, ex, delta=0.01, msg=f"{where}: pin at x {x}")
        self.assertAlmostEqual(y, ey, delta=0.01, msg=f"{where}: pin at y {y}")
        # The ±25 m circle: 2 × 25 m of the map's ~450 m width and ~334 m height, centred on the pin.
        self.assertAlmostEqual(aw, 2 * erx, delta=0.01, msg=f"{where}: ellipse width {aw}")
        self.assertAlmostEqual(ah, 2 * ery, delta=0.01, msg=f"{where}: ellipse height {ah}")
        self.assertAlmostEqual(ax, ex, delta=0.01, msg=where)
        # Drawn at the map's proportions, so the circle is round on screen.
        self.assertAlmostEqual(ratio, 674 / 500, delta=0.03, msg=where)
        self.assertAlmostEqual(aw * ratio / ah, 1.0, delta=0.05, msg=f"{where}: a circle, not an ellipse")

    def test_the_alert_and_the_call_detail_show_the_point_on_the_site_map(self):
        d = self.desk
        provider = d.start_provider()
        caller = d.sipp("caller_pidf_geo.xml", "-s", "9911", "-set", "name", "Site Map Caller",
                        "-set", "hold_ms", "4000", "-p", str(next(d.caller_ports)))
        card = d.card("Site Map Caller")
        self.assertEqual(card.attr_of("figure.site-map", "data-map"), "HQ campus")
        self.assertAlmostEqual(float(card.attr_of("figure.site-map", "data-x")), site_map_expected()[0], delta=1e-9)
        self.assertEqual(card.attr_of(".geo-uri", "value"), "geo:47.644500,-122.131000;u=25")
        self.assert_map("alert", card.element)
        d.screenshot("alert-site-map")

        self.assertEqual(caller.wait(WAIT), 0, caller.stderr.read().decode())
        self.assertEqual(provider.wait(WAIT), 0, provider.stderr.read().decode())
        card.wait_attr("data-state", "ended", "the call to end")

        # The call detail in the history shows the same map and pin.
        call_id = card.call_id
        d.driver.find_element(By.ID, "tab-history").click()
        d.driver.find_element(By.ID, "history-run").click()
        row_sel = f'tr.history-row[data-call-id="{call_id}"]'

        def open_detail(drv):
            cell = drv.find_element(By.CSS_SELECTOR, f"{row_sel} td")
            drv.execute_script("arguments[0].scrollIntoView({block: 'center'})", cell)
            cell.click()
            return True

        d.wait_for(open_detail, "a click on the history row")
        self.assert_map("call detail", lambda: d.driver.find_element(By.ID, "detail-summary"))
        d.screenshot("history-detail-site-map")

    def test_a_point_no_site_map_covers_is_said_so_under_its_coordinates(self):
        # Another desk whose only site map is of another place (north of the point).
        def set_other_map(desk):
            (desk.dir / "other.svg").write_text(SITE_MAP_SVG)
            out = subprocess.run([CORE_BIN, "lis", "sitemap", "set", "--name", "Elsewhere", "--image",
                                  str(desk.dir / "other.svg"), "--north", "47.80", "--south", "47.70",
                                  "--west", "-122.20", "--east", "-122.00", "--store", str(desk.store)],
                                 capture_output=True, text=True)
            assert out.returncode == 0, out.stdout + out.stderr
        d = Desk("sitemap-none", with_sound=False, prepare=set_other_map)
        try:
            provider = d.start_provider()
            caller = d.sipp("caller_pidf_geo.xml", "-s", "9911", "-set", "name", "Unmapped Caller",
                            "-set", "hold_ms", "1000", "-p", str(next(d.caller_ports)))
            card = d.card("Unmapped Caller")
            self.assertEqual(card.text(".site-map-none"), "No site map covers this point")
            self.assertEqual(card.find_all("figure.site-map"), [])
            self.assertEqual(card.attr_of(".geo-uri", "value"), "geo:47.644500,-122.131000;u=25")
            d.screenshot("alert-no-site-map")
            self.assertEqual(caller.wait(WAIT), 0, caller.stderr.read().decode())
            self.assertEqual(provider.wait(WAIT), 0, provider.stderr.read().decode())
        finally:
            d.close()

if __name__ == "__main__":
    unittest.main(verbosity=2)
