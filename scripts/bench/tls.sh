#!/usr/bin/env bash
# TLS echo: loom's TLS layer against asyncio and uvloop with Python's ssl
# module (the same OpenSSL), driven by one C load generator
# (scripts/bench/c/tls_echo_client.c: non-blocking OpenSSL on epoll, the
# same for every server), in the same run. Each server is pinned on
# SERVER_CPU, the client on CLIENT_CPU; for every size x connections the
# servers take turns, REPS times, and the median requests/s is printed
# with loom's ratio to each peer.
#
# usage: scripts/bench/tls.sh
# knobs: REPS=3 SECS=2 SIZES="1024 102400" CONNS="10" SERVER_CPU=0
#        CLIENT_CPU=1 PORT=24600 PY=/usr/bin/python3 PEERS="asyncio uvloop"
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
REPS=${REPS:-3}
SECS=${SECS:-2}
SIZES=${SIZES:-"1024 102400"}
CONNS=${CONNS:-10}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PORT=${PORT:-24600}
PY=${PY:-/usr/bin/python3}
PEERS=${PEERS:-"asyncio uvloop"}

make -s all || exit 1
OUT=build/bench/tls
mkdir -p "$OUT"
cc -O2 -o "$OUT/tls_echo_client" scripts/bench/c/tls_echo_client.c \
  $(pkg-config --cflags --libs openssl) || exit 1
# a throw-away certificate (EC P-256, as a web server would have)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$OUT/key.pem" -out "$OUT/cert.pem" -days 2 -subj /CN=localhost \
  >/dev/null 2>&1 || exit 1

start() {  # label -> pid (waits until the port accepts)
  case $1 in
    loom) taskset -c "$SERVER_CPU" build/bin/loom scripts/bench/tls_echo.lua \
            "$PORT" "$OUT/cert.pem" "$OUT/key.pem" 2>>"$OUT/stderr.log" & ;;
    *) taskset -c "$SERVER_CPU" "$PY" scripts/bench/py/tls_echo.py "$PORT" \
         "$OUT/cert.pem" "$OUT/key.pem" "$1" 2>>"$OUT/stderr.log" & ;;
  esac
  SPID=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$1 did not start" >&2
  return 1
}

: >"$OUT/raw.tsv"
for size in $SIZES; do
  for c in $CONNS; do
    for rep in $(seq "$REPS"); do
      for label in loom $PEERS; do
        start "$label" || continue
        taskset -c "$CLIENT_CPU" timeout 60 "$OUT/tls_echo_client" "$PORT" \
          "$c" "$size" "$SECS" "$label" | tee -a "$OUT/raw.tsv"
        kill "$SPID" 2>/dev/null
        wait "$SPID" 2>/dev/null
        PORT=$((PORT + 1))
      done
    done
  done
done

echo
echo "median requests/s (loom's ratio to each peer)"
awk '{ key = $1; v[key, $2, ++n[key, $2]] = $5; keys[key] = 1; labels[$2] = 1 }
  function median(k, l,   m, i, j, t, a) {
    m = n[k, l]; for (i = 1; i <= m; i++) a[i] = v[k, l, i]
    for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++)
      if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return m % 2 ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2 }
  END {
    for (k in keys) {
      lm = median(k, "loom"); line = sprintf("%-22s loom %9.0f", k, lm)
      for (l in labels) if (l != "loom" && n[k, l] > 0) {
        pm = median(k, l)
        line = line sprintf("   %s %9.0f (x%.2f)", l, pm, lm / pm) }
      print line } }' "$OUT/raw.tsv" | sort
