#!/usr/bin/env python3
"""Live packet capture on loopback for the client tests: tcpdump writes pcap to a pipe, a thread
parses it as it comes (IPv4, UDP and TCP) and keeps every SIP message, every UDP datagram and
every TCP flow's bytes, so a test waits on "this message was on the wire" with a deadline instead
of sleeping. A TCP flow that begins with a TLS record is kept as bytes only (tls_records() reads
them as TLS records: what SIP over TLS shows of itself on the wire).

    cap = Capture("/tmp/w/cap.pcap", "portrange 40000-40199", 40199)  # filter, an unused port in it
    cap.start()                                                 # returns once packets are seen
    m = cap.wait_sip(lambda m: m.is_response and m.cseq_method == "REGISTER", 5, "200 to REGISTER")
    cap.stop()

Needs tcpdump and the right to capture (root, or CAP_NET_RAW on tcpdump). The pcap file is kept
for people: `tshark -r cap.pcap -Y sip` or Wireshark read it.
"""
import io
import os
import re
import signal
import socket
import struct
import sys
import subprocess
import threading
import time
import zlib

from peer import die_with_parent

COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length",
           "c": "content-type", "e": "content-encoding", "k": "supported", "s": "subject"}


class Sip:
    """One SIP message seen on the wire, with where it came from and went to."""

    def __init__(self, t, proto, src, dst, raw):
        self.t, self.proto, self.src, self.dst, self.raw = t, proto, src, dst, raw
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("utf-8", "replace").split("\r\n")
        self.start = lines[0]
        self.headers = []  # (lower-case name, value), in order; folded lines joined
        for line in lines[1:]:
            if line[:1] in (" ", "\t") and self.headers:
                n, v = self.headers[-1]
                self.headers[-1] = (n, v + " " + line.strip())
                continue
            name, _, value = line.partition(":")
            name = name.strip().lower()
            self.headers.append((COMPACT.get(name, name), value.strip()))
        self.is_response = self.start.startswith("SIP/2.0 ")
        if self.is_response:
            parts = self.start.split(" ", 2)
            self.status, self.method, self.ruri = int(parts[1]), None, None
        else:
            parts = self.start.split(" ")
            self.status, self.method, self.ruri = None, parts[0], parts[1] if len(parts) > 1 else ""
        cseq = self.header("cseq") or ""
        self.cseq_method = cseq.split()[-1] if cseq.split() else ""
        self.call_id = self.header("call-id")

    def header(self, name):
        """First value of a header (Via: the top one), or None."""
        for n, v in self.headers:
            if n == name:
                return v.split(",")[0].strip() if n == "via" else v
        return None

    def text_body(self):
        """The body as text; a `Content-Encoding: deflate` body is inflated (zlib or raw deflate)."""
        body = self.body
        if (self.header("content-encoding") or "").lower() == "deflate":
            for wbits in (zlib.MAX_WBITS, -zlib.MAX_WBITS):
                try:
                    body = zlib.decompress(body, wbits)
                    break
                except zlib.error:
                    pass
        return body.decode("utf-8", "replace")

    def sdp_attr(self):
        """(audio port, direction) of an SDP body; direction sendrecv when none is given (RFC 3264 §5.1)."""
        text = self.text_body()
        m = re.search(r"^m=audio (\d+) ", text, re.M)
        d = re.findall(r"^a=(sendrecv|sendonly|recvonly|inactive)\s*$", text, re.M)
        return (int(m.group(1)) if m else None), (d[-1] if d else "sendrecv")

    def summary(self):
        return "%s %s:%d -> %s:%d  %s" % (self.proto, self.src[0], self.src[1], self.dst[0],
                                          self.dst[1], self.start)

    def __str__(self):
        return "--- %.3f %s\n%s" % (self.t, self.summary(),
                                    self.raw.decode("utf-8", "replace").replace("\r\n", "\n").rstrip())


