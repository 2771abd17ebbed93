"""loom against its peers from one run of scripts/bench/run.sh.

usage: python3 scripts/bench/report.py raw.tsv [env.txt [notes.txt]]

Prints (markdown) loom's median per workload with its ratio to each peer's
median from the same run, a table of all medians, and loom's targets with
met / not met. Ratios: for rates, loom's rate / the peer's (higher is
better for loom); for memory, loom's bytes / the peer's (lower is better).
Cells: median over repetitions, "±x%" = half the min-max range relative to
the median (only with more than one repetition). Memory per sleeping task is
(median peak RSS of the N-task sleep run - median of the 1-task run) / N,
as in ../shared/bench/peers/report.py.

queue, lock and gather (scripts/bench/<w>.lua against scripts/bench/py/<w>.py)
are measured for loom, asyncio and uvloop only, and have their own section.

echo (workloads echo-s<SIZE>-c<CONNS>: requests/s of one C epoll client
against each echo server) has its own table: loom (protocol API) with its
ratio to libuv-c and uvloop-proto, loom-streams (streams API) with its ratio
to libuv-c and to the fastest peer streams server (asyncio-streams,
uvloop-streams, node, luv), loom-buffered (a buffered protocol) with its
ratio to libuv-c and uvloop-proto, and the targets per cell; then the
servers' CPU per request (workloads echo-cpu-s<SIZE>-c<CONNS>) with
libuv-c's and uvloop-proto's over loom's; then the Lua floor: lua-c and
lua-c-streams (scripts/bench/c/lua_echo_server.c, the least a Lua server
can do per read, with a callback or with a coroutine per connection resumed
after the poll) against libuv-c, and loom's and loom-streams' ratio to them.

tls (workloads tls-echo-s<SIZE>-c<CONNS>: requests/s of one C client,
scripts/bench/c/tls_echo_client.c, against the TLS echo servers loom,
asyncio and uvloop, and libuv-c: scripts/bench/c/tls_echo_server.c, loom's
design in plain C, the floor) has its own table, with loom's ratio to
uvloop, asyncio and libuv-c, libuv-c's to uvloop, the client's CPU use, and the target ">= 1.5x uvloop" per cell at
1 KiB and 100 KiB.

http (workloads http-c<CONNS>: requests/s of `wrk -t1 -c<CONNS>` against each
HTTP hello-world server) has its own table, with loom's ratio to node and
libuv-c and the target "HTTP example ahead of Node's http at 100 connections".

threads (to_thread, to_thread-c10: round trips/s against asyncio and uvloop;
echo-loops-s<SIZE>-c<CONNS>: multicore_echo.lua on 1 and 2 loops) has its
own section, with the scaling ratio of 2 loops over 1 and the target
"to_thread >= 2x asyncio".
"""
import re
import csv
import os
import statistics
import sys
from collections import defaultdict

PEERS = ["asyncio", "uvloop", "luv", "cqueues", "lua-coro", "node", "libuv-c"]
ALL = ["loom"] + PEERS
ECHO_SERVERS = ["loom", "loom-streams", "loom-buffered", "asyncio-proto", "asyncio-streams",
                "uvloop-proto", "uvloop-streams", "luv", "node", "libuv-c", "lua-c",
                "lua-c-streams"]
# What loom-streams must beat: the peers' streams servers, and the callback
# servers of node and luv (counted as streams-level peers).
ECHO_PEER_STREAMS = ["asyncio-streams", "uvloop-streams", "node", "luv"]
ECHO_RE = re.compile(r"^echo-s(\d+)-c(\d+)$")
ECHO_CPU_RE = re.compile(r"^echo-cpu-s(\d+)-c(\d+)$")
TLS_SERVERS = ["loom", "asyncio", "uvloop", "libuv-c"]
TLS_RE = re.compile(r"^tls-echo-s(\d+)-c(\d+)$")
TLS_CPU_RE = re.compile(r"^tls-cpu-s(\d+)-c(\d+)$")
TLS_TARGET_SIZES = (1024, 102400)   # the sizes
TLS_GOAL = 1.5                      # loom >= 1.5x uvloop
CLIENT_BOUND = 0.9                  # client busier than this: it set the rate
HTTP_SERVERS = ["loom", "asyncio-proto", "uvloop-proto", "luv", "cqueues", "node", "libuv-c"]
HTTP_RE = re.compile(r"^http-c(\d+)$")


def load_echo_reps(path, pattern=ECHO_RE):
    """(size, conns) -> server -> {rep: requests/s}; with ECHO_CPU_RE,
    requests per second of server CPU."""
    res = defaultdict(lambda: defaultdict(dict))
    with open(path) as f:
        for r in csv.DictReader(f, delimiter="\t"):
            m = pattern.match(r["workload"])
            v = num(r.get("ops_per_sec"))
            if m and v is not None:
                res[(int(m.group(1)), int(m.group(2)))][r["peer"]][r["rep"]] = v
    return res


def load_echo(path, pattern=ECHO_RE):
    """As load_echo_reps, each server's values as a list across
    repetitions."""
    return {cell: defaultdict(list, {q: list(vs.values()) for q, vs in d.items()})
            for cell, d in load_echo_reps(path, pattern).items()}


