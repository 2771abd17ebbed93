#!/usr/bin/env bash
# User-space instructions per request of the TCP echo servers, counted by
# valgrind's callgrind: a steadier measure than requests/s on a shared
# machine. Each server runs under callgrind twice, while
# scripts/bench/echo_count.c makes N1, then N2 requests; the difference of
# the two totals over N2 - N1 leaves out start-up and shutdown.
#   usage: scripts/bench/echo_instr.sh [server ...]
#   servers: loom (the protocol API), loom-streams, libuv-c (the peers'
#   plain C server, the floor), lua-c and lua-c-streams (scripts/bench/c/
#   lua_echo_server.c: the least a Lua server does per read, the floor of
#   loom and loom-streams); default loom loom-streams libuv-c lua-c.
# knobs: ECHO_SIZES="1024 10240 102400" ECHO_CONNS="10"
#   N_SCALE=1 (multiplies N1 and N2: 2000/12000 requests at 1 KiB,
#   1000/6000 at 10 KiB, 500/2500 at 100 KiB)  BASE_PORT=26000
# Under valgrind a memcpy done with `rep movsb` counts one instruction per
# byte, so from 10 KiB on the figures mostly count bytes copied.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
ECHO_SIZES=${ECHO_SIZES:-"1024 10240 102400"}
ECHO_CONNS=${ECHO_CONNS:-10}
N_SCALE=${N_SCALE:-1}
PORT=${BASE_PORT:-26000}
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/bench/peers}
SERVERS=${*:-loom loom-streams libuv-c lua-c}
BIN=build/bench/peers-bin
command -v valgrind >/dev/null || { echo "echo_instr: needs valgrind" >&2; exit 1; }
make -s all || exit 1
mkdir -p "$BIN" build/bench/instr
gcc -O2 -Wall -o "$BIN/echo_count" scripts/bench/echo_count.c || exit 1
case " $SERVERS " in *" libuv-c "*)
  gcc -O2 -Wall -o "$BIN/echo_libuv" "$PEERS_DIR/echo/c_libuv.c" -luv || exit 1 ;;
esac
case " $SERVERS " in *" lua-c"*)
  gcc -O2 -Wall -o build/bench/lua_echo_server scripts/bench/c/lua_echo_server.c \
    $(pkg-config --cflags --libs lua5.4 libuv) || exit 1 ;;
esac

# total PORT N SIZE CONNS CMD...: callgrind's instruction total for the
# server CMD while echo_count makes N requests.
total() {
  local port=$1 n=$2 size=$3 conns=$4 out=build/bench/instr/cg.out pid
  shift 4
  rm -f "$out"
  valgrind --tool=callgrind --callgrind-out-file="$out" "$@" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 300); do ss -ltnH "sport = :$port" | grep -q . && break; sleep 0.1; done
  if ! "$BIN/echo_count" "$port" "$conns" "$size" "$n"; then
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; return 1
  fi
  kill -TERM "$pid"; wait "$pid" 2>/dev/null
  awk '/^(summary|totals):/ {print $2; exit}' "$out"
}

printf '%-14s %8s %6s %14s\n' server size conns instr/request
for server in $SERVERS; do
  for size in $ECHO_SIZES; do for conns in $ECHO_CONNS; do
    case $size in 1024) n1=2000 n2=12000 ;; 10240) n1=1000 n2=6000 ;;
                  *) n1=500 n2=2500 ;; esac
    n1=$((n1 * N_SCALE)) n2=$((n2 * N_SCALE))
    t=()
    for n in $n1 $n2; do
      PORT=$((PORT + 1))
      case $server in
        loom) cmd=(build/bin/loom scripts/examples/echo_server.lua $PORT 127.0.0.1 protocol) ;;
        loom-streams) cmd=(build/bin/loom scripts/examples/echo_server.lua $PORT 127.0.0.1 streams) ;;
        libuv-c) cmd=("$BIN/echo_libuv" $PORT) ;;
        lua-c) cmd=(build/bench/lua_echo_server $PORT callback) ;;
        lua-c-streams) cmd=(build/bench/lua_echo_server $PORT streams) ;;
        *) echo "echo_instr: unknown server $server" >&2; exit 2 ;;
      esac
      t+=("$(total $PORT $n $size $conns "${cmd[@]}")") || { echo "echo_instr: $server failed" >&2; exit 1; }
    done
    printf '%-14s %8s %6s %14s\n' "$server" "$size" "$conns" \
      "$(( (t[1] - t[0]) / (n2 - n1) ))"
  done; done
done
