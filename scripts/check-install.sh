#!/usr/bin/env bash
# check-install.sh - loom installed both ways, and checked from outside
# the checkout.
#
#   scripts/check-install.sh [files] [rock] [make]     (all three if none)
#
#   files  loom-scm-1.rockspec lists every host/*.c and lua/loom/*.lua
#          (scripts/check-rockspec.lua); docs/loom.1 documents every option
#          and prompt command (scripts/check-manpage.lua) and renders with
#          no warning
#   rock   `luarocks make` into a scratch tree from a copy of the sources;
#          the issue's one-liner with only that tree on the paths;
#          `luarocks test` on a few spec files against it; and, on a copy
#          whose compiler cannot see uv.h, a failure that names libuv1-dev
#   make   `make install DESTDIR=... PREFIX=...`: the layout, the installed
#          executable, lua5.4 with only the installed paths, the man page;
#          the installed module refusing Lua 5.3 with a clear error; then
#          `make uninstall` leaving nothing behind
#
# Each check prints "ok - ...", "not ok - ..." (with the output that
# explains it) or "skip - ..."; the last line is "N passed, N failed,
# N skipped", and the status is 1 if anything failed. Everything happens
# in a directory of mktemp -d, removed at exit: no user's or system tree
# is touched, and luarocks runs with HOME there (no user config, no
# cache) and with an empty local server, so it downloads nothing.
#
# Environment: MAKE, LUA (lua5.4), OTHER_LUA (lua5.3), LUAROCKS (luarocks),
# ROCK_SPECS (the spec files `luarocks test` runs).

set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

MAKE=${MAKE:-make}
LUA=${LUA:-lua5.4}
OTHER_LUA=${OTHER_LUA:-lua5.3}
LUAROCKS=${LUAROCKS:-luarocks}
ROCKSPEC=loom-scm-1.rockspec
# A few fast specs that still reach every layer: the paths (smoke), child
# interpreters finding the same loom (loop), tasks, C streams over TCP,
# UDP and threads with a state of their own.
ROCK_SPECS=${ROCK_SPECS:-tests/smoke_spec.lua tests/loop_spec.lua tests/task_spec.lua tests/streams_tcp_spec.lua tests/udp_spec.lua tests/thread_spec.lua}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/loom-install.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT
OUT=$TMP/out   # the output of the last command run by `expect`

passed=0 failed=0 skipped=0
ok() { passed=$((passed + 1)); echo "ok - $*"; }
skip() { skipped=$((skipped + 1)); echo "skip - $*"; }
not_ok() {
  failed=$((failed + 1))
  echo "not ok - $*"
  [[ -s $OUT ]] && sed 's/^/    /' "$OUT" | tail -n 40
}

# expect DESC CMD...: one check, ok when CMD exits 0; its output is kept
# in $OUT for what follows.
expect() {
  local desc=$1; shift
  if "$@" > "$OUT" 2>&1; then ok "$desc"; else not_ok "$desc"; fi
}

# expect_out DESC WANT CMD...: ok when CMD exits 0 and prints exactly WANT.
expect_out() {
  local desc=$1 want=$2; shift 2
  if "$@" > "$OUT" 2>&1 && [[ $(cat "$OUT") == "$want" ]]; then
    ok "$desc"
  else
    echo "(expected output: $want)" >> "$OUT"
    not_ok "$desc"
  fi
}

# No Lua variables from the caller's environment: clean_env CMD... runs
# a command without them, unset_lua drops them from the (sub)shell.
LUA_VARS=(LUA_INIT LUA_INIT_5_4 LUA_INIT_5_3 LUA_PATH LUA_PATH_5_4
          LUA_PATH_5_3 LUA_CPATH LUA_CPATH_5_4 LUA_CPATH_5_3 LD_PRELOAD)
clean_env() {
  local v args=()
  for v in "${LUA_VARS[@]}"; do args+=(-u "$v"); done
  env "${args[@]}" "$@"
}
unset_lua() { unset "${LUA_VARS[@]}"; }
unset_lua  # for every check: only what each one sets

# A copy of what the rock is built from (what a fresh clone has), so the
# objects luarocks leaves next to the sources stay out of the checkout.
copy_sources() {
  local dest=$1 d
  mkdir -p "$dest"
  cp "$ROCKSPEC" "$dest/"
  for d in host lua docs types tests scripts; do
    [[ -d $d ]] && cp -R "$d" "$dest/"
  done
}

rocks() {  # rocks ARGS...: luarocks for Lua 5.4, sandboxed
  clean_env HOME="$TMP/home" "$LUAROCKS" --lua-version 5.4 \
    --only-server="$TMP/no-server" "$@"
}

ONE_LINER='print(require("loom").run(function() return "ok" end))'

