#!/usr/bin/env python3
"""What loading Mesa's LLVM costs a process, before it draws anything (BENCHMARKS.md, "Desk app:
idle memory", the floor). Mesa's EGL and GLX drivers (swrast_dri.so, and every hardware driver
of Debian's Mesa: one library) link libLLVM; WebKitGTK opens an EGL display in the desk's app
and web processes, so each of them pays this. Prints the RSS of the library's mappings in this
process after dlopen, and how much of it is private (relocations, not shared with anyone).

    python3 bench/mesa_llvm_cost.py [LIBRARY]      (default libLLVM-15.so.1, Debian 12's)
"""

import ctypes
import sys

LIB = sys.argv[1] if len(sys.argv) > 1 else "libLLVM-15.so.1"


def mapped(name):
    """(RSS kB, private dirty kB) of this process's mappings of files whose name contains `name`."""
    rss = dirty = 0
    current = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if not head[0].endswith(":"):
                current = len(head) > 5 and name in head[5]
            elif current and head[0] == "Rss:":
                rss += int(head[1])
            elif current and head[0] == "Private_Dirty:":
                dirty += int(head[1])
    return rss, dirty


ctypes.CDLL(LIB)
rss, dirty = mapped(LIB.split(".so")[0])
print(f"{LIB} loaded, nothing else done: RSS {rss / 1024:.1f} MB, of which private dirty "
      f"(relocations) {dirty / 1024:.1f} MB")
