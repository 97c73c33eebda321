"""What the two client drivers share: a child process whose stdout lines are kept and waited on.

Every wait is on a condition (a line, an event) with a deadline; when it fails, the error says
what was awaited and the driver keeps the whole output for the failure message (tail()).
"""
import re
import signal
import subprocess
import threading
import time

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Peer:
    name = "peer"

    def __init__(self, argv, env=None, log=None):
        self.lines, self.cond = [], threading.Condition()
        self.line_i = 0  # wait_line() looks at lines after the last one it matched
        self.log = open(log, "w") if log else None
        # stdin is a pipe kept open: both clients read commands from it (baresip's stdio module
        # also needs a pollable fd 0: /dev/null fails under epoll with EPERM).
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=env, preexec_fn=die_with_parent)
        threading.Thread(target=self._read, daemon=True).start()

    def clean(self, line):
        """The line as a terminal shows it: no colours; after a carriage return, what overwrote it."""
        return ANSI.sub("", line).split("\r")[-1]

    def note(self, s):
        if self.log:
            self.log.write(s + "\n")
            self.log.flush()

    def _read(self):
        for raw in self.proc.stdout:
            line = self.clean(raw.decode("utf-8", "replace").rstrip("\r\n"))
            self.note(line)
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_line(self, regex, timeout=10, what=None):
        """The next stdout line (after the last one matched) matching regex, within timeout s."""
        end, rx = time.time() + timeout, re.compile(regex)
        with self.cond:
            while True:
                for i in range(self.line_i, len(self.lines)):
                    m = rx.search(self.lines[i])
                    if m:
                        self.line_i = i + 1
                        return m
                left = end - time.time()
                if left <= 0 or self.proc.poll() is not None:
                    why = "exited (%s)" % self.proc.returncode if self.proc.poll() is not None else \
                        "printed no such line within %g s" % timeout
                    raise AssertionError("%s %s: waited for %s" % (self.name, why, what or "/%s/" % regex))
                self.cond.wait(min(left, 0.5))

    def lines_after(self, i, count):
        """Up to count lines from index i on, waiting briefly for them (a message's continuation)."""
        end = time.time() + 2
        with self.cond:
            while len(self.lines) < i + count and time.time() < end:
                self.cond.wait(0.1)
            return self.lines[i:i + count]

    def tail(self, n=40):
        with self.cond:
            return "\n".join(self.lines[-n:])

    def stop(self, timeout=5):
        """Quit politely (the client de-registers), then terminate, then kill."""
        if self.proc.poll() is None:
            try:
                self.quit_command()
                self.proc.wait(timeout)
            except Exception:
                pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log:
            self.log.close()
            self.log = None

    def quit_command(self):
        raise NotImplementedError


def die_with_parent():
    """preexec_fn: the child gets SIGKILL if the test process dies, whatever way it dies."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass
