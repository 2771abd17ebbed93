# spawn: processes spawned and reaped per second. For each concurrency C,
# C tasks share N runs of `true` (asyncio.create_subprocess_exec, then
# wait), so at most C children live at once. One line per C, workload
# spawn_c<C>.  Same work as scripts/bench/spawn.lua.
# usage: python3 spawn.py N [asyncio|uvloop] [C ..., default 1 10 50]
import os, sys
# This directory holds queue.py, which would shadow the standard library's
# queue module (imported by concurrent.futures, hence by uvloop): take the
# script's directory off the import path before importing anything else.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
import asyncio, time

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
peer = sys.argv[2] if len(sys.argv) > 2 else "asyncio"
concs = [int(c) for c in sys.argv[3:]] or [1, 10, 50]

async def main(c):
    left = n

    async def worker():
        nonlocal left
        while left > 0:
            left -= 1
            p = await asyncio.create_subprocess_exec("true")
            assert await p.wait() == 0, "true failed"

    t0 = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(c)])
    return time.perf_counter() - t0

for c in concs:
    if peer == "uvloop":
        import uvloop
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    secs = loop.run_until_complete(main(c))
    loop.close()
    print(f"spawn_c{c} {peer} {n} {secs:.6f} {n / secs:.1f}", flush=True)
