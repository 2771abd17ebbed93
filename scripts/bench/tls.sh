#!/usr/bin/env bash
# TLS echo alone: loom's TLS layer against asyncio and uvloop with Python's
# ssl module, one C load generator for all, in the same run. This is
# `scripts/bench/run.sh tls` (see there: results, report, knobs); the
# names SECS, SIZES and CONNS are still understood for TLS_SECS,
# TLS_SIZES and TLS_CONNS.
#
# usage: scripts/bench/tls.sh
# knobs: REPS=3 TLS_SECS=2 TLS_SIZES="1024 102400" TLS_CONNS="10 100"
#        SERVER_CPU=0 CLIENT_CPU=1 PY=/usr/bin/python3 PEERS="asyncio uvloop libuv-c"
export TLS_SECS=${TLS_SECS:-${SECS:-2}}
export TLS_SIZES=${TLS_SIZES:-${SIZES:-"1024 102400"}}
export TLS_CONNS=${TLS_CONNS:-${CONNS:-"10 100"}}
export PEERS=${PEERS:-"asyncio uvloop libuv-c"}
exec bash "$(dirname "$0")/run.sh" tls
