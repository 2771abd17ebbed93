# to_thread: one task awaits N calls of asyncio.to_thread(fn, i) in turn
# (fn returns i + 1), then N more with C calls in flight at once (C = 10,
# argument 3). Same work as scripts/bench/threads.lua.
# usage: python3 to_thread.py N [asyncio|uvloop] [C]
import os, sys
# This directory holds queue.py, which would shadow the standard library's
# queue module (imported by concurrent.futures, which to_thread uses):
# take the script's directory off the import path first.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
import asyncio, time

n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
peer = sys.argv[2] if len(sys.argv) > 2 else "asyncio"
c = int(sys.argv[3]) if len(sys.argv) > 3 else 10
if peer == "uvloop":
    import uvloop
    loop = uvloop.new_event_loop()
else:
    loop = asyncio.new_event_loop()


def job(i):
    return i + 1


async def main():
    await asyncio.to_thread(job, 0)          # start a worker first
    t0 = time.perf_counter()
    s = 0
    for i in range(1, n + 1):
        s += await asyncio.to_thread(job, i)
    assert s == n * (n + 1) // 2 + n, s
    t1 = time.perf_counter()
    per = n // c

    async def one():
        s = 0
        for i in range(1, per + 1):
            s += await asyncio.to_thread(job, i)
        return s

    rs = await asyncio.gather(*(one() for _ in range(c)))
    assert all(r == per * (per + 1) // 2 + per for r in rs)
    return t1 - t0, time.perf_counter() - t1

seq, par = loop.run_until_complete(main())
loop.run_until_complete(loop.shutdown_default_executor())
loop.close()
print(f"to_thread {peer} {n} {seq:.6f} {n / seq:.1f}")
m = (n // c) * c
print(f"to_thread-c{c} {peer} {m} {par:.6f} {m / par:.1f}")
