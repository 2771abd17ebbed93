#!/usr/bin/env bash
# run-tests.sh - build loom and run the busted suite every way it runs.
#
#   scripts/run-tests.sh [all | asan | STEP...]
#
# Steps, in order:
#   build        make all
#   install      scripts/check-install.sh: the rockspec's file lists and the
#                man page in step with the sources; `luarocks make` and
#                `make install` into scratch trees, each checked from
#                outside the checkout (one check per line it prints)
#   types        (after docs, names) types/ annotates the module exactly
#   module       lua5.4 + busted, loom from lua/ and build/lib/loom/core.so
#   exe          build/bin/loom --plain busted, loom from the executable
#   asan-build   make SANITIZE=1 all (build-asan/, ASan + UBSan)
#   asan-exe     the exe step with build-asan/bin/loom
#   asan-module  the module step with build-asan's core.so, libasan preloaded
# `all` is every step, `asan` the last three.
#
# Each run's output is shown and kept in build/test-logs/<step>.log. A build
# step counts as one check. A busted run counts its tests (errors count as
# failures); a run that ends without busted's summary, that finds no test,
# or whose process exits non-zero with no failure counted, counts one more
# failure. The last line printed is "N passed, N failed" (", N skipped"
# when specs are pending); the exit status is 1 if anything failed.
#
# Environment: MAKE, CC, LUA (lua5.4), BUSTED (/usr/bin/busted), LUADIR
# (lua), SPECS (tests/*_spec.lua), BUSTED_ARGS (extra busted options, e.g.
# --filter=PATTERN), LOOM_BUSTED_OUTPUT (busted handler, utfTerminal).
# The specs see LOOM_TEST_MODE (module | exe) and LOOM_EXE (absolute path
# of the executable of the same build), and have tests/ on package.path.

set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

