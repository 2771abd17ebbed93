#!/usr/bin/env bash
# loom against its peers (../shared/bench/peers: asyncio, uvloop, luv,
# cqueues, lua-coro, Node.js, plain C on libuv) on the same single-process
# workloads, measured in the same run and printed as ratios.
#
# Builds loom (make) and the peers' C programs (into build/bench/peers-bin/,
# never inside the peers' directory), then for REPS repetitions runs every
# workload with loom and the peers interleaved, each program under
# `timeout`, pinned with taskset, peak RSS from /usr/bin/time -f %M.
# Writes build/bench/<UTC stamp>/
#   raw.tsv        one row per measured line (same columns as the peers')
#   commands.log   every command exactly as run, and every failure
#   env.txt        machine, tool versions and knobs
#   loom           the executable measured (a copy, frozen for the run)
#   stderr.log     what the programs printed on stderr
#   table.md       the report (scripts/bench/report.py raw.tsv env.txt)
# and copies table.md to build/bench/latest.md.
#
# usage: scripts/bench/run.sh [workload ...]
#   (callbacks timers tasks pingpong queue lock gather echo tls http spawn files threads; default all, in that order)
# echo: TCP echo servers driven by the peers' C epoll client (echo/client.c,
# built into build/bench/peers-bin/), all started at once pinned on
# SERVER_CPU, and measured with the client pinned on CLIENT_CPU cell by
# cell (size x connections, every server in turn, ECHO_SECS each; cqueues
# is left out, as in the peers' run.sh). Labels in raw.tsv:
#   loom             scripts/examples/echo_server.lua (protocol API)
#   loom-streams     the same in streams mode (start_server, read/write/drain)
#   loom-buffered    the same with a buffered protocol (get_buffer, buffer_updated)
#   asyncio-proto, asyncio-streams, uvloop-proto, uvloop-streams
#                    the peers' echo/py_aio.py (protocol or streams API)
#   luv, node, libuv-c  the peers' callback servers
#   lua-c, lua-c-streams  scripts/bench/c/lua_echo_server.c (built into
#                    build/bench/ when OK[libuv-c]): each read handed to a
#                    bare Lua function, or to a coroutine per connection
#                    resumed after the poll; the least a Lua server can do,
#                    the floor of loom and loom-streams
# tls: TLS echo servers (protocol API, TLS 1.3 with a throw-away EC P-256
# certificate made under build/bench/tls/): loom (scripts/bench/tls_echo.lua)
# against asyncio and uvloop with Python's ssl module (scripts/bench/py/
# tls_echo.py, labels asyncio and uvloop; the same OpenSSL library) and
# libuv-c (scripts/bench/c/tls_echo_server.c: loom's TLS design in plain
# C, no Lua, the floor, as the peers' echo/c_libuv.c is echo's), each
# started pinned on SERVER_CPU and measured for every size in TLS_SIZES x
# connections in TLS_CONNS, TLS_SECS each, by scripts/bench/c/tls_echo_client.c
# (one thread, OpenSSL on epoll, pinned on CLIENT_CPU; built into
# build/bench/ with pkg-config openssl). Needs no peers' directory.
# http: HTTP/1.1 hello-world servers under `wrk -t1 -cC -dHTTP_SECS` (wrk
# pinned on CLIENT_CPU, the server on SERVER_CPU): loom's
# scripts/examples/http_server.lua (protocol API) and the peers' http/
# servers (asyncio-proto, uvloop-proto, luv, cqueues, node, libuv-c), for
# every C in HTTP_CONNS, as the peers' run.sh does. Needs wrk.
# threads: to_thread round trips, scripts/bench/threads.lua against
# scripts/bench/py/to_thread.py (asyncio, uvloop): N_TOTHREAD calls awaited
# in turn (workload to_thread), then with 10 in flight (to_thread-c10); and
# echo requests/s of scripts/examples/multicore_echo.lua on 1 and 2 loops
# (one thread each), server and client unpinned (the server needs two
# cores), THREADS_ECHO_SIZE bytes at each of THREADS_ECHO_CONNS
# connections (workload echo-loops-s<SIZE>-c<C>, peers loom-1loop and
# loom-2loops).
# queue, lock and gather have no program in the peers' directory: they run
# loom (scripts/bench/<w>.lua) against asyncio and uvloop only, with the
# Python programs in scripts/bench/py/<w>.py (`python3 <w>.py N PEER [extra]`).
# knobs (environment), as in the peers' run.sh:
#   REPS=3 N_CB=1000000 N_TIMERS=1000000 N_TASKS=1000000 N_SLEEPERS=100000
#   N_PINGPONG=1000000 N_QUEUE=1000000 (items through a Queue(100))
#   N_LOCK=1000000 (acquisitions by 100 tasks) N_GATHER=10000 (tasks per gather)
#   GATHER_REPS=20 (gathers) MICRO_CPU=0 (empty = not pinned) TIMEOUT=300 (s per program)
#   ECHO_SECS=1 ECHO_SIZES="1024 10240 102400" (bytes) ECHO_CONNS="1 10 100"
#   SERVER_CPU=0 CLIENT_CPU=1 (echo, tls, http: server and client pinned apart) BASE_PORT=24000
#   HTTP_SECS=2 HTTP_CONNS="1 100" (wrk connections)
#   TLS_SECS=2 TLS_SIZES="1024 102400" (bytes) TLS_CONNS="10 100"
#   N_TOTHREAD=100000 THREADS_ECHO_SIZE=1024 THREADS_ECHO_CONNS="10 100"
#   PEERS="asyncio uvloop luv cqueues lua-coro node libuv-c" (subset to run;
#   PEERS=none runs loom alone)   NO_INSTALL=1 (never apt-get missing peers)
#   PEERS_DIR=<repo>/../shared/bench/peers  PY=/usr/bin/python3 LUA=lua5.4 NODE=node
# quick run:
#   REPS=1 N_CB=100000 N_TIMERS=100000 N_TASKS=100000 N_SLEEPERS=10000 \
#     N_PINGPONG=100000 N_QUEUE=100000 N_LOCK=100000 GATHER_REPS=2 scripts/bench/run.sh
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1

