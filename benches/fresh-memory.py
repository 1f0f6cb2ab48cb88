#!/usr/bin/env python3
"""How fast this machine provides fresh memory: touches one byte per 4 KiB page of a new
anonymous mapping of N GB (default 10) and prints the seconds each GB took.

    benches/fresh-memory.py [N]

On a machine whose memory is provisioned on first touch (a VM whose host backs guest pages
lazily), the GBs beyond what the guest touched lately take several times longer; queries whose
state grows (q18, q19, q20) pay the same cost per byte of state.
"""
import mmap
import sys
import time

gb = int(sys.argv[1]) if len(sys.argv) > 1 else 10
step = 1 << 30
m = mmap.mmap(-1, gb * step)
start = time.time()
for g in range(gb):
    t0 = time.time()
    for i in range(g * step, (g + 1) * step, 4096):
        m[i] = 1
    print(f"GB {g}: {time.time() - t0:.2f} s", flush=True)
print(f"total {time.time() - start:.2f} s")
