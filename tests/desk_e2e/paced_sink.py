#!/usr/bin/env python3
"""The end-to-end tests' sound card. ALSA's file plugin pipes what the app plays into this
program (`file "|paced_sink.py BYTES_PER_SECOND OUT"` in the test's .asoundrc), which appends it to
OUT no faster than a real card would play it. Without the pacing the plugin's `null` slave has no
clock: the app's output thread would write as fast as the CPU allows, hundreds of MB in a test run.

Usage: paced_sink.py BYTES_PER_SECOND OUT
"""
import sys
import time


def main():
    rate = int(sys.argv[1])
    chunk = max(rate // 50, 1)  # 20 ms, a card's period
    src = sys.stdin.buffer
    start = time.monotonic()
    total = 0
    with open(sys.argv[2], "ab", buffering=0) as out:
        while True:
            data = src.read(chunk)
            if not data:
                return
            out.write(data)
            total += len(data)
            # Pacing, not synchronisation: the pipe fills while we wait, which blocks the app's
            # writes the way a card's ring buffer does.
            ahead = total / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)


if __name__ == "__main__":
    main()
