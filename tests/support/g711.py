"""G.711 µ-law and a tone meter for the Python side of the tests and benchmarks (the desk's
end-to-end test, bench/media-load.sh). sosdesk itself uses the Rust codec (src/media/codec.rs).

    python3 tests/support/g711.py tone FILE HZ [SECONDS]   writes a raw µ-law tone for sipp's rtp_stream
"""

import math
import sys


def ulaw_encode(s):
    """ITU-T G.711 µ-law of one 16-bit sample."""
    sign = 0x80 if s < 0 else 0
    s = min(abs(s), 32635) + 0x84
    exp, mask = 7, 0x4000
    while exp > 0 and not s & mask:
        exp, mask = exp - 1, mask >> 1
    return ~(sign | (exp << 4) | ((s >> (exp + 3)) & 0x0F)) & 0xFF


def ulaw_decode(b):
    b = ~b & 0xFF
    s = ((((b & 0x0F) << 3) + 0x84) << ((b >> 4) & 7)) - 0x84
    return -s if b & 0x80 else s


def tone(hz, seconds=1, amplitude=8000, rate=8000):
    """A sine as 16-bit samples; whole seconds of a whole-Hz tone loop without a seam."""
    return [int(amplitude * math.sin(2 * math.pi * hz * i / rate)) for i in range(int(rate * seconds))]


def tone_level(samples, hz, rate=8000):
    """Amplitude of the `hz` component (Goertzel)."""
    if not samples:
        return 0.0
    k = 2 * math.cos(2 * math.pi * hz / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + k * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - k * s1 * s2
    return 2 * math.sqrt(max(power, 0.0)) / len(samples)


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5) or sys.argv[1] != "tone":
        sys.exit(__doc__)
    secs = float(sys.argv[4]) if len(sys.argv) == 5 else 1
    with open(sys.argv[2], "wb") as f:
        f.write(bytes(ulaw_encode(v) for v in tone(float(sys.argv[3]), secs)))