REPS=${REPS:-3}
N_CB=${N_CB:-1000000}
N_TIMERS=${N_TIMERS:-1000000}
N_TASKS=${N_TASKS:-1000000}
N_SLEEPERS=${N_SLEEPERS:-100000}
N_PINGPONG=${N_PINGPONG:-1000000}
N_QUEUE=${N_QUEUE:-1000000}
N_LOCK=${N_LOCK:-1000000}
N_GATHER=${N_GATHER:-10000}
GATHER_REPS=${GATHER_REPS:-20}
ECHO_SECS=${ECHO_SECS:-1}
ECHO_SIZES=${ECHO_SIZES:-"1024 10240 102400"}
ECHO_CONNS=${ECHO_CONNS:-"1 10 100"}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
HTTP_SECS=${HTTP_SECS:-2}
HTTP_CONNS=${HTTP_CONNS:-"1 100"}
TLS_SECS=${TLS_SECS:-2}
TLS_SIZES=${TLS_SIZES:-"1024 102400"}
TLS_CONNS=${TLS_CONNS:-"10 100"}
N_TOTHREAD=${N_TOTHREAD:-100000}
THREADS_ECHO_SIZE=${THREADS_ECHO_SIZE:-1024}
THREADS_ECHO_CONNS=${THREADS_ECHO_CONNS:-"10 100"}
MICRO_CPU=${MICRO_CPU-0}
TIMEOUT=${TIMEOUT:-300}
PY=${PY:-/usr/bin/python3}     # Debian's python3 (the one with python3-uvloop)
LUA=${LUA:-lua5.4}
NODE=${NODE:-node}
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/bench/peers}
PEERS=${PEERS:-asyncio uvloop luv cqueues lua-coro node libuv-c}
[ "$PEERS" = none ] && PEERS=
ASKED_PEERS=$PEERS             # before any is dropped (for scripts/bench/py)
WORKLOADS=${*:-callbacks timers tasks pingpong queue lock gather echo tls http spawn files threads}
LOOM=$ROOT/build/bin/loom
BENCH=$ROOT/scripts/bench

for w in $WORKLOADS; do
  case $w in callbacks|timers|tasks|pingpong|queue|lock|gather|echo|tls|http|spawn|files|threads) ;;
    *) echo "unknown workload '$w' (callbacks timers tasks pingpong queue lock gather echo tls http spawn files threads)" >&2; exit 2 ;;
  esac
done

# ---------------------------------------------------------------- build loom
echo "== building loom"
make -s all || { echo "make failed" >&2; exit 1; }
[ -x "$LOOM" ] || { echo "no $LOOM after make" >&2; exit 1; }

# ---------------------------------------------------------------- peers' packages
# The Makefile's deps target does not install the peers; do it here when
# something is missing and we are root (NO_INSTALL=1 to never do it).
want_pkgs() {
  local p missing=
  for p in python3-uvloop lua-luv lua-cqueues nodejs time; do
    dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || missing="$missing $p"
  done
  echo "$missing"
}
if [ -n "$PEERS" ] && [ -z "${NO_INSTALL:-}" ] && command -v dpkg-query >/dev/null; then
  missing=$(want_pkgs)
  if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ]; then
      echo "== installing missing peer packages:$missing"
      DEBIAN_FRONTEND=noninteractive apt-get install -y $missing >/dev/null 2>&1 ||
        { DEBIAN_FRONTEND=noninteractive apt-get update >/dev/null 2>&1 &&
          DEBIAN_FRONTEND=noninteractive apt-get install -y $missing >/dev/null 2>&1; } ||
        echo "   apt-get failed; the peers that need them will be skipped"
    else
      echo "== note: not root, not installing:$missing (those peers will be skipped)"
    fi
  fi
fi

OUT=build/bench/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT" build/bench/peers-bin
# Freeze the executable for the whole run (it embeds loom's Lua sources):
# build/ is shared, and a rebuild during the run must not change what is
# measured half-way through.
cp "$LOOM" "$OUT/loom" || exit 1
LOOM=$ROOT/$OUT/loom
RAW=$OUT/raw.tsv
LOG=$OUT/commands.log
: >"$LOG"
printf 'rep\tworkload\tpeer\tn\tseconds\tops_per_sec\textra\tpeak_rss_kb\twall_s\tuser_s\tsys_s\n' >"$RAW"
note() { echo "   note: $*" | tee -a "$LOG" >&2; echo "$*" >>"$OUT/notes.txt"; }

# ---------------------------------------------------------------- which peers run
has_peer() { case " $PEERS " in *" $1 "*) return 0 ;; esac; return 1; }
declare -A OK
if [ -n "$PEERS" ] && [ ! -d "$PEERS_DIR" ]; then
  note "peers' directory $PEERS_DIR not found: all peers skipped"
  PEERS=
