#!/usr/bin/env python3
"""What direct disk writes cost the rest of this machine: one process per core copies 32 MiB
buffers (memory-bound work, like a query's state), while another writes to a file with O_DIRECT
at RATE MB/s for one second, then rests for one, for SECONDS in all. Prints how fast the copies
ran while the writes went on against while they rested, and the writer's own CPU time.

    benches/disk-tax.py [RATE_MB_PER_S] [SECONDS] [FILE]     (defaults: 480 30 ./disk-tax.tmp)

Incremental checkpoints write a query's new state as it grows (q20: about 480 MB/s at full
speed on two cores). On a VM, what a write costs the host (the virtual disk's copies and DMA)
does not show in the guest's profile, but it slows the guest's memory-bound work. Alternating
every second keeps the machine's drift out of the ratio. The FILE (2 GiB at most) is removed at
the end.
"""
import mmap
import os
import resource
import statistics
import sys
import time
from multiprocessing import Process, Queue


def copier(seconds, out):
    a = bytearray(b"x" * (32 << 20))
    b = bytearray(32 << 20)
    end = time.time() + seconds
    windows = []
    while True:
        t0 = time.time()
        if t0 > end:
            break
        n = 0
        while time.time() - t0 < 0.1:
            b[:] = a
            n += 1
        windows.append((t0, time.time(), n))
    out.put(windows)


def writer(rate, seconds, path, out):
    chunk = 4 << 20
    buf = mmap.mmap(-1, chunk)  # page-aligned, as O_DIRECT needs
    buf.write(os.urandom(1 << 20) * 4)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644)
    start, off, on = time.time(), 0, []
    while time.time() - start < seconds:
        t0, done = time.time(), 0
        while time.time() - t0 < 1.0:
            os.pwrite(fd, buf, off)
            off = (off + chunk) % (2 << 30)
            done += chunk
            ahead = done / rate - (time.time() - t0)
            if ahead > 0:
                time.sleep(ahead)
        on.append((t0, time.time()))
        time.sleep(1.0)
    os.close(fd)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out.put((on, ru.ru_utime + ru.ru_stime))


def main():
    rate = float(sys.argv[1]) if len(sys.argv) > 1 else 480
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 30
    path = sys.argv[3] if len(sys.argv) > 3 else "disk-tax.tmp"
    q = Queue()
    copiers = [Process(target=copier, args=(seconds + 1, q)) for _ in range(os.cpu_count() or 1)]
    for p in copiers:
        p.start()
    time.sleep(0.5)
    wq = Queue()
    w = Process(target=writer, args=(rate * 1e6, seconds, path, wq))
    w.start()
    on, writer_cpu = wq.get()
    w.join()
    windows = [x for _ in copiers for x in q.get()]
    for p in copiers:
        p.join()
    os.remove(path)
    # A window counts as "writing" when it lies inside an on-second, as "resting" when it is
    # 0.2 s clear of every one; windows that straddle are left out.
    writing = [n for a, b, n in windows if any(s <= a and b <= e for s, e in on)]
    resting = [n for a, b, n in windows if all(b < s - 0.2 or a > e + 0.2 for s, e in on)]
    ratio = statistics.mean(writing) / statistics.mean(resting)
    print(
        f"{rate:.0f} MB/s of O_DIRECT writes, 1 s on / 1 s off for {seconds:.0f} s: "
        f"memory copies on {len(copiers)} cores ran at {ratio:.3f} of their speed while writing "
        f"({len(writing)} / {len(resting)} windows of 0.1 s); "
        f"the writer's own CPU: {writer_cpu:.2f} s"
    )


if __name__ == "__main__":
    main()
