# gather: R times, create N tasks that each sleep(0) once and return a value,
# and gather them (one asyncio.gather over the N tasks). N_OPS printed = N*R
# gathered tasks.  Same work as scripts/bench/gather.lua.
# usage: python3 gather.py N [asyncio|uvloop] [R, default 20]
import os, sys
# This directory holds queue.py, which would shadow the standard library's
# queue module (imported by concurrent.futures, hence by uvloop): take the
# script's directory off the import path before importing anything else.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
import asyncio, time

n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
peer = sys.argv[2] if len(sys.argv) > 2 else "asyncio"
reps = int(sys.argv[3]) if len(sys.argv) > 3 else 20
if peer == "uvloop":
    import uvloop
    loop = uvloop.new_event_loop()
else:
    loop = asyncio.new_event_loop()

async def task(i):
    await asyncio.sleep(0)
    return i

async def main():
    create_task, gather = asyncio.create_task, asyncio.gather
    t0 = time.perf_counter()
    for _ in range(reps):
        res = await gather(*[create_task(task(i)) for i in range(1, n + 1)])
        assert len(res) == n and res[-1] == n
    return time.perf_counter() - t0

secs = loop.run_until_complete(main())
loop.close()
print(f"gather {peer} {n * reps} {secs:.6f} {n * reps / secs:.1f}")