fi
check() {  # check PEER WHY CMD...: PEER runs if CMD succeeds
  local p=$1 why=$2; shift 2
  has_peer "$p" || return
  if "$@" >/dev/null 2>&1; then OK[$p]=1; else note "peer $p skipped: $why"; fi
}
check asyncio "no $PY" "$PY" -c 'import asyncio'
check uvloop "python3-uvloop not installed" "$PY" -c 'import uvloop'
check luv "lua-luv not installed for $LUA" "$LUA" -e 'require "luv"'
check cqueues "lua-cqueues not installed for $LUA" "$LUA" -e 'require "cqueues"'
check lua-coro "no $LUA" "$LUA" -e ''
check node "no $NODE (Debian package nodejs)" "$NODE" -e ''
if has_peer libuv-c; then
  OK[libuv-c]=1
  for d in callbacks timers tasks pingpong; do
    gcc -O2 -Wall -o "build/bench/peers-bin/${d}_libuv" "$PEERS_DIR/$d/c_libuv.c" -luv 2>>"$LOG" ||
      { note "peer libuv-c skipped: gcc failed on $d/c_libuv.c (libuv1-dev?)"; unset 'OK[libuv-c]'; break; }
  done
fi

# echo: the peers' client (needed for loom alone too) and libuv-c's server.
ECHO_OK=
case " $WORKLOADS " in *" echo "*|*" threads "*)
  if [ ! -f "$PEERS_DIR/echo/client.c" ]; then
    note "echo skipped: no $PEERS_DIR/echo/client.c"
  elif ! command -v ss >/dev/null; then
    note "echo skipped: no ss (iproute2) to wait for the servers' ports"
  elif gcc -O2 -Wall -o build/bench/peers-bin/echo_client "$PEERS_DIR/echo/client.c" 2>>"$LOG"; then
    ECHO_OK=1
    if [ -n "${OK[libuv-c]:-}" ]; then
      gcc -O2 -Wall -o build/bench/peers-bin/echo_libuv "$PEERS_DIR/echo/c_libuv.c" -luv 2>>"$LOG" ||
        note "peer libuv-c skipped for echo: gcc failed on echo/c_libuv.c"
      rm -f build/bench/lua_echo_server
      gcc -O2 -Wall -o build/bench/lua_echo_server "$BENCH/c/lua_echo_server.c" \
          $(pkg-config --cflags --libs lua5.4 libuv) 2>>"$LOG" ||
        note "peers lua-c and lua-c-streams skipped: gcc failed on scripts/bench/c/lua_echo_server.c"
    fi
  else
    note "echo skipped: gcc failed on echo/client.c"
  fi ;;
esac

# http: wrk (needed for loom alone too) and libuv-c's server.
HTTP_OK=
case " $WORKLOADS " in *" http "*)
  if ! command -v wrk >/dev/null; then
    note "http skipped: no wrk (Debian package wrk)"
  elif ! command -v ss >/dev/null; then
    note "http skipped: no ss (iproute2) to wait for the servers' ports"
  else
    HTTP_OK=1
    if [ -n "${OK[libuv-c]:-}" ]; then
      if [ ! -f "$PEERS_DIR/http/c_libuv.c" ]; then
        note "peer libuv-c skipped for http: no $PEERS_DIR/http/c_libuv.c"
      else
        gcc -O2 -Wall -o build/bench/peers-bin/http_libuv "$PEERS_DIR/http/c_libuv.c" -luv 2>>"$LOG" ||
          note "peer libuv-c skipped for http: gcc failed on http/c_libuv.c"
      fi
    fi
  fi ;;
esac

# tls: the client (needed for loom alone too) and a throw-away certificate.
TLS_OK=
TLS_DIR=build/bench/tls
TLS_CLIENT=build/bench/tls_echo_client
TLS_CSERVER=build/bench/tls_echo_server  # peer libuv-c: the floor
case " $WORKLOADS " in *" tls "*)
  if ! command -v ss >/dev/null; then
    note "tls skipped: no ss (iproute2) to wait for the servers' ports"
  elif ! command -v openssl >/dev/null; then
    note "tls skipped: no openssl command (Debian package openssl) to make a certificate"
  elif ! pkg-config --exists openssl 2>/dev/null; then
    note "tls skipped: pkg-config finds no openssl (Debian packages pkg-config, libssl-dev)"
  elif ! gcc -O2 -Wall -o "$TLS_CLIENT" "$BENCH/c/tls_echo_client.c" $(pkg-config --cflags --libs openssl) 2>>"$LOG"; then
    note "tls skipped: gcc failed on scripts/bench/c/tls_echo_client.c"
  elif ! { mkdir -p "$TLS_DIR" &&
           openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
             -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" -days 2 -subj /CN=localhost \
             >>"$LOG" 2>&1; }; then
    note "tls skipped: openssl req failed to make a certificate in $TLS_DIR"
  else
    TLS_OK=1
    rm -f "$TLS_CSERVER"
    [ -n "${OK[libuv-c]:-}" ] &&
      ! gcc -O2 -Wall -o "$TLS_CSERVER" "$BENCH/c/tls_echo_server.c" -luv $(pkg-config --cflags --libs openssl) 2>>"$LOG" &&
      note "peer libuv-c skipped for tls: gcc failed on scripts/bench/c/tls_echo_server.c"
  fi ;;
esac

# asyncio and uvloop for the programs in scripts/bench/py/ (queue lock
# gather spawn threads tls), which do not need the peers' directory.
declare -A PYOK
for q in asyncio uvloop; do
  case " $ASKED_PEERS " in *" $q "*) ;; *) continue ;; esac
  if [ -n "${OK[$q]:-}" ] || "$PY" -c "import $q" >/dev/null 2>&1; then
    PYOK[$q]=1
  elif [ -z "$PEERS" ]; then   # otherwise check() has noted it already
    note "peer $q skipped for queue/lock/gather/spawn/threads/tls: $PY cannot import $q"
  fi