# --- files -------------------------------------------------------------------
check_files() {
  expect "$ROCKSPEC lists every host/*.c and lua/loom/*.lua, and only those" \
    "$LUA" scripts/check-rockspec.lua "$ROCKSPEC"
  expect "docs/loom.1 documents every option of host/main.c and prompt command" \
    "$LUA" scripts/check-manpage.lua
  if command -v groff > /dev/null; then
    if groff -man -Tutf8 -ww -z docs/loom.1 > "$OUT" 2>&1 && [[ ! -s $OUT ]]; then
      ok "docs/loom.1 renders with no groff warning"
    else
      not_ok "docs/loom.1 renders with no groff warning"
    fi
  else
    skip "docs/loom.1 rendering: groff is not installed"
  fi
}

# --- rock --------------------------------------------------------------------
check_rock() {
  local src=$TMP/rock-src tree=$TMP/rock f missing
  mkdir -p "$TMP/home" "$TMP/no-server"
  copy_sources "$src"

  if (cd "$src" && rocks --tree "$tree" make "$ROCKSPEC") > "$OUT" 2>&1; then
    ok "luarocks make $ROCKSPEC --tree T (from a copy of the sources)"
  else
    not_ok "luarocks make $ROCKSPEC --tree T (from a copy of the sources)"
  fi

  missing=
  for f in lib/lua/5.4/loom/core.so share/lua/5.4/loom/init.lua \
           lib/luarocks/rocks-5.4/loom/scm-1/docs/manual.md \
           lib/luarocks/rocks-5.4/loom/scm-1/docs/loom.1; do
    [[ -f $tree/$f ]] || missing+=" $f"
  done
  for f in lua/loom/*.lua; do
    cmp -s "$f" "$tree/share/lua/5.4/loom/${f##*/}" || missing+=" share/lua/5.4/loom/${f##*/}"
  done
  if [[ -z $missing ]]; then
    ok "the rock's tree holds core.so, every Lua file and the docs"
  else
    echo "missing or different:$missing" > "$OUT"
    not_ok "the rock's tree holds core.so, every Lua file and the docs"
  fi

  # The one-liner from outside the checkout, with the tree's paths from
  # `luarocks path`; and the module found there, not anywhere else.
  local paths
  paths=$(rocks --tree "$tree" path) || paths=
  # in_tree CMD...: CMD in the scratch directory with the tree's paths
  # and no other Lua setting from the caller.
  in_tree() {
    (cd "$TMP" && unset_lua && eval "$paths" && exec "$@")
  }
  expect_out "lua5.4 -e '$ONE_LINER' after eval \"\$(luarocks --tree T path)\"" \
    "ok" in_tree "$LUA" -e "$ONE_LINER"
  expect_out "loom and loom.core resolve into the rock's tree" \
    "$tree/share/lua/5.4/loom/init.lua $tree/lib/lua/5.4/loom/core.so" \
    in_tree "$LUA" -e 'io.write(package.searchpath("loom", package.path), " ",
                                package.searchpath("loom.core", package.cpath), "\n")'

  # luarocks test: scripts/rock-test.lua, busted under lua5.4, with the
  # executable of this checkout for the specs that run one.
  [[ -x build/bin/loom ]] || "$MAKE" --no-print-directory -s all > /dev/null 2>&1
  local specs
  read -r -a specs <<< "$ROCK_SPECS"
  if (cd "$src" && unset_lua && eval "$paths" && LOOM_EXE="$ROOT/build/bin/loom" \
        timeout 600 env HOME="$TMP/home" "$LUAROCKS" --lua-version 5.4 \
        --only-server="$TMP/no-server" --tree "$tree" test -- "${specs[@]}") \
        > "$OUT" 2>&1 &&
     grep -q "^testing loom from $tree/share/lua/5.4/loom/init.lua\$" "$OUT" &&
     grep -q " 0 failures / 0 errors " "$OUT"; then
    ok "luarocks test (${#specs[@]} spec files) against the rock's tree: $(grep -o '[0-9]* successes' "$OUT")"
  else
    not_ok "luarocks test (${#specs[@]} spec files) against the rock's tree"
  fi

  # Without libuv's headers, the build says what to install. A compiler
  # that cannot see uv.h: the system's include directory again, as
  # symbolic links, less uv.h and uv/.
  local inc=$TMP/include gccinc
  mkdir -p "$inc"
  for f in /usr/include/*; do
    case ${f##*/} in uv.h|uv) ;; *) ln -s "$f" "$inc/" ;; esac
  done
  gccinc=$(gcc -print-file-name=include)
  copy_sources "$TMP/nouv-src"
  if (cd "$TMP/nouv-src" && rocks --tree "$TMP/nouv" make "$ROCKSPEC" \
        CFLAGS="-O2 -fPIC -nostdinc -isystem $gccinc -isystem $inc/$(gcc -print-multiarch) -isystem $inc") \
        > "$OUT" 2>&1; then
    not_ok "luarocks make without uv.h fails, naming libuv1-dev (it succeeded)"
  elif grep -q "install libuv1-dev (Debian, Ubuntu)" "$OUT" &&
       [[ ! -e $TMP/nouv/lib/lua/5.4/loom/core.so ]]; then
    ok "luarocks make without uv.h fails, naming libuv1-dev"
  else
    not_ok "luarocks make without uv.h fails, naming libuv1-dev"
  fi
}