def rep_ratios(cell, a, b):
    """a's value / b's in each repetition that measured both (run.sh
    measures the servers of a cell back to back, so each ratio compares
    two measurements seconds apart)."""
    va, vb = cell.get(a, {}), cell.get(b, {})
    return [va[r] / vb[r] for r in va if r in vb and vb[r]]


def paired(cell, a, b):
    """The median of rep_ratios(cell, a, b); None if there are none."""
    rs = rep_ratios(cell, a, b)
    return statistics.median(rs) if rs else None


def paired_iqr(cell, a, b):
    """The middle half of the ratios paired() takes the median of, as
    " (Q1-Q3)", when there are four or more; else an empty string."""
    rs = rep_ratios(cell, a, b)
    if len(rs) < 4:
        return ""
    q = statistics.quantiles(rs, n=4)
    return f" ({q[0]:.2f}-{q[2]:.2f})"


def load_tls(path):
    """(size, conns) -> server -> [(requests/s, client CPU share or None)],
    and (size, conns) -> server -> [requests per second of server CPU]."""
    res = defaultdict(lambda: defaultdict(list))
    cpu = defaultdict(lambda: defaultdict(list))
    with open(path) as f:
        for r in csv.DictReader(f, delimiter="\t"):
            v = num(r.get("ops_per_sec"))
            if v is None:
                continue
            if m := TLS_RE.match(r["workload"]):
                t, u, y = num(r.get("wall_s")), num(r.get("user_s")), num(r.get("sys_s"))
                busy = (u + y) / t if t and u is not None and y is not None else None
                res[(int(m.group(1)), int(m.group(2)))][r["peer"]].append((v, busy))
            elif m := TLS_CPU_RE.match(r["workload"]):
                cpu[(int(m.group(1)), int(m.group(2)))][r["peer"]].append(v)
    return res, cpu


def load_http(path):
    """conns -> server -> [requests/s], across repetitions."""
    res = defaultdict(lambda: defaultdict(list))
    with open(path) as f:
        for r in csv.DictReader(f, delimiter="\t"):
            m = HTTP_RE.match(r["workload"])
            v = num(r.get("ops_per_sec"))
            if m and v is not None:
                res[int(m.group(1))][r["peer"]].append(v)
    return res


def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def load(path):
    vals = defaultdict(list)  # (workload, peer, n, field) -> [values]
    reps = set()
    with open(path) as f:
        for r in csv.DictReader(f, delimiter="\t"):
            reps.add(r["rep"])
            for fld in ("seconds", "ops_per_sec", "peak_rss_kb"):
                v = num(r.get(fld))
                if v is not None:
                    vals[(r["workload"], r["peer"], r["n"], fld)].append(v)
    return vals, len(reps)