done

TIME=
if [ -x /usr/bin/time ]; then TIME="/usr/bin/time"; else note "no /usr/bin/time (package time): no peak RSS"; fi
PIN=
if [ -n "$MICRO_CPU" ]; then
  if command -v taskset >/dev/null; then PIN="taskset -c $MICRO_CPU"; else note "no taskset: not pinned"; fi
fi

# ---------------------------------------------------------------- environment
{
  echo "date (UTC): $(date -u '+%Y-%m-%d %H:%M')"
  echo "kernel: $(uname -sr)"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') ($(grep -m1 'cpu MHz' /proc/cpuinfo | cut -d: -f2 | tr -d ' ') MHz)"
  echo "hypervisor: $(lscpu 2>/dev/null | awk -F: '/Hypervisor vendor/{gsub(/ /,"",$2); print $2}')"
  echo "memory: $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "loom: $("$LOOM" -v 2>&1 | head -1) ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet HEAD -- host lua 2>/dev/null || echo ', host/ or lua/ modified'))"
  [ -n "${PYOK[asyncio]:-}" ] && echo "python: $($PY -V 2>&1)$([ -n "${PYOK[uvloop]:-}" ] && echo "; uvloop $($PY -c 'import uvloop; print(uvloop.__version__)')")"
  command -v "$LUA" >/dev/null && echo "lua: $($LUA -v 2>&1)$([ -n "${OK[luv]:-}" ] && echo "; luv $($LUA -e 'print(require"luv".version_string())')")$([ -n "${OK[cqueues]:-}" ] && echo "; cqueues $($LUA -e 'print(require"cqueues".VERSION)')")"
  [ -n "${OK[node]:-}" ] && echo "node: $($NODE -v)"
  echo "libuv: $(pkg-config --modversion libuv 2>/dev/null); gcc: $(gcc -dumpfullversion 2>/dev/null)"
  echo "peers run: $(for q in $PEERS; do [ -n "${OK[$q]:-}" ] && printf '%s ' "$q"; done)"
  echo "knobs: N_TOTHREAD=$N_TOTHREAD THREADS_ECHO_SIZE=$THREADS_ECHO_SIZE THREADS_ECHO_CONNS='$THREADS_ECHO_CONNS' REPS=$REPS N_CB=$N_CB N_TIMERS=$N_TIMERS N_TASKS=$N_TASKS N_SLEEPERS=$N_SLEEPERS N_PINGPONG=$N_PINGPONG N_QUEUE=$N_QUEUE N_LOCK=$N_LOCK N_GATHER=$N_GATHER GATHER_REPS=$GATHER_REPS MICRO_CPU=$MICRO_CPU TIMEOUT=$TIMEOUT ECHO_SECS=$ECHO_SECS ECHO_SIZES='$ECHO_SIZES' ECHO_CONNS='$ECHO_CONNS' SERVER_CPU=$SERVER_CPU CLIENT_CPU=$CLIENT_CPU HTTP_SECS=$HTTP_SECS HTTP_CONNS='$HTTP_CONNS' TLS_SECS=$TLS_SECS TLS_SIZES='$TLS_SIZES' TLS_CONNS='$TLS_CONNS'"
  [ -n "$HTTP_OK" ] && echo "wrk: $(wrk -v 2>&1 | head -1 | awk '{print $2}')"
  [ -n "$TLS_OK" ] && echo "tls: $(openssl version)$([ -n "${PYOK[asyncio]:-}${PYOK[uvloop]:-}" ] && echo "; python ssl: $("$PY" -c 'import ssl; print(ssl.OPENSSL_VERSION)')")"
} >"$OUT/env.txt"
cat "$OUT/env.txt"

# run_one REP LABEL CMD...: run one program pinned, under timeout and
# /usr/bin/time; append each line it prints to raw.tsv. A crash, a timeout
# or no output is logged (commands.log, notes.txt) and printed.
run_one() {
  local rep=$1 label=$2; shift 2
  local tf; tf=$(mktemp)
  local acct_cmd=()
  [ -n "$TIME" ] && acct_cmd=("$TIME" -o "$tf" -f '%M %e %U %S')
  echo "timeout $TIMEOUT $PIN ${acct_cmd[*]} $*" >>"$LOG"
  local out rc
  out=$(timeout "$TIMEOUT" $PIN "${acct_cmd[@]}" "$@" 2>>"$OUT/stderr.log")
  rc=$?
  local acct="- - - -" sig=
  if [ -n "$TIME" ]; then
    acct=$(grep -E '^[0-9]+ ' "$tf" | tail -1)
    sig=$(grep -o 'terminated by signal [0-9]*' "$tf")
  fi
  rm -f "$tf"
  if [ $rc -ne 0 ] || [ -z "$out" ]; then
    local why="exit status $rc"
    [ $rc -eq 124 ] && why="timed out after ${TIMEOUT}s"
    [ -n "$sig" ] && why="$sig"
    [ -z "$out" ] && why="$why, printed nothing"
    note "rep $rep: $label FAILED ($why): $*"
    # the lines it printed before failing, if any, are still kept
  fi
  [ -z "$out" ] && return
  local rss wall usr sys w p n s o
  read -r rss wall usr sys <<<"${acct:-- - - -}"
  while read -r w p n s o; do
    [ -n "$o" ] || continue
    printf '%s\t%s\t%s\t%s\t%s\t%s\t-\t%s\t%s\t%s\t%s\n' "$rep" "$w" "$p" "$n" "$s" "$o" "${rss:--}" "${wall:--}" "${usr:--}" "${sys:--}" >>"$RAW"
    printf '  %-14s %-9s n=%-8s %10s s %14s ops/s  rss=%s KB\n' "$w" "$p" "$n" "$s" "$o" "${rss:--}"
  done <<<"$out"
}