MAKE=${MAKE:-make}
CC=${CC:-cc}
LUA=${LUA:-lua5.4}
BUSTED=${BUSTED:-/usr/bin/busted}
LUA_SRC=${LUADIR:-lua}
case $LUA_SRC in /*) ;; *) LUA_SRC=$ROOT/$LUA_SRC ;; esac
read -r -a SPEC_LIST <<< "${SPECS:-$(echo tests/*_spec.lua)}"
read -r -a EXTRA_ARGS <<< "${BUSTED_ARGS:-}"
HANDLER=$ROOT/scripts/busted-results.lua
LOGS=$ROOT/build/test-logs

# Build with both cores unless the caller's make already chose -j.
MAKE_ARGS=(--no-print-directory -k)
case " ${MAKEFLAGS:-} " in
  *" -j"*|*jobserver*) ;;
  *) MAKE_ARGS+=("-j$(nproc 2>/dev/null || echo 2)") ;;
esac

ASAN_OPTIONS_BASE="detect_leaks=1:halt_on_error=1:abort_on_error=0"
ASAN_OPTIONS_BASE+=":detect_stack_use_after_return=1"
UBSAN_OPTIONS_BASE="print_stacktrace=1:halt_on_error=1"

passed=0 failed=0 skipped=0
report=()

note() { report+=("$(printf '  %-12s %s' "$1" "$2")"); }
banner() { printf '\n=== %s\n' "$*"; }

# check STEP COMMAND...: one check, passed when COMMAND exits 0.
check() {
  local step=$1; shift
  banner "$step: $*"
  if "$@" 2>&1 | tee "$LOGS/$step.log"; then
    passed=$((passed + 1)); note "$step" "ok"
  else
    failed=$((failed + 1)); note "$step" "FAILED"
  fi
}

# busted_run STEP NEEDED-FILE SANITIZER-LOG-DIR ENV-ASSIGNMENTS...
# Runs "$RUN..." $BUSTED under env(1) with the assignments, and counts.
busted_run() {
  local step=$1 needed=$2 sanlogs=$3; shift 3
  local results=$LOGS/$step.results log=$LOGS/$step.log
  banner "$step: LOOM_TEST_MODE=${step#asan-} ${RUN[*]#"$ROOT"/} busted"
  if [[ ! -e $needed ]]; then
    echo "${needed#"$ROOT"/} was not built" | tee "$log"
    failed=$((failed + 1)); note "$step" "FAILED: ${needed#"$ROOT"/} was not built"
    return
  fi
  rm -f "$results"
  if [[ -n $sanlogs ]]; then rm -rf "$sanlogs"; mkdir -p "$sanlogs"; fi

  env -u LUA_INIT -u LUA_INIT_5_4 -u LUA_PATH_5_4 -u LUA_CPATH_5_4 \
      -u LUA_PATH -u LUA_CPATH LOOM_BUSTED_RESULTS="$results" "$@" \
      "${RUN[@]}" "$BUSTED" -o "$HANDLER" "${EXTRA_ARGS[@]}" \
      "${SPEC_LIST[@]}" < /dev/null 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}

  # A run that ends badly (no summary, or a non-zero status with no
  # failure counted) adds one failure, unless sanitizer reports, each one
  # failure, already account for it.
  local ok=0 bad=0 errs=0 pend=0 why="" summary="" badend="" nrep=0
  [[ -f $results ]] && summary=$(grep '^summary ' "$results" | tail -n 1)
  if [[ -n $summary ]]; then
    read -r _ ok bad errs pend <<< "$summary"
    bad=$((bad + errs))
    if (( ok + bad + pend == 0 )); then
      bad=1; why="no test ran"
    elif (( rc != 0 && bad == 0 )); then
      badend="exited with status $rc after its summary"
    fi
  else
    # Crashed: keep what finished; the last test started is the culprit.
    if [[ -f $results ]]; then
      ok=$(grep -c '^end success ' "$results")
      pend=$(grep -c '^end pending ' "$results")
      bad=$(grep -c -E '^end (failure|error) ' "$results")
    fi
    badend="exited with status $rc without a summary"
    local last=""
    [[ -f $results ]] && last=$(tail -n 1 "$results")
    [[ $last == "start "* ]] && badend+=", in: ${last#start }"
  fi

  # ASan and LeakSanitizer reports, from this process or any child, go to
  # files. (UBSan's go to stderr: with -fno-sanitize-recover the process
  # that hits one dies, which the checks above or the spec see.)
  if [[ -n $sanlogs ]]; then
    local f
    for f in "$sanlogs"/*; do
      [[ -e $f ]] || continue
      nrep=$((nrep + 1))
      echo "--- sanitizer report ${f##*/}" | tee -a "$log"
      tee -a "$log" < "$f"
    done
  fi
  if (( nrep > 0 )); then
    bad=$((bad + nrep)); why+="${why:+; }$nrep sanitizer report(s)"
  elif [[ -n $badend ]]; then
    bad=$((bad + 1))
  fi
  [[ -n $badend ]] && why+="${why:+; }$badend"

  passed=$((passed + ok)); failed=$((failed + bad)); skipped=$((skipped + pend))
  local line="$ok passed, $bad failed"
  (( pend > 0 )) && line+=", $pend skipped"
  [[ -n $why ]] && line+=" ($why)"
  note "$step" "$line"
  echo "--- $step: $line"
}

# module_step STEP BUILD-DIR SANITIZER-LOG-DIR [ENV-ASSIGNMENTS...]
module_step() {
  local step=$1 dir=$2 sanlogs=$3; shift 3
  RUN=("$LUA")
  busted_run "$step" "$ROOT/$dir/lib/loom/core.so" "$sanlogs" \
    LOOM_TEST_MODE=module LOOM_EXE="$ROOT/$dir/bin/loom" \
    LUA_PATH="$LUA_SRC/?.lua;$LUA_SRC/?/init.lua;$ROOT/tests/?.lua;;" \
    LUA_CPATH="$ROOT/$dir/lib/?.so;;" "$@"
}