def main():
    vals, reps = load(sys.argv[1])
    env = ""
    if len(sys.argv) > 2 and os.path.exists(sys.argv[2]):
        env = open(sys.argv[2]).read().strip()
    notes = []
    if len(sys.argv) > 3 and os.path.exists(sys.argv[3]):
        notes = [l.strip() for l in open(sys.argv[3]) if l.strip()]

    def big_n(workload, peer):
        """Largest N (not the 1-task baseline) measured for this pair."""
        ns = sorted((int(k[2]) for k in vals if k[0] == workload and k[1] == peer), reverse=True)
        ns = [n for n in ns if n != 1] or ns
        return str(ns[0]) if ns else None

    def series(workload, peer, field, n=None):
        n = n or big_n(workload, peer)
        return vals.get((workload, peer, n, field), []) if n else []

    def med(workload, peer, field, n=None):
        vs = series(workload, peer, field, n)
        return statistics.median(vs) if vs else None

    def spread(vs):
        if len(vs) > 1:
            m = statistics.median(vs)
            if m:
                return f" ±{(max(vs) - min(vs)) / 2 / m * 100:.0f}%"
        return ""

    def per_task(peer):
        """Bytes of peak RSS per sleeping task, or None."""
        big = big_n("tasks_sleep1", peer)
        if big is None or big == "1":
            return None
        a = med("tasks_sleep1", peer, "peak_rss_kb", big)
        b = med("tasks_sleep1", peer, "peak_rss_kb", "1")
        if a is None or b is None:
            return None
        return (a - b) * 1024 / int(big)

    def si(x):
        if x >= 1e6:
            return f"{x / 1e6:.2f} M"
        if x >= 1e4:
            return f"{x / 1e3:.0f} k"
        if x >= 1e3:
            return f"{x / 1e3:.1f} k"
        return f"{x:.3g} "

    def rx(r):
        return f"{r:.1f}x" if r >= 10 else f"{r:.2f}x"

    mib = lambda kb: f"{kb / 1024:.0f} MiB"
    secs = lambda s: f"{s:.2f} s"

    out = []
    p = out.append
    p("# loom against its peers (same run)\n")
    if env:
        p("```\n" + env + "\n```\n")
    p(f"Repetitions: {reps}. Figures are medians"
      + (" (±half of the min–max range)" if reps > 1 else "") + ".\n")
    if notes:
        p("Notes (skipped peers, failures):\n")
        for l in notes:
            p(f"- {l}")
        p("")

    # ------------------------------------------------ ratios
    # (label, workload, field, how loom's figure is shown, kind)
    #   kind "rate": ratio = loom ops/s / peer ops/s (higher = loom faster)
    #   kind "mem":  ratio = loom / peer (lower = loom smaller)
    lines = [
        ("cb_chain (call_soon chain)", "cb_chain", "ops_per_sec", lambda v: si(v).strip() + " callbacks/s", "rate"),
        ("cb_batch (N call_soon, then run)", "cb_batch", "ops_per_sec", lambda v: si(v).strip() + " callbacks/s", "rate"),
        ("timers total (arm + fire, random delays [0,1s))", "timers", "seconds", secs, "time"),
        ("timers arming", "timers_arm", "ops_per_sec", lambda v: si(v).strip() + " timers/s", "rate"),
        ("timers peak RSS", "timers", "peak_rss_kb", mib, "mem"),
        ("tasks (spawn + sleep(0) + join)", "tasks", "ops_per_sec", lambda v: si(v).strip() + " tasks/s", "rate"),
        ("tasks peak RSS", "tasks", "peak_rss_kb", mib, "mem"),
        ("sleepers total (tasks sleeping 1 s)", "tasks_sleep1", "seconds", secs, "time"),
        ("memory per sleeping task", None, None, lambda v: f"{v:.0f} B", "mem"),
        ("ping-pong (one-way passes)", "pingpong", "ops_per_sec", lambda v: si(v).strip() + " passes/s", "rate"),
        ("ping-pong peak RSS", "pingpong", "peak_rss_kb", mib, "mem"),
    ]
    head = len(out)
    p("## loom and its ratio to each peer\n")
    p("Rates and total times: how many times faster loom is (loom rate / peer rate, "
      "or peer time / loom time; above 1 = loom faster). "
      "Memory: loom's size / the peer's (below 1 = loom smaller).\n")
    for label, w, fld, show, kind in lines:
        if w is None:
            lv = per_task("loom")
            pv = {q: per_task(q) for q in PEERS}
            nlabel = big_n("tasks_sleep1", "loom")
            spr = ""
        else:
            lv = med(w, "loom", fld)
            pv = {q: med(w, q, fld) for q in PEERS}
            nlabel = big_n(w, "loom")
            spr = spread(series(w, "loom", fld))
        if lv is None and not any(v is not None for v in pv.values()):
            continue
        if lv is None:
            p(f"- **{label}**: loom not measured (failed?)")
            continue
        parts = []
        for q in PEERS:
            v = pv[q]
            if v is None or v <= 0 or lv <= 0:
                continue
            r = v / lv if kind == "time" else lv / v
            parts.append(f"{rx(r)} {q}")
        p(f"- **{label}** (N={nlabel}): loom {show(lv)}{spr}"
          + (" = " + ", ".join(parts) if parts else ""))
    if len(out) == head + 2:
        del out[head:]  # nothing of these workloads measured (e.g. echo alone)
    else:
        p("")

    # ------------------------------------------------ queue, lock, gather
    # Programs of this repository (scripts/bench/py/) for asyncio and uvloop
    # only: the peers' directory has none for these workloads.
    own = [
        ("queue (1 producer, 1 consumer, Queue(100), get + task_done)", "queue", "items/s"),
        ("lock (100 tasks: acquire, counter += 1, release, sleep(0))", "lock", "acquisitions/s"),
        ("gather (gather over N_GATHER tasks each doing sleep(0), GATHER_REPS times; "
         "N = tasks gathered in all)", "gather", "tasks/s"),
    ]
    if any(k[0] in ("queue", "lock", "gather") for k in vals):
        p("## Queue, lock, gather (loom, asyncio, uvloop)\n")
        p("loom's median rate and loom rate / peer rate (above 1 = loom faster).\n")
        for label, w, unit in own:
            lv = med(w, "loom", "ops_per_sec")
            pv = {q: med(w, q, "ops_per_sec") for q in ("asyncio", "uvloop")}
            if lv is None and not any(v is not None for v in pv.values()):
                continue
            if lv is None:
                p(f"- **{label}**: loom not measured (failed?)")
                continue
            parts = [f"{rx(lv / v)} {q}" for q, v in pv.items() if v and lv > 0]
            p(f"- **{label}** (N={big_n(w, 'loom')}): loom {si(lv).strip()} {unit}"
              f"{spread(series(w, 'loom', 'ops_per_sec'))}"
              + (" = " + ", ".join(parts) if parts else ""))
        p("")

    # ------------------------------------------------ files
    # loom.fs against plain C read/write (scripts/bench/files.lua and
    # c/files.c): MiB/s each way and the ratio to C; no target.
    fl = [(d, med(f"files_{d}", "loom", "ops_per_sec"), med(f"files_{d}", "c", "ops_per_sec"),
           spread(series(f"files_{d}", "loom", "ops_per_sec")), spread(series(f"files_{d}", "c", "ops_per_sec")))
          for d in ("write", "read")]
    if any(l or c for _, l, c, _, _ in fl):
        p("## files (loom.fs against plain C, MiB/s)\n")
        p(f"A file of {big_n('files_write', 'loom') or big_n('files_write', 'c')} MiB written in 1 MiB "
          "chunks (loom: file:write, one request on libuv's pool each; C: write(2)), then read "
          "back in 1 MiB chunks (file:read(n); read(2)); page cache, no fsync. "
          "Ratio: loom / C (above 1 = loom faster). No target.\n")
        p("| direction | loom | C | loom / C |")
        p("|---|---|---|---|")
        for d, l, c, ls, cs in fl:
            p(f"| {d} | " + (f"{l:.0f}{ls}" if l else "–") + " | " + (f"{c:.0f}{cs}" if c else "–")
              + " | " + (rx(l / c) if l and c else "–") + " |")
        p("")

    # ------------------------------------------------ medians table
    cols = [q for q in ALL if any(k[1] == q for k in vals)]
    rows = [
        ("callbacks: chain (ops/s)", "cb_chain", "ops_per_sec", si),
        ("callbacks: batch (ops/s)", "cb_batch", "ops_per_sec", si),
        ("timers: total time", "timers", "seconds", secs),
        ("timers: arming rate (timers/s)", "timers_arm", "ops_per_sec", si),
        ("timers: peak RSS", "timers", "peak_rss_kb", mib),
        ("tasks: spawn+sleep(0)+join (tasks/s)", "tasks", "ops_per_sec", si),
        ("tasks: peak RSS", "tasks", "peak_rss_kb", mib),
        ("sleepers: tasks each sleeping 1 s, total time", "tasks_sleep1", "seconds", secs),
        ("sleepers: peak RSS per task (minus a 1-task run)", None, None, None),
        ("ping-pong (one-way passes/s)", "pingpong", "ops_per_sec", si),
        ("ping-pong: peak RSS", "pingpong", "peak_rss_kb", mib),
        ("queue: producer-consumer, Queue(100) (items/s)", "queue", "ops_per_sec", si),
        ("lock: 100 tasks acquire/release + sleep(0) (acquisitions/s)", "lock", "ops_per_sec", si),
        ("gather: N_GATHER tasks per gather x GATHER_REPS (tasks/s)", "gather", "ops_per_sec", si),
    ]
    table = []
    for label, w, fld, fmt in rows:
        if w is None:
            cells = [(f"{v:.0f} B" if (v := per_task(q)) is not None else "–") for q in cols]
            nl = big_n("tasks_sleep1", "loom") or "–"
        else:
            cells = []
            for q in cols:
                vs = series(w, q, fld)
                if fld == "peak_rss_kb":
                    cells.append(mib(statistics.median(vs)) + spread(vs) if vs else "–")
                else:
                    cells.append(fmt(statistics.median(vs)).strip() + spread(vs) if vs else "–")
            nl = "/".join(sorted({k[2] for k in vals if k[0] == w and k[2] != "1"}, key=int)) or "–"
        if any(c != "–" for c in cells):
            table.append([label, nl] + cells)
    if table:
        p("## Medians\n")
        hdr = ["workload", "N"] + cols
        p("| " + " | ".join(hdr) + " |")
        p("|" + "|".join("---" for _ in hdr) + "|")
        for t in table:
            p("| " + " | ".join(t) + " |")
        p("")

    # ------------------------------------------------ echo
    echo = load_echo(sys.argv[1])
    echo_reps = load_echo_reps(sys.argv[1])
    echo_lines = []
    if echo:
        e = echo_lines.append
        cols = [q for q in ECHO_SERVERS if any(q in d for d in echo.values())]
        cols += sorted({q for d in echo.values() for q in d} - set(cols))
        e("## echo (TCP echo, requests/s)\n")
        e("One C epoll client (the peers' echo/client.c): CONNS connections each send "
          "SIZE bytes and wait for the whole echo, for ECHO_SECS. Server pinned on "
          "SERVER_CPU, client on CLIENT_CPU. loom runs scripts/examples/echo_server.lua "
          "with the protocol API, loom-streams the same file in streams mode "
          "(start_server, read / write / drain), loom-buffered the same file with a "
          "buffered protocol (get_buffer / buffer_updated, one Buffer shared by "
          "the connections). Every server listens at once and each cell is "
          "measured on all of them back to back. Ratios: loom's req/s / the peer's "
          "(above 1 = loom faster), the median over repetitions of the ratio "
          "within each repetition (the req/s columns are the medians of the "
          "servers alone; in brackets, the middle half of the ratios to libuv-c); "
          "\"best peer streams\" is whichever of "
          + ", ".join(ECHO_PEER_STREAMS) + " measured loom-streams leads least. "
          "Targets, at 10 and 100 connections on every size: protocol API (loom) "
          ">= 0.95x libuv-c and ahead of uvloop-proto (> 1x); streams API "
          "(loom-streams) >= 0.85x libuv-c and ahead of every peer streams server "
          "measured (> 1x best peer streams); buffered protocol (loom-buffered) "
          ">= 0.95x libuv-c and ahead of uvloop-proto.\n")
        hdr = (["size", "conns"] + cols
               + ["loom / libuv-c", "loom / uvloop-proto", "target (protocol)",
                  "loom-streams / libuv-c", "loom-streams / best peer streams",
                  "target (streams)", "loom-buffered / libuv-c",
                  "loom-buffered / uvloop-proto"])
        e("| " + " | ".join(hdr) + " |")
        e("|" + "|".join("---" for _ in hdr) + "|")
        emet = emeas = ecells = 0      # protocol API
        smet = smeas = 0               # streams API (same cells)
        bmet = bmeas = 0               # buffered protocol (same cells)
        for size, conns in sorted(echo):
            d = echo[(size, conns)]
            dr = echo_reps[(size, conns)]
            md = {q: statistics.median(vs) for q, vs in d.items() if vs}
            cells = [(si(md[q]).strip() + spread(d[q])) if q in md else "–" for q in cols]
            r_c = paired(dr, "loom", "libuv-c")
            r_u = paired(dr, "loom", "uvloop-proto")
            peers = [(paired(dr, "loom-streams", q), q) for q in ECHO_PEER_STREAMS]
            peers = [pq for pq in peers if pq[0] is not None]
            best = min(peers) if peers else None  # the peer loom-streams leads least
            s_c = paired(dr, "loom-streams", "libuv-c")
            s_b = best[0] if best else None
            b_c = paired(dr, "loom-buffered", "libuv-c")
            b_u = paired(dr, "loom-buffered", "uvloop-proto")
            if conns in (10, 100):
                ecells += 1
                if r_c is None or r_u is None:
                    tgt = "not measured"
                else:
                    emeas += 1
                    ok = r_c >= 0.95 and r_u > 1
                    emet += ok
                    tgt = "met" if ok else "NOT MET"
                if s_c is None or s_b is None:
                    stgt = "not measured"
                else:
                    smeas += 1
                    ok = s_c >= 0.85 and s_b > 1
                    smet += ok
                    stgt = "met" if ok else "NOT MET"
                if b_c is not None and b_u is not None:
                    bmeas += 1
                    bmet += b_c >= 0.95 and b_u > 1
            else:
                tgt = stgt = "(no target)"
            sz = f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} B"
            e("| " + " | ".join([sz, str(conns)] + cells
                                + [rx(r_c) + paired_iqr(dr, "loom", "libuv-c") if r_c else "–",
                                   rx(r_u) if r_u else "–", tgt,
                                   rx(s_c) + paired_iqr(dr, "loom-streams", "libuv-c")
                                   if s_c else "–",
                                   f"{rx(s_b)} {best[1]}" if s_b else "–", stgt,
                                   rx(b_c) if b_c else "–",
                                   rx(b_u) if b_u else "–"]) + " |")
        e(f"\n{emet} of {ecells} echo target cells met (protocol API: loom)"
          + (f" ({ecells - emeas} not measured)" if emeas < ecells else "") + ".\n")
        e(f"{smet} of {ecells} echo target cells met (streams API: loom-streams)"
          + (f" ({ecells - smeas} not measured)" if smeas < ecells else "") + ".\n")
        e(f"loom-buffered: {bmet} of {ecells} cells >= 0.95x libuv-c and ahead of "
          "uvloop-proto" + (f" ({ecells - bmeas} not measured)" if bmeas < ecells
                             else "") + ".\n")
        ecpu = load_echo(sys.argv[1], ECHO_CPU_RE)
        ecpu_reps = load_echo_reps(sys.argv[1], ECHO_CPU_RE)
        if ecpu:
            e("Server CPU per request (µs; the server's user + system time over the "
              "client's run, /proc, / requests; median). The last columns are the "
              "peer's / loom's (median of the ratios within a repetition): how many "
              "times more requests loom's server makes per "
              "unit of CPU (above 1 = loom cheaper), a figure that the client's share "
              "of the two cores moves less than requests/s.\n")
            pairs = [("libuv-c", "loom"), ("libuv-c", "loom-streams"),
                     ("libuv-c", "loom-buffered"), ("uvloop-proto", "loom"),
                     ("lua-c", "loom"), ("lua-c-streams", "loom-streams")]
            hdr = (["size", "conns"] + cols + [f"{a} / {b}" for a, b in pairs])
            e("| " + " | ".join(hdr) + " |")
            e("|" + "|".join("---" for _ in hdr) + "|")
            for size, conns in sorted(ecpu):
                per = {q: statistics.median(vs) for q, vs in ecpu[(size, conns)].items() if vs}
                cells = [f"{1e6 / per[q]:.1f}" if per.get(q) else "–" for q in cols]
                cr = ecpu_reps[(size, conns)]
                ratios = [rx(v) if (v := paired(cr, b, a)) else "–" for a, b in pairs]
                sz = f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} B"
                e("| " + " | ".join([sz, str(conns)] + cells + ratios) + " |")
            e("")
        floor = [("lua-c", "libuv-c"), ("loom", "lua-c"),
                 ("lua-c-streams", "libuv-c"), ("loom-streams", "lua-c-streams")]
        if any("lua-c" in d or "lua-c-streams" in d for d in echo.values()):
            e("The Lua floor (requests/s ratios, medians of the ratios within a "
              "repetition, in brackets their middle half): lua-c hands each read to a "
              "bare Lua function that writes it back, lua-c-streams to a coroutine per "
              "connection resumed after the poll, as a reader's task is, with loom's "
              "read budget (scripts/bench/c/lua_echo_server.c). Their ratio to libuv-c "
              "is what Lua itself costs; loom's ratio to them is what loom's own "
              "machinery (transports, protocols, futures, tasks, readers) costs.\n")
            hdr = ["size", "conns"] + [f"{a} / {b}" for a, b in floor]
            e("| " + " | ".join(hdr) + " |")
            e("|" + "|".join("---" for _ in hdr) + "|")
            for size, conns in sorted(echo):
                dr = echo_reps[(size, conns)]
                ratios = [rx(v) + paired_iqr(dr, a, b) if (v := paired(dr, a, b)) else "–"
                          for a, b in floor]
                sz = f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} B"
                e("| " + " | ".join([sz, str(conns)] + ratios) + " |")
            e("")
        out.extend(echo_lines)

    # ------------------------------------------------ tls
    tls, tls_cpu = load_tls(sys.argv[1])
    if tls:
        t = out.append
        cols = [q for q in TLS_SERVERS if any(q in d for d in tls.values())]
        cols += sorted({q for d in tls.values() for q in d} - set(cols))
        t("## tls (TLS echo, requests/s)\n")
        t("One C client (scripts/bench/c/tls_echo_client.c: one thread, OpenSSL on "
          "epoll, one write(2) per message and one read(2) per arrival): CONNS TLS "
          "connections each send SIZE bytes and wait for the whole echo, compared "
          "with what was sent, for TLS_SECS. loom runs scripts/bench/tls_echo.lua, "
          "asyncio and uvloop scripts/bench/py/tls_echo.py with Python's ssl module "
          "(protocol API, TLS 1.3, the same OpenSSL), libuv-c "
          "scripts/bench/c/tls_echo_server.c (loom's TLS design in plain C on libuv, no "
          "Lua: the floor; libuv-c / uvloop is the most any server of that design "
          "reaches here). Server pinned on SERVER_CPU, "
          "client on CLIENT_CPU. Ratios: loom's req/s / the peer's (above 1 = loom "
          "faster). Client CPU: the client's CPU time over the measured seconds, "
          "median, in loom's runs / in uvloop's; near 100% the client, not the "
          "server, set the rate, and loom's figure is a lower bound (marked "
          "client-bound). Server CPU per request: the server's CPU time (/proc) "
          "over the measured seconds / requests, median; uvloop's / loom's is "
          "how many times more requests loom serves per core, which the client's "
          "speed does not cap. Target, at 1 KiB and 100 KiB: loom >= "
          f"{TLS_GOAL}x uvloop (requests/s).\n")
        hdr = (["size", "conns"] + cols
               + ["loom / uvloop", "loom / asyncio", "loom / libuv-c", "libuv-c / uvloop",
                  "client CPU (loom / uvloop runs)",
                  "server CPU per request (loom / uvloop / libuv-c)", "uvloop / loom CPU per request",
                  f"target (>= {TLS_GOAL}x uvloop)"])
        t("| " + " | ".join(hdr) + " |")
        t("|" + "|".join("---" for _ in hdr) + "|")
        tmet = tmeas = tcells = 0
        for size, conns in sorted(tls):
            d = tls[(size, conns)]
            rates = {q: [v for v, _ in runs] for q, runs in d.items()}
            md = {q: statistics.median(vs) for q, vs in rates.items() if vs}
            busy = {q: statistics.median(bs) for q, runs in d.items()
                    if (bs := [b for _, b in runs if b is not None])}
            cells = [(si(md[q]).strip() + spread(rates[q])) if q in md else "–" for q in cols]
            lv, uv, av = md.get("loom"), md.get("uvloop"), md.get("asyncio")
            r_u = lv / uv if lv and uv else None
            r_a = lv / av if lv and av else None
            cv = md.get("libuv-c")
            r_c = lv / cv if lv and cv else None
            c_uv = cv / uv if cv and uv else None
            pct = lambda q: f"{busy[q] * 100:.0f}%" if q in busy else "–"
            per_cpu = {q: statistics.median(vs) for q, vs in tls_cpu.get((size, conns), {}).items() if vs}
            us = lambda q: f"{1e6 / per_cpu[q]:.0f}" if per_cpu.get(q) else "–"
            lc, uc = per_cpu.get("loom"), per_cpu.get("uvloop")
            c_u = lc / uc if lc and uc else None
            if size in TLS_TARGET_SIZES:
                tcells += 1
                if r_u is None:
                    tgt = "not measured"
                else:
                    tmeas += 1
                    ok = r_u >= TLS_GOAL
                    tmet += ok
                    tgt = "met" if ok else "NOT MET"
                    if not ok and busy.get("loom", 0) >= CLIENT_BOUND:
                        tgt += " (client-bound)"
            else:
                tgt = "(no target)"
            sz = f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} B"
            t("| " + " | ".join([sz, str(conns)] + cells
                                + [rx(r_u) if r_u else "–", rx(r_a) if r_a else "–",
                                   rx(r_c) if r_c else "–", rx(c_uv) if c_uv else "–",
                                   f"{pct('loom')} / {pct('uvloop')}",
                                   f"{us('loom')} / {us('uvloop')} / {us('libuv-c')} µs",
                                   rx(c_u) if c_u else "–", tgt]) + " |")
        t(f"\n{tmet} of {tcells} TLS target cells met (>= {TLS_GOAL}x uvloop)"
          + (f" ({tcells - tmeas} not measured)" if tmeas < tcells else "") + ".\n")

    # ------------------------------------------------ http
    http = load_http(sys.argv[1])
    http_target = None  # (label, ratio or None, met)
    if http:
        h = out.append
        cols = [q for q in HTTP_SERVERS if any(q in d for d in http.values())]
        cols += sorted({q for d in http.values() for q in d} - set(cols))
        h("## http (HTTP/1.1 hello-world, requests/s)\n")
        h("`wrk -t1 -cCONNS -dHTTP_SECS` (keep-alive, no pipelining) against each server: "
          "loom runs scripts/examples/http_server.lua (protocol API, a Lua parser); the "
          "peers' servers are ../shared/bench/peers/http/* (node: Node's http module; "
          "libuv-c: plain C that only counts blank lines). Server pinned on SERVER_CPU, "
          "wrk on CLIENT_CPU. Ratios: loom req/s / the peer's (above 1 = loom faster). "
          "Target: HTTP example ahead of Node's http at 100 connections (> 1x node).\n")
        hdr = ["conns"] + cols + ["loom / node", "loom / libuv-c", "target"]
        h("| " + " | ".join(hdr) + " |")
        h("|" + "|".join("---" for _ in hdr) + "|")
        for conns in sorted(http):
            d = http[conns]
            md = {q: statistics.median(vs) for q, vs in d.items() if vs}
            cells = [(si(md[q]).strip() + spread(d[q])) if q in md else "–" for q in cols]
            lv, nv, cv = md.get("loom"), md.get("node"), md.get("libuv-c")
            r_n = lv / nv if lv and nv else None
            r_c = lv / cv if lv and cv else None
            if conns == 100:
                tgt = "not measured" if r_n is None else ("met" if r_n > 1 else "NOT MET")
                http_target = r_n
            else:
                tgt = "(no target)"
            h("| " + " | ".join([str(conns)] + cells
                                + [rx(r_n) if r_n else "–", rx(r_c) if r_c else "–", tgt]) + " |")
        h("")

    # ------------------------------------------------ threads
    loops = defaultdict(lambda: defaultdict(list))  # (size, conns) -> peer -> [req/s]
    with open(sys.argv[1]) as f:
        for r in csv.DictReader(f, delimiter="\t"):
            m = re.match(r"^echo-loops-s(\d+)-c(\d+)$", r["workload"])
            if m and num(r.get("ops_per_sec")) is not None:
                loops[(int(m.group(1)), int(m.group(2)))][r["peer"]].append(num(r["ops_per_sec"]))
    if loops or any(k[0].startswith("to_thread") for k in vals):
        p("## threads\n")
        p("to_thread: round trips/s (a job copied to a worker thread, run, its result "
          "copied back to the awaiting task), awaited one at a time and 10 in flight; "
          "loom's ratio to each (above 1 = loom faster). Target: >= 2x asyncio "
          "(one at a time). Echo on loops in threads: scripts/examples/multicore_echo.lua "
          "(one loop per thread, reuse_port) under the echo client, unpinned; scaling = "
          "2 loops / 1 loop.\n")
        for w in sorted({k[0] for k in vals if k[0].startswith("to_thread")}):
            lv = med(w, "loom", "ops_per_sec")
            if lv is None:
                p(f"- **{w}**: loom not measured (failed?)")
                continue
            parts = [f"{rx(lv / v)} {q}" for q in ("asyncio", "uvloop")
                     if (v := med(w, q, "ops_per_sec"))]
            p(f"- **{w}** (N={big_n(w, 'loom')}): loom {si(lv).strip()} round trips/s"
              f"{spread(series(w, 'loom', 'ops_per_sec'))}" + (" = " + ", ".join(parts) if parts else ""))
        for (size, conns), d in sorted(loops.items()):
            one, two = d.get("loom-1loop"), d.get("loom-2loops")
            a = statistics.median(one) if one else None
            b = statistics.median(two) if two else None
            p(f"- **echo {size} B x {conns} conns**: 1 loop "
              + (f"{si(a).strip()} req/s{spread(one)}" if a else "–") + ", 2 loops "
              + (f"{si(b).strip()} req/s{spread(two)}" if b else "–")
              + (f" = scaling {b / a:.2f}x" if a and b else ""))
        p("")

    # ------------------------------------------------ targets
    def rate_ratio(w, q):
        a, b = med(w, "loom", "ops_per_sec"), med(w, q, "ops_per_sec")
        return a / b if a and b else None

    def rss_ratio(w, q):
        a, b = med(w, "loom", "peak_rss_kb"), med(w, q, "peak_rss_kb")
        return a / b if a and b else None

    def task_mem_ratio(q):
        a, b = per_task("loom"), per_task(q)
        return a / b if a is not None and b else None

    targets = [
        ("cb_chain >= 3x uvloop", rate_ratio("cb_chain", "uvloop"), ">=", 3),
        ("cb_batch >= 3x uvloop", rate_ratio("cb_batch", "uvloop"), ">=", 3),
        ("timer arming >= 5x uvloop", rate_ratio("timers_arm", "uvloop"), ">=", 5),
        ("timers peak RSS <= 0.7x asyncio", rss_ratio("timers", "asyncio"), "<=", 0.7),
        ("tasks/s >= 6x uvloop", rate_ratio("tasks", "uvloop"), ">=", 6),
        ("tasks/s >= 2x cqueues", rate_ratio("tasks", "cqueues"), ">=", 2),
        ("ping-pong >= 5x uvloop", rate_ratio("pingpong", "uvloop"), ">=", 5),
        ("ping-pong >= 0.8x lua-coro", rate_ratio("pingpong", "lua-coro"), ">=", 0.8),
        ("memory per sleeping task <= 0.8x asyncio", task_mem_ratio("asyncio"), "<=", 0.8),
        ("queue >= 3x uvloop", rate_ratio("queue", "uvloop"), ">=", 3),
        ("lock >= 3x uvloop", rate_ratio("lock", "uvloop"), ">=", 3),
        ("gather >= 3x uvloop", rate_ratio("gather", "uvloop"), ">=", 3),
        ("to_thread round trips >= 2x asyncio", rate_ratio("to_thread", "asyncio"), ">=", 2),
        ("HTTP example ahead of Node's http at 100 connections", http_target, ">", 1),
    ]

    # ------------------------------------------------ spawn
    # Processes spawned and reaped per second (scripts/bench/spawn.lua
    # against py/spawn.py: N runs of `true` shared by C tasks), one
    # workload spawn_c<C> per concurrency C; loom, asyncio and uvloop only.
    # Target per C: >= 2x uvloop. Its targets go before the HTTP one, which
    # the echo/http-only report below expects last.
    spawn_cs = sorted({int(k[0][7:]) for k in vals if re.match(r"^spawn_c\d+$", k[0])})
    spawn_targets = []
    if spawn_cs:
        p("## spawn (processes spawned and reaped per second: loom, asyncio, uvloop)\n")
        p("N runs of `true` (create_subprocess_exec, then wait), shared by C tasks so "
          "that at most C children live at once. Ratios: loom's rate / the peer's "
          "(above 1 = loom faster). Target: >= 2x uvloop at every C.\n")
        p("| C | loom | asyncio | uvloop | loom / asyncio | loom / uvloop |")
        p("|---|---|---|---|---|---|")
        for c in spawn_cs:
            w = f"spawn_c{c}"
            md = {q: med(w, q, "ops_per_sec") for q in ("loom", "asyncio", "uvloop")}
            cell = lambda q: (si(md[q]).strip() + spread(series(w, q, "ops_per_sec"))
                              if md[q] else "–")
            ra = md["loom"] / md["asyncio"] if md["loom"] and md["asyncio"] else None
            ru = md["loom"] / md["uvloop"] if md["loom"] and md["uvloop"] else None
            p(f"| {c} | {cell('loom')} | {cell('asyncio')} | {cell('uvloop')} | "
              f"{rx(ra) if ra else '–'} | {rx(ru) if ru else '–'} |")
            spawn_targets.append((f"spawn rate >= 2x uvloop (C={c})", ru, ">=", 2))
        p("")
    targets[-1:-1] = spawn_targets
    files = any(l or c for _, l, c, _, _ in fl)
    if (echo or tls or http or files) and all(r is None for _, r, _, _ in targets[:-1]):
        if http:  # an echo/tls/http/files-only run: no other target measured
            p("## Targets\n")
            p("| target | measured | |")
            p("|---|---|---|")
            r = http_target
            p("| HTTP example ahead of Node's http at 100 connections | "
              + (f"{r:.3f}x node | {'met' if r > 1 else 'NOT MET'} |" if r is not None
                 else "– | not measured |"))
        print("\n".join(out))
        return
    p("## Targets\n")
    p("| target | measured | |")
    p("|---|---|---|")
    nmet = nmeas = 0
    for label, r, op, goal in targets:
        if r is None:
            p(f"| {label} | – | not measured |")
            continue
        nmeas += 1
        ok = r >= goal if op == ">=" else (r > goal if op == ">" else r <= goal)
        nmet += ok
        p(f"| {label} | {r:.3f}x | {'met' if ok else 'NOT MET'} |")
    p(f"\n{nmet} of {len(targets)} targets met"
      + (f" ({len(targets) - nmeas} not measured)" if nmeas < len(targets) else "") + ".")
    print("\n".join(out))


if __name__ == "__main__":
    main()