# micro REP DIR N [EXTRA]: loom, then every peer that has a program for DIR.
micro() {
  local rep=$1 dir=$2 n=$3 extra=${4:-}
  local pd=$PEERS_DIR/$dir
  run_one "$rep" "loom/$dir" "$LOOM" --plain "$BENCH/$dir.lua" "$n" $extra
  [ -n "${OK[asyncio]:-}" ] && run_one "$rep" "asyncio/$dir" "$PY" "$pd/py_aio.py" "$n" asyncio $extra
  [ -n "${OK[uvloop]:-}" ] && run_one "$rep" "uvloop/$dir" "$PY" "$pd/py_aio.py" "$n" uvloop $extra
  [ -n "${OK[luv]:-}" ] && [ -f "$pd/lua_luv.lua" ] && run_one "$rep" "luv/$dir" "$LUA" "$pd/lua_luv.lua" "$n" $extra
  [ -n "${OK[cqueues]:-}" ] && [ -f "$pd/lua_cqueues.lua" ] && run_one "$rep" "cqueues/$dir" "$LUA" "$pd/lua_cqueues.lua" "$n" $extra
  [ -n "${OK[lua-coro]:-}" ] && [ -f "$pd/lua_coro.lua" ] && run_one "$rep" "lua-coro/$dir" "$LUA" "$pd/lua_coro.lua" "$n" $extra
  [ -n "${OK[node]:-}" ] && [ -f "$pd/node.js" ] && run_one "$rep" "node/$dir" "$NODE" "$pd/node.js" "$n" $extra
  [ -n "${OK[libuv-c]:-}" ] && [ -x "build/bench/peers-bin/${dir}_libuv" ] &&
    run_one "$rep" "libuv-c/$dir" "build/bench/peers-bin/${dir}_libuv" "$n" $extra
  return 0
}

# own REP W N [EXTRA]: loom's scripts/bench/W.lua, then asyncio and uvloop
# running scripts/bench/py/W.py (workloads the peers' directory lacks).
own() {
  local rep=$1 w=$2 n=$3 extra=${4:-}
  run_one "$rep" "loom/$w" "$LOOM" --plain "$BENCH/$w.lua" "$n" $extra
  local q
  for q in asyncio uvloop; do
    [ -n "${PYOK[$q]:-}" ] && run_one "$rep" "$q/$w" "$PY" "$BENCH/py/$w.py" "$n" "$q" $extra
  done
  return 0
}

# ---------------------------------------------------------------- echo
# Every server is started pinned on SERVER_CPU and waited for on its port;
# all of them listen at once (idle, in their polls), and each size x
# connections cell is measured on every server back to back, the client
# pinned on CLIENT_CPU, before the next cell; then all are killed. The
# servers of one cell are thus measured seconds apart, not minutes: this
# machine's speed drifts by tens of percent over minutes, and a ratio of
# two servers measured far apart carried that drift. The order of the
# servers turns by one from cell to cell and from repetition to
# repetition, so that no server always follows the same one. raw.tsv:
# workload echo-s<SIZE>-c<C>,
# n = requests, ops_per_sec = requests/s, extra = MiB/s one way. And a row
# echo-cpu-s<SIZE>-c<C>: n = requests, seconds = the server's CPU seconds
# over the client's run (/proc/<pid>/stat, all its threads), ops_per_sec =
# requests per second of server CPU: on two cores shared by client and
# server it moves less with the machine's noise than requests/s.
NEXT_PORT=${BASE_PORT:-24000}
free_port() {  # next port with nothing listening on it; sets PORT
  while ss -ltnH "sport = :$NEXT_PORT" | grep -q .; do NEXT_PORT=$((NEXT_PORT + 1)); done
  PORT=$NEXT_PORT; NEXT_PORT=$((NEXT_PORT + 1))
}
wait_port() { for _ in $(seq 200); do ss -ltnH "sport = :$1" | grep -q . && return 0; sleep 0.05; done; return 1; }
pinned() { if command -v taskset >/dev/null; then echo "taskset -c $1"; fi; }

# serve PORT CMD...: starts a server pinned to SERVER_CPU; sets SERVER_PID.
serve() {
  local port=$1; shift
  echo "$(pinned "$SERVER_CPU") $*" >>"$LOG"
  $(pinned "$SERVER_CPU") "$@" >/dev/null 2>>"$OUT/stderr.log" &
  SERVER_PID=$!
  wait_port "$port"
}
stop_server() { kill "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null; }
# cpu_ticks PID: the process's user + system time, in clock ticks.
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $12 + $13 }'; }
# cpu_row REP WORKLOAD PEER N SECONDS: a raw.tsv row of a server's CPU
# seconds for N requests, with requests per CPU second (none for 0 s).
cpu_row() {
  awk -v v="$5" 'BEGIN { exit !(v > 0) }' || return 0
  printf '%s\t%s\t%s\t%s\t%s\t%s\t-\t-\t-\t-\t-\n' "$1" "$2" "$3" "$4" "$5" \
    "$(awk -v n="$4" -v v="$5" 'BEGIN { printf "%.1f", n / v }')" >>"$RAW"
}