# exe_step STEP BUILD-DIR SANITIZER-LOG-DIR [ENV-ASSIGNMENTS...]
# lua/ is not on the path: `require "loom"` must find the embedded copy.
exe_step() {
  local step=$1 dir=$2 sanlogs=$3; shift 3
  RUN=("$ROOT/$dir/bin/loom" --plain)
  busted_run "$step" "$ROOT/$dir/bin/loom" "$sanlogs" \
    LOOM_TEST_MODE=exe LOOM_EXE="$ROOT/$dir/bin/loom" \
    LUA_PATH="$ROOT/tests/?.lua;;" "$@"
}

# install_step: scripts/check-install.sh, counting its "ok", "not ok" and
# "skip" lines; a run that ends badly with no failure counted counts one.
install_step() {
  local log=$LOGS/install.log ok bad skip why=""
  banner "install: scripts/check-install.sh"
  MAKE="$MAKE" LUA="$LUA" bash scripts/check-install.sh < /dev/null 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  ok=$(grep -c '^ok - ' "$log")
  bad=$(grep -c '^not ok - ' "$log")
  skip=$(grep -c '^skip - ' "$log")
  if (( rc != 0 && bad == 0 )); then
    bad=1; why=" (exited with status $rc)"
  elif (( ok + bad + skip == 0 )); then
    bad=1; why=" (no check ran)"
  fi
  passed=$((passed + ok)); failed=$((failed + bad)); skipped=$((skipped + skip))
  local line="$ok passed, $bad failed"
  (( skip > 0 )) && line+=", $skip skipped"
  note install "$line$why"
}

san_env() {
  local logs=$1
  SAN=(ASAN_OPTIONS="$ASAN_OPTIONS_BASE:log_path=$logs/asan"
       UBSAN_OPTIONS="$UBSAN_OPTIONS_BASE:log_path=$logs/ubsan")
}

run_step() {
  case $1 in
    build)
      # Relinked every time, so a failed build leaves nothing stale to test.
      rm -f build/bin/loom build/lib/loom/core.so
      check build "$MAKE" "${MAKE_ARGS[@]}" all ;;
    install) install_step ;;
    docs) check docs "$LUA" scripts/check-docs.lua ;;
    names)
      check names env LUA_CPATH="build/lib/?.so;;" \
        LUA_PATH="lua/?.lua;lua/?/init.lua;;" "$LUA" scripts/check-names.lua \
        "$ROOT/../shared/DESIGN.md" ;;
    types)
      check types env LUA_CPATH="build/lib/?.so;;" \
        LUA_PATH="lua/?.lua;lua/?/init.lua;;" "$LUA" scripts/check-types.lua ;;
    module) module_step module build "" ;;
    exe) exe_step exe build "" ;;
    asan-build)
      rm -f build-asan/bin/loom build-asan/lib/loom/core.so
      check asan-build "$MAKE" "${MAKE_ARGS[@]}" SANITIZE=1 all ;;
    asan-exe)
      san_env "$LOGS/asan-exe.san"
      exe_step asan-exe build-asan "$LOGS/asan-exe.san" "${SAN[@]}" ;;
    asan-module)
      # lua5.4 is not instrumented: the ASan runtime must be loaded first.
      local libasan
      libasan=$("$CC" -print-file-name=libasan.so)
      san_env "$LOGS/asan-module.san"
      module_step asan-module build-asan "$LOGS/asan-module.san" \
        LD_PRELOAD="$libasan" "${SAN[@]}" ;;
    *) echo "run-tests.sh: unknown step '$1'" >&2; exit 2 ;;
  esac
}

steps=("$@")
(( ${#steps[@]} == 0 )) && steps=(all)
case "${steps[*]}" in
  all) steps=(build install docs names types module exe asan-build asan-exe asan-module) ;;
  asan) steps=(asan-build asan-exe asan-module) ;;
esac

mkdir -p "$LOGS"
for s in "${steps[@]}"; do run_step "$s"; done

banner "summary (logs in ${LOGS#"$ROOT"/})"
printf '%s\n' "${report[@]}"
line="$passed passed, $failed failed"
(( skipped > 0 )) && line+=", $skipped skipped"
echo "$line"
(( failed == 0 ))
