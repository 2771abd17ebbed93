# lock: one asyncio.Lock shared by 100 tasks; each task does N/100 rounds of
# acquire, increment a shared counter, release, sleep(0). N = acquisitions
# (rounded down to a multiple of 100).  Same work as scripts/bench/lock.lua.
# usage: python3 lock.py N [asyncio|uvloop]
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

TASKS = 100
rounds = n // TASKS
counter = 0

async def worker(lock):
    global counter
    sleep = asyncio.sleep
    for _ in range(rounds):
        await lock.acquire()
        counter += 1
        lock.release()
        await sleep(0)

async def main():
    lock = asyncio.Lock()
    t0 = time.perf_counter()
    tasks = [asyncio.create_task(worker(lock)) for _ in range(TASKS)]
    for t in tasks:
        await t
    return time.perf_counter() - t0

secs = loop.run_until_complete(main())
loop.close()
total = rounds * TASKS
assert counter == total, counter
print(f"lock {peer} {total} {secs:.6f} {total / secs:.1f}")