echo_servers() {  # label|command with PORT placeholder
  local pd=$PEERS_DIR/echo
  echo "loom|$LOOM $ROOT/scripts/examples/echo_server.lua PORT 127.0.0.1 protocol"
  echo "loom-streams|$LOOM $ROOT/scripts/examples/echo_server.lua PORT 127.0.0.1 streams"
  echo "loom-buffered|$LOOM $ROOT/scripts/examples/echo_server.lua PORT 127.0.0.1 buffered"
  if [ -n "${OK[asyncio]:-}" ]; then
    echo "asyncio-proto|$PY $pd/py_aio.py PORT asyncio protocol"
    echo "asyncio-streams|$PY $pd/py_aio.py PORT asyncio streams"
  fi
  if [ -n "${OK[uvloop]:-}" ]; then
    echo "uvloop-proto|$PY $pd/py_aio.py PORT uvloop protocol"
    echo "uvloop-streams|$PY $pd/py_aio.py PORT uvloop streams"
  fi
  [ -n "${OK[luv]:-}" ] && echo "luv|$LUA $pd/lua_luv.lua PORT"
  [ -n "${OK[node]:-}" ] && echo "node|$NODE $pd/node.js PORT"
  [ -n "${OK[libuv-c]:-}" ] && [ -x build/bench/peers-bin/echo_libuv ] &&
    echo "libuv-c|build/bench/peers-bin/echo_libuv PORT"
  if [ -n "${OK[libuv-c]:-}" ] && [ -x build/bench/lua_echo_server ]; then
    echo "lua-c|build/bench/lua_echo_server PORT callback"
    echo "lua-c-streams|build/bench/lua_echo_server PORT streams"
  fi
  return 0
}

# The echo servers listening (ECHO_PIDS), killed too if the run ends early.
ECHO_PIDS=()
kill_echo_servers() {
  local pid
  for pid in "${ECHO_PIDS[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  ECHO_PIDS=()
}
trap kill_echo_servers EXIT
trap 'exit 130' INT TERM