# --- make install --------------------------------------------------------------
check_make() {
  local dest=$TMP/dest prefix=/opt/loom p f want got
  p=$dest$prefix
  expect "make install DESTDIR=T PREFIX=$prefix" \
    "$MAKE" --no-print-directory -s install DESTDIR="$dest" PREFIX="$prefix"

  # Exactly these files, nothing elsewhere under DESTDIR.
  want=$( { echo "$p/bin/loom"; echo "$p/lib/lua/5.4/loom/core.so"
            for f in lua/loom/*.lua; do echo "$p/share/lua/5.4/loom/${f##*/}"; done
            echo "$p/share/man/man1/loom.1"; echo "$p/share/loom/types/loom.lua"
            for f in types/loom/*.lua; do echo "$p/share/loom/types/loom/${f##*/}"; done
          } | sort)
  got=$(find "$dest" -type f 2>/dev/null | sort)
  if [[ $got == "$want" ]] && [[ -x $p/bin/loom ]] &&
     cmp -s docs/loom.1 "$p/share/man/man1/loom.1"; then
    ok "the layout: bin, lib/lua/5.4, share/lua/5.4, share/man/man1, share/loom/types"
  else
    diff <(echo "$want") <(echo "$got") > "$OUT"
    not_ok "the layout: bin, lib/lua/5.4, share/lua/5.4, share/man/man1, share/loom/types"
  fi

  expect_out "installed bin/loom -e runs a main task" "ok" \
    bash -c 'cd "$1" && exec "$2" -e "$3"' _ "$TMP" "$p/bin/loom" \
    'loom.sleep(0) print("ok")'

  # Only the installed directories on the paths (no ";;": no default).
  local lpath="$p/share/lua/5.4/?.lua;$p/share/lua/5.4/?/init.lua"
  local cpath="$p/lib/lua/5.4/?.so"
  expect_out "lua5.4 with only the installed paths: the one-liner" "ok" \
    bash -c 'cd "$1" && exec env LUA_PATH="$2" LUA_CPATH="$3" "$4" -e "$5"' _ \
    "$TMP" "$lpath" "$cpath" "$LUA" "$ONE_LINER"

  if command -v man > /dev/null; then
    expect_out "man finds the installed page" "$p/share/man/man1/loom.1" \
      env MANPATH="$p/share/man" man -w loom
  else
    skip "man finds the installed page: man is not installed"
  fi

  # Under another Lua: a Lua error naming Lua 5.4, not a crash.
  if command -v "$OTHER_LUA" > /dev/null; then
    local status
    (cd "$TMP" && clean_env LUA_PATH="$lpath" LUA_CPATH="$cpath" \
       "$OTHER_LUA" -e 'require "loom"') > "$OUT" 2>&1
    status=$?
    if [[ $status == 1 ]] &&
       grep -q "loom needs Lua 5.4, but this is Lua 5\\.[0-35-9]" "$OUT"; then
      ok "require 'loom' under $OTHER_LUA fails, naming Lua 5.4"
    else
      echo "(exit status $status)" >> "$OUT"
      not_ok "require 'loom' under $OTHER_LUA fails, naming Lua 5.4"
    fi
    # loom.core directly: Lua's loader opens C modules with RTLD_NOW, so
    # the 5.4-only symbols fail the dlopen and require raises.
    (cd "$TMP" && clean_env LUA_CPATH="$cpath" "$OTHER_LUA" \
       -e 'require "loom.core"') > "$OUT" 2>&1
    status=$?
    if [[ $status == 1 ]] && grep -q "error loading module 'loom.core'" "$OUT" &&
       grep -q "undefined symbol: lua_" "$OUT"; then
      ok "require 'loom.core' under $OTHER_LUA raises (undefined symbol), no crash"
    else
      echo "(exit status $status)" >> "$OUT"
      not_ok "require 'loom.core' under $OTHER_LUA raises (undefined symbol), no crash"
    fi
  else
    skip "loading under another Lua: $OTHER_LUA is not installed"
    skip "loading loom.core under another Lua: $OTHER_LUA is not installed"
  fi

  expect "make uninstall DESTDIR=T PREFIX=$prefix" \
    "$MAKE" --no-print-directory -s uninstall DESTDIR="$dest" PREFIX="$prefix"
  got=$(find "$dest" -type f 2>/dev/null)
  if [[ -z $got ]] && [[ ! -e $p/lib/lua/5.4/loom && ! -e $p/share/lua/5.4/loom ]]; then
    ok "make uninstall removes every file and loom's directories"
  else
    { echo "left:"; echo "$got"; } > "$OUT"
    not_ok "make uninstall removes every file and loom's directories"
  fi
}

steps=("$@")
(( ${#steps[@]} == 0 )) && steps=(files rock make)
for s in "${steps[@]}"; do
  case $s in
    files) check_files ;;
    rock) check_rock ;;
    make) check_make ;;
    *) echo "check-install.sh: unknown step '$s'" >&2; exit 2 ;;
  esac
done

echo "$passed passed, $failed failed, $skipped skipped"
(( failed == 0 ))
