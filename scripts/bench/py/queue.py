# queue: one producer task puts N integers into an asyncio.Queue(maxsize=100),
# one consumer task gets them all and calls task_done for each; then join.
# Same work as scripts/bench/queue.lua.  N = items.
# usage: python3 queue.py N [asyncio|uvloop]
import os, sys
# This directory holds queue.py, which would shadow the standard library's
# queue module (imported by concurrent.futures, hence by uvloop): take the
# script's directory off the import path before importing anything else.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
import asyncio, time

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
peer = sys.argv[2] if len(sys.argv) > 2 else "asyncio"
if peer == "uvloop":
    import uvloop
    loop = uvloop.new_event_loop()
else:
    loop = asyncio.new_event_loop()

total = 0

async def producer(q):
    for i in range(1, n + 1):
        await q.put(i)

async def consumer(q):
    global total
    for _ in range(n):
        total += await q.get()
        q.task_done()

async def main():
    q = asyncio.Queue(100)
    t0 = time.perf_counter()
    p = asyncio.create_task(producer(q))
    c = asyncio.create_task(consumer(q))
    await p
    await c
    await q.join()
    return time.perf_counter() - t0

secs = loop.run_until_complete(main())
loop.close()
assert total == n * (n + 1) // 2, total
print(f"queue {peer} {n} {secs:.6f} {n / secs:.1f}")