echo_suite() {
  local rep=$1 label cmd
  [ -n "$ECHO_OK" ] || return 0
  local -a labels=() ports=()
  while IFS='|' read -r label cmd; do
    free_port; local port=$PORT
    if ! serve "$port" ${cmd//PORT/$port}; then
      note "rep $rep: echo server $label did not listen on $port: ${cmd//PORT/$port}"
      stop_server; continue
    fi
    labels+=("$label"); ports+=("$port"); ECHO_PIDS+=("$SERVER_PID")
  done < <(echo_servers)
  local nsrv=${#labels[@]} size c k i pid cell=0
  for size in $ECHO_SIZES; do for c in $ECHO_CONNS; do
    for ((k = 0; k < nsrv; k++)); do
      i=$(( (k + rep + cell) % nsrv ))
      label=${labels[i]}; local port=${ports[i]} pid=${ECHO_PIDS[i]}
      local ccmd="timeout $((${ECHO_SECS%.*} + 30)) $(pinned "$CLIENT_CPU") build/bench/peers-bin/echo_client $port $c $size $ECHO_SECS $label"
      echo "$ccmd" >>"$LOG"
      local line w p n s o mib t0 t1 srv
      t0=$(cpu_ticks "$pid")
      line=$($ccmd 2>>"$OUT/stderr.log")
      t1=$(cpu_ticks "$pid")
      if [ -z "$line" ]; then note "rep $rep: echo $label c=$c size=$size FAILED: $ccmd"; continue; fi
      read -r w p n s o mib <<<"$line"
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t-\t-\t-\t-\n' "$rep" "$w" "$p" "$n" "$s" "$o" "$mib" >>"$RAW"
      srv=$(awk -v a="$t0" -v b="$t1" -v k="$CLK_TCK" 'BEGIN { if (a != "" && b > a) printf "%.2f", (b - a) / k }')
      [ -n "$srv" ] && cpu_row "$rep" "echo-cpu-s$size-c$c" "$p" "$n" "$srv"
      printf '  %-20s %-14s %10s req/s %9s MiB/s  server CPU %s s\n' "$w" "$p" "$o" "$mib" "${srv:--}"
    done
    cell=$((cell + 1))
  done; done
  kill_echo_servers
  return 0
}

# ---------------------------------------------------------------- tls
# As echo: each server started pinned on SERVER_CPU, waited for on its
# port, measured by scripts/bench/c/tls_echo_client.c (pinned on
# CLIENT_CPU; it makes every handshake first, then counts whole echoes for
# TLS_SECS) for every size x connections, then killed. raw.tsv: workload
# tls-echo-s<SIZE>-c<C>, n = requests, ops_per_sec = requests/s, extra =
# MiB/s one way; wall_s, user_s, sys_s are the client's (the measured
# seconds and its CPU seconds in them: a client near 100% of its core is
# the bottleneck, not the server). And a row tls-cpu-s<SIZE>-c<C>: n =
# requests, seconds = the server's CPU seconds in the same time (the
# client reads /proc/<pid>/stat), ops_per_sec = requests per second of
# server CPU, a figure the client's own speed does not cap.
tls_servers() {  # label|command with PORT placeholder
  local crt="$ROOT/$TLS_DIR/cert.pem $ROOT/$TLS_DIR/key.pem"
  echo "loom|$LOOM $BENCH/tls_echo.lua PORT $crt"
  local q
  for q in asyncio uvloop; do
    [ -n "${PYOK[$q]:-}" ] && echo "$q|$PY $BENCH/py/tls_echo.py PORT $crt $q"
  done
  [ -x "$TLS_CSERVER" ] && echo "libuv-c|$TLS_CSERVER PORT $crt"
  return 0
}

tls_suite() {
  local rep=$1 label cmd
  [ -n "$TLS_OK" ] || return 0
  while IFS='|' read -r label cmd; do
    free_port; local port=$PORT
    if ! serve "$port" ${cmd//PORT/$port}; then
      note "rep $rep: tls server $label did not listen on $port: ${cmd//PORT/$port}"
      stop_server; continue
    fi
    local size c
    for size in $TLS_SIZES; do for c in $TLS_CONNS; do
      local ccmd="env TLS_ECHO_SERVER_PID=$SERVER_PID timeout $((${TLS_SECS%.*} + 30)) $(pinned "$CLIENT_CPU") $TLS_CLIENT $port $c $size $TLS_SECS $label"
      echo "$ccmd" >>"$LOG"
      local line w p n s o mib usr sys srv
      line=$($ccmd 2>>"$OUT/stderr.log")
      if [ -z "$line" ]; then note "rep $rep: tls $label c=$c size=$size FAILED: $ccmd"; continue; fi
      read -r w p n s o mib usr sys srv <<<"$line"
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t-\t%s\t%s\t%s\n' "$rep" "$w" "$p" "$n" "$s" "$o" "$mib" "$s" "${usr:--}" "${sys:--}" >>"$RAW"
      [ -n "$srv" ] && cpu_row "$rep" "tls-cpu-s$size-c$c" "$p" "$n" "$srv"
      printf '  %-22s %-8s %10s req/s %9s MiB/s  CPU: %s\n' "$w" "$p" "$o" "$mib" \
        "$(awk -v u="${usr:-0}" -v y="${sys:-0}" -v v="${srv:-}" -v t="$s" 'BEGIN {
             if (t > 0) printf "client %.0f%%", (u + y) / t * 100
             if (t > 0 && v != "") printf ", server %.0f%%", v / t * 100 }')"
    done; done
    stop_server
  done < <(tls_servers)
}

# ---------------------------------------------------------------- http
# As the peers' run.sh: each server pinned on SERVER_CPU, `wrk -t1 -cC
# -dHTTP_SECS` pinned on CLIENT_CPU for every C in HTTP_CONNS, then killed.
# raw.tsv: workload http-c<C>, n = requests, seconds = wrk's duration,
# ops_per_sec = requests/s, extra = errors (non-2xx + socket errors).
http_servers() {  # label|command with PORT placeholder
  local pd=$PEERS_DIR/http
  echo "loom|$LOOM $ROOT/scripts/examples/http_server.lua PORT"
  [ -f "$pd/py_aio.py" ] && [ -n "${OK[asyncio]:-}" ] && echo "asyncio-proto|$PY $pd/py_aio.py PORT asyncio"
  [ -f "$pd/py_aio.py" ] && [ -n "${OK[uvloop]:-}" ] && echo "uvloop-proto|$PY $pd/py_aio.py PORT uvloop"
  [ -f "$pd/lua_luv.lua" ] && [ -n "${OK[luv]:-}" ] && echo "luv|$LUA $pd/lua_luv.lua PORT"
  [ -f "$pd/lua_cqueues.lua" ] && [ -n "${OK[cqueues]:-}" ] && echo "cqueues|$LUA $pd/lua_cqueues.lua PORT"
  [ -f "$pd/node.js" ] && [ -n "${OK[node]:-}" ] && echo "node|$NODE $pd/node.js PORT"
  [ -n "${OK[libuv-c]:-}" ] && [ -x build/bench/peers-bin/http_libuv ] &&
    echo "libuv-c|build/bench/peers-bin/http_libuv PORT"
  return 0
}

http_suite() {
  local rep=$1 label cmd
  [ -n "$HTTP_OK" ] || return 0
  while IFS='|' read -r label cmd; do
    free_port; local port=$PORT
    if ! serve "$port" ${cmd//PORT/$port}; then
      note "rep $rep: http server $label did not listen on $port: ${cmd//PORT/$port}"
      stop_server; continue
    fi
    local c
    for c in $HTTP_CONNS; do
      local wcmd="timeout $((${HTTP_SECS%.*} + 30)) $(pinned "$CLIENT_CPU") wrk -t1 -c$c -d${HTTP_SECS}s http://127.0.0.1:$port/"
      echo "$wcmd" >>"$LOG"
      local out reqs secs rps errs
      out=$($wcmd 2>&1)
      reqs=$(awk '/requests in/{print $1}' <<<"$out")
      secs=$(awk '/requests in/{s=$4; sub(/s,$/, "", s); print s}' <<<"$out")
      rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
      errs=$(awk '/Non-2xx/{n+=$NF} /Socket errors/{for(i=4;i<=NF;i+=2){v=$i; sub(/,$/,"",v); n+=v}} END{print n+0}' <<<"$out")
      if [ -z "$rps" ] || [ -z "$reqs" ]; then
        note "rep $rep: http $label c=$c FAILED: $wcmd: $(tr '\n' ' ' <<<"$out")"; continue
      fi
      [ "$errs" != 0 ] && note "rep $rep: http $label c=$c: $errs errors: $(grep -E 'Non-2xx|Socket errors' <<<"$out" | tr '\n' ' ')"
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t-\t-\t-\t-\n' "$rep" "http-c$c" "$label" "$reqs" "${secs:--}" "$rps" "$errs" >>"$RAW"
      printf '  %-10s %-14s %12s req/s  (%s errors)\n' "http-c$c" "$label" "$rps" "$errs"
    done
    stop_server
  done < <(http_servers)
}

# ---------------------------------------------------------------- files
# loom.fs (scripts/bench/files.lua) against plain C read(2)/write(2)
# (scripts/bench/c/files.c, built into build/bench/): each writes a file
# of N_FILES_MIB MiB (default 1024) in 1 MiB chunks in a new temporary
# directory under $TMPDIR (else /tmp), reads it back, removes it. Which of
# the two runs first alternates by repetition (the page cache and the
# writeback of the previous run weigh on the next). raw.tsv: workloads
# files_write and files_read, peers loom and c, n = MiB, ops_per_sec =
# MiB/s. No target: the report gives the ratio to C.
N_FILES_MIB=${N_FILES_MIB:-1024}
FILES_C=
case " $WORKLOADS " in *" files "*)
  echo "files: N_FILES_MIB=$N_FILES_MIB TMPDIR=${TMPDIR:-/tmp}" >>"$OUT/env.txt"
  if gcc -O2 -Wall -o build/bench/files_c "$BENCH/c/files.c" 2>>"$LOG"; then
    FILES_C=build/bench/files_c
  else
    note "files: gcc failed on scripts/bench/c/files.c: C not measured"
  fi ;;
esac
files_suite() {
  local rep=$1 loom=(run_one "$rep" "loom/files" "$LOOM" --plain "$BENCH/files.lua" "$N_FILES_MIB")
  [ $((rep % 2)) = 1 ] && "${loom[@]}"
  [ -n "$FILES_C" ] && run_one "$rep" "c/files" "$FILES_C" "$N_FILES_MIB"
  [ $((rep % 2)) = 0 ] && "${loom[@]}"
  return 0
}

# ---------------------------------------------------------------- threads
threads_suite() {
  local rep=$1 q loops size=$THREADS_ECHO_SIZE
  run_one "$rep" "loom/threads" "$LOOM" --plain "$BENCH/threads.lua" "$N_TOTHREAD"
  for q in asyncio uvloop; do
    [ -n "${PYOK[$q]:-}" ] && run_one "$rep" "$q/to_thread" "$PY" "$BENCH/py/to_thread.py" "$N_TOTHREAD" "$q"
  done
  [ -n "$ECHO_OK" ] || return 0
  for loops in 1 2; do
    free_port; local port=$PORT label="loom-${loops}loop$([ "$loops" = 1 ] || echo s)"
    echo "$LOOM $ROOT/scripts/examples/multicore_echo.lua $port 127.0.0.1 $loops" >>"$LOG"
    "$LOOM" "$ROOT/scripts/examples/multicore_echo.lua" "$port" 127.0.0.1 "$loops" >/dev/null 2>>"$OUT/stderr.log" &
    SERVER_PID=$!
    if ! wait_port "$port"; then note "rep $rep: $label did not listen on $port"; stop_server; continue; fi
    local c
    for c in $THREADS_ECHO_CONNS; do
      local ccmd="timeout $((${ECHO_SECS%.*} + 30)) build/bench/peers-bin/echo_client $port $c $size $ECHO_SECS $label"
      echo "$ccmd" >>"$LOG"
      local line w p n s o mib
      line=$($ccmd 2>>"$OUT/stderr.log")
      if [ -z "$line" ]; then note "rep $rep: echo $label c=$c FAILED: $ccmd"; continue; fi
      read -r w p n s o mib <<<"$line"
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t-\t-\t-\t-\n' "$rep" "echo-loops-s$size-c$c" "$p" "$n" "$s" "$o" "$mib" >>"$RAW"
      printf '  %-20s %-14s %10s req/s %9s MiB/s\n' "echo-loops-s$size-c$c" "$p" "$o" "$mib"
    done
    stop_server
  done
}

START=$(date +%s)
for rep in $(seq 1 "$REPS"); do
  echo "== repetition $rep/$REPS ($(($(date +%s) - START)) s elapsed)"
  for w in $WORKLOADS; do
    case $w in
      callbacks) micro "$rep" callbacks "$N_CB" ;;
      timers)    micro "$rep" timers "$N_TIMERS" ;;
      tasks)     micro "$rep" tasks "$N_TASKS"
                 micro "$rep" tasks "$N_SLEEPERS" 1     # RSS per sleeping task:
                 micro "$rep" tasks 1 1 ;;              # minus this 1-task baseline
      pingpong)  micro "$rep" pingpong "$N_PINGPONG" ;;
      queue)     own "$rep" queue "$N_QUEUE" ;;
      lock)      own "$rep" lock "$N_LOCK" ;;
      gather)    own "$rep" gather "$N_GATHER" "$GATHER_REPS" ;;  # prints N_GATHER*GATHER_REPS
      # spawn: processes spawned and reaped per second, loom against asyncio
      # and uvloop (scripts/bench/spawn.lua, py/spawn.py: N_SPAWN=1000 runs
      # of `true`, shared by C tasks for each C in SPAWN_CONC="1 10 50";
      # one line per C, workload spawn_c<C>)
      spawn)     own "$rep" spawn "${N_SPAWN:-1000}" "${SPAWN_CONC:-1 10 50}" ;;
      echo)      echo_suite "$rep" ;;
      tls)       tls_suite "$rep" ;;
      http)      http_suite "$rep" ;;
      files)     files_suite "$rep" ;;
      threads)   threads_suite "$rep" ;;
    esac
  done
done
echo "== done in $(($(date +%s) - START)) s"

"$PY" "$BENCH/report.py" "$RAW" "$OUT/env.txt" "$OUT/notes.txt" >"$OUT/table.md" ||
  { echo "report failed" >&2; exit 1; }
cp "$OUT/table.md" build/bench/latest.md
echo "results: $OUT/ (raw.tsv, commands.log, env.txt, table.md; also build/bench/latest.md)"
echo
cat "$OUT/table.md"