class Capture:
    def __init__(self, pcap_path, bpf, probe_port):
        self.pcap_path, self.bpf, self.probe_port = pcap_path, bpf, probe_port
        self.sip = []   # Sip objects, in capture order
        self.udp = {}   # (src, dst) -> [(t, payload)] of every UDP datagram of that flow
        self.cond = threading.Condition()
        self.proc = None
        self.error = ""         # what tcpdump said on stderr
        self.reader_error = ""  # why the pcap reader stopped, if it did
        self._tcp = {}  # (src, dst) -> bytes not yet a whole SIP message
        self.streams = {}  # (src, dst) -> bytearray: every TCP payload byte of that flow, in order
        self._next_seq = {}  # (src, dst) -> the TCP sequence number after the bytes in streams
        self._tls = set()  # flows that began with a TLS record: kept as bytes only, not parsed as SIP
        self._t0 = None

    def start(self, timeout=10):
        """Start tcpdump; return once a probe datagram sent into the filter has been captured."""
        # --immediate-mode: each packet at once (else the kernel hands them over in blocks, late, and
        # the last block is lost at the stop); -U: each packet written to the pipe as it comes
        argv = ["tcpdump", "-i", "lo", "-nn", "--immediate-mode", "-U", "-s", "0", "-B", "4096", "-w", "-"]
        if os.geteuid() == 0:
            argv += ["-Z", "root"]  # writes to a pipe anyway; no privilege drop surprises
        self.proc = subprocess.Popen(argv + [self.bpf], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, preexec_fn=die_with_parent)
        threading.Thread(target=self._read_err, daemon=True).start()
        threading.Thread(target=self._read_pcap, daemon=True).start()
        # The probe: a UDP datagram to a port the filter takes and nobody uses, until it is seen.
        port = self.probe_port
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        end = time.time() + timeout
        try:
            while time.time() < end:
                if self.proc.poll() is not None:
                    break
                s.sendto(b"sosdesk-capture-probe", ("127.0.0.1", port))
                with self.cond:
                    probes = lambda: self.udp.get((("127.0.0.1", s.getsockname()[1]), ("127.0.0.1", port)))
                    if self.cond.wait_for(probes, 0.2):
                        return
        finally:
            s.close()
        self.stop()
        raise RuntimeError("tcpdump captured nothing on lo (capturing needs root or CAP_NET_RAW): %s"
                           % self.error.strip()[-500:])

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _read_err(self):
        for line in self.proc.stderr:
            self.error += line.decode("utf-8", "replace")

    def _read_pcap(self):
        try:
            with open(self.pcap_path, "wb") as out:
                self.read_pcap(self.proc.stdout, out)
        except Exception:
            import traceback
            self.reader_error = traceback.format_exc()
            sys.stderr.write("capture reader failed:\n" + self.reader_error)
            with self.cond:
                self.cond.notify_all()

    def read_pcap(self, f, out=None):
        """Parse a pcap stream (tcpdump's pipe, or a saved file), copying it to out."""
        out = out or io.BytesIO()
        hdr = f.read(24)
        if len(hdr) < 24:
            return
        out.write(hdr)
        magic = struct.unpack("<I", hdr[:4])[0]
        endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
        linktype = struct.unpack(endian + "I", hdr[20:24])[0]
        while True:
            rec = f.read(16)
            if len(rec) < 16:
                break
            sec, usec, incl, _ = struct.unpack(endian + "IIII", rec)
            data = f.read(incl)
            out.write(rec + data)
            out.flush()
            t = sec + usec / 1e6
            if self._t0 is None:
                self._t0 = t
            self._packet(t - self._t0, linktype, data)
        with self.cond:
            self.cond.notify_all()

    def _packet(self, t, linktype, data):
        if linktype == 1:        # Ethernet (what lo has)
            if len(data) < 14 or data[12:14] != b"\x08\x00":
                return
            ip = data[14:]
        elif linktype == 113:    # Linux cooked
            if data[14:16] != b"\x08\x00":
                return
            ip = data[16:]
        else:
            return
        if len(ip) < 20 or ip[0] >> 4 != 4:
            return
        ihl = (ip[0] & 15) * 4
        total = struct.unpack("!H", ip[2:4])[0]
        if struct.unpack("!H", ip[6:8])[0] & 0x3FFF:
            return  # a fragment: not on loopback's 64 KB MTU
        proto, src_ip, dst_ip = ip[9], socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
        l4 = ip[ihl:total]
        if proto == 17 and len(l4) >= 8:
            sp, dp = struct.unpack("!HH", l4[:4])
            payload = l4[8:]
            with self.cond:
                self.udp.setdefault(((src_ip, sp), (dst_ip, dp)), []).append((t, payload))
                if _looks_sip(payload):
                    self.sip.append(Sip(t, "UDP", (src_ip, sp), (dst_ip, dp), payload))
                self.cond.notify_all()
        elif proto == 6 and len(l4) >= 20:
            sp, dp = struct.unpack("!HH", l4[:4])
            payload = l4[(l4[12] >> 4) * 4:]
            key = ((src_ip, sp), (dst_ip, dp))
            seq = struct.unpack("!I", l4[4:8])[0]
            if l4[13] & 0x02:  # SYN: a connection (maybe a new one on a reused port) starts at seq + 1
                with self.cond:
                    self._next_seq[key] = (seq + 1) % 2 ** 32
            if not payload:
                return
            with self.cond:
                stream = self.streams.setdefault(key, bytearray())
                if not stream and payload[:1] == b"\x16" and payload[1:2] == b"\x03":
                    self._tls.add(key)  # a TLS handshake record: ciphertext follows, no SIP to find
                # a retransmitted segment (rare on lo) adds only the bytes not seen yet
                behind = (self._next_seq.get(key, seq) - seq) % 2 ** 32
                skip = behind if behind < 2 ** 31 else 0
                if skip < len(payload):
                    stream += payload[skip:]
                    self._next_seq[key] = (seq + len(payload)) % 2 ** 32
                self.cond.notify_all()
            if key in self._tls:
                return
            buf = self._tcp.get(key, b"") + payload
            msgs = []
            while True:  # whole messages: headers, then Content-Length bytes (RFC 3261 §18.3)
                buf = buf.lstrip(b"\r\n")
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                m = re.search(rb"^(?:content-length|l)[ \t]*:[ \t]*(\d+)", buf[:end], re.I | re.M)
                n = end + 4 + (int(m.group(1)) if m else 0)
                if len(buf) < n:
                    break
                msgs.append(buf[:n])
                buf = buf[n:]
            self._tcp[key] = buf
            with self.cond:
                for raw in msgs:
                    if _looks_sip(raw):
                        self.sip.append(Sip(t, "TCP", key[0], key[1], raw))
                self.cond.notify_all()

    # --- waiting on what was captured -------------------------------------------------------

    def wait_sip(self, pred, timeout, what):
        """The first captured SIP message matching pred, waiting up to timeout s for it."""
        end = time.time() + timeout
        with self.cond:
            while True:
                for m in self.sip:
                    if pred(m):
                        return m
                left = end - time.time()
                if left <= 0 or self.reader_error:
                    raise AssertionError("the capture has no %s within %g s%s" % (what, timeout, self._why()))
                self.cond.wait(left)

    def _why(self):
        if self.reader_error:
            return " (the capture reader stopped: %s)" % self.reader_error.strip().splitlines()[-1]
        if self.proc and self.proc.poll() is not None:
            return " (tcpdump exited: %s)" % self.error.strip()[-300:]
        return ""

    def find_sip(self, pred):
        with self.cond:
            return [m for m in self.sip if pred(m)]

    def wait_udp_count(self, src, dst, count, timeout, pred=lambda p: True):
        """Wait until count UDP datagrams from src to dst (host, port) satisfy pred; return them."""
        end = time.time() + timeout
        got, seen = [], 0
        with self.cond:
            while True:
                flow = self.udp.get((src, dst), [])
                got += [u for u in flow[seen:] if pred(u[1])]
                seen = len(flow)
                if len(got) >= count:
                    return got
                left = end - time.time()
                if left <= 0 or self.reader_error:
                    raise AssertionError("the capture has %d of %d datagrams %s:%d -> %s:%d within %g s%s"
                                         % (len(got), count, src[0], src[1], dst[0], dst[1], timeout, self._why()))
                self.cond.wait(left)

    def tcp_flows(self, port):
        """{(src, dst): bytes} of every TCP flow to or from 127.0.0.1:port seen so far."""
        with self.cond:
            return {k: bytes(v) for k, v in self.streams.items() if port in (k[0][1], k[1][1])}

    def wait_tcp(self, pred, timeout, what):
        """The first (src, dst) TCP flow whose bytes so far satisfy pred(key, data), within timeout s."""
        end = time.time() + timeout
        with self.cond:
            while True:
                for k, v in self.streams.items():
                    if pred(k, bytes(v)):
                        return k
                left = end - time.time()
                if left <= 0 or self.reader_error:
                    raise AssertionError("the capture has no %s within %g s%s" % (what, timeout, self._why()))
                self.cond.wait(left)

    def dump(self, pred=lambda m: True, last=12, headers_only=False):
        """The last captured SIP messages matching pred, as text, for a failure message."""
        out = []
        for m in self.find_sip(pred)[-last:]:
            s = str(m)
            if headers_only:
                s = s.split("\n\n", 1)[0]
            out.append(s)
        return "\n".join(out) or "(no SIP message captured)"


def is_rtp(payload):
    """An RTP packet (RFC 3550 §5.1): version 2, at least the fixed header, not RTCP (PT 72-76)."""
    return len(payload) >= 12 and payload[0] >> 6 == 2 and not 72 <= (payload[1] & 0x7F) <= 76


TLS_TYPES = {20: "change_cipher_spec", 21: "alert", 22: "handshake", 23: "application_data"}


def tls_records(data):
    """The TLS records (RFC 8446 §5.1, RFC 5246 §6.2) a TCP stream is made of, from its first byte:
    [(content type, length)]. Raises ValueError at the first bytes that are no record header (a
    content type 20-23, legacy version 3.x, a length of at most 2^14 + 2048); a record not yet
    wholly captured at the end is left out."""
    out, i = [], 0
    while i + 5 <= len(data):
        ctype, major, length = data[i], data[i + 1], struct.unpack("!H", data[i + 3:i + 5])[0]
        if ctype not in TLS_TYPES or major != 3 or length > 2 ** 14 + 2048:
            raise ValueError("no TLS record at byte %d: %s" % (i, data[i:i + 16].hex(" ")))
        if i + 5 + length > len(data):
            break
        out.append((ctype, length))
        i += 5 + length
    return out


def _looks_sip(b):
    return b.startswith(b"SIP/2.0 ") or re.match(rb"^[A-Z]+ \S+ SIP/2\.0\r\n", b) is not None




if __name__ == "__main__":
    # A saved capture as text (tshark decodes SIP only on port 5060 unless told `-d udp.port==N,sip`):
    #   tests/clients/sipcap.py WORK/baresip/cap.pcap [--headers]
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    cap = Capture(None, None, None)
    with open(sys.argv[1], "rb") as f:
        cap.read_pcap(f)
    print(cap.dump(last=10 ** 9, headers_only="--headers" in sys.argv))
