# Makefile - build, test, bench and install loom (GNU make).
#
#   make            build/bin/loom and build/lib/loom/core.so
#   make test       the busted suite as a module, in the executable, and
#                   both again under AddressSanitizer + UBSan; the last
#                   line printed is "N passed, N failed"
#   make asan       only the sanitizer part of `make test`
#   make demo       run scripts/demo.lua with the executable
#   make bench      scripts/bench/run.sh
#   make install    bin/loom, lib/lua/5.4/loom/core.so, share/lua/5.4/loom/,
#                   share/man/man1/loom.1, share/loom/types/ (the editor
#                   annotations) under PREFIX=/usr/local; DESTDIR
#                   honoured (make uninstall removes them)
#   make clean
#
# Every target that compiles or runs something first installs the missing
# Debian packages (target `deps`); a machine that has them does no apt work.

.DELETE_ON_ERROR:
.SUFFIXES:

PREFIX  ?= /usr/local
DESTDIR ?=

LUA        ?= lua5.4
BUSTED     ?= /usr/bin/busted
PKG_CONFIG ?= pkg-config

# Where the sources are; variables only so the harness can be exercised
# on a scratch tree.
HOSTDIR ?= host
LUADIR  ?= lua
EMBED   ?= scripts/embed.lua

# `make SANITIZE=1` builds the same things into build-asan/ with
# AddressSanitizer and UndefinedBehaviorSanitizer; any report is fatal.
ifneq ($(SANITIZE),)
BUILD    ?= build-asan
OPTFLAGS ?= -O1 -g
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer \
            -fno-sanitize-recover=all
# Keep core.so mapped after lua_close() dlcloses it, so that the leak
# report LeakSanitizer prints at exit can name its functions.
SO_LDFLAGS := -Wl,-z,nodelete
else
BUILD    ?= build
# -fno-plt: calls into liblua and libuv go straight through the GOT; the
# core makes many short calls into the Lua API.
OPTFLAGS ?= -O2 -g -fno-plt
SANFLAGS :=
SO_LDFLAGS :=
endif

# Warnings, all of them errors (-Werror), so that none scrolls by unnoticed.
WARNINGS := -Werror
WARNINGS += -Wall                # the common set
WARNINGS += -Wextra              # unused parameters, sign compares, ...
WARNINGS += -Wshadow             # a local that hides another name
WARNINGS += -Wmissing-prototypes # a non-static function no header declares
WARNINGS += -Wstrict-prototypes  # `f()` instead of `f(void)`
WARNINGS += -Wwrite-strings      # string literals are const char[]
WARNINGS += -Wundef              # #if on an undefined macro

# pkg-config runs lazily, the first time a recipe needs it, so that `deps`
# has installed pkg-config and the .pc files by then.
once = $(eval $(1) := $$(shell $(2)))$($(1))
LUA_CFLAGS  = $(call once,LUA_CFLAGS,$(PKG_CONFIG) --cflags lua5.4)
LUA_LIBS    = $(call once,LUA_LIBS,$(PKG_CONFIG) --libs lua5.4)
UV_CFLAGS   = $(call once,UV_CFLAGS,$(PKG_CONFIG) --cflags libuv)
UV_LIBS     = $(call once,UV_LIBS,$(PKG_CONFIG) --libs libuv)
EDIT_CFLAGS = $(call once,EDIT_CFLAGS,$(PKG_CONFIG) --cflags libedit)
EDIT_LIBS   = $(call once,EDIT_LIBS,$(PKG_CONFIG) --libs libedit)
SSL_CFLAGS  = $(call once,SSL_CFLAGS,$(PKG_CONFIG) --cflags openssl)
SSL_LIBS    = $(call once,SSL_LIBS,$(PKG_CONFIG) --libs openssl)

# One set of position-independent objects serves both the module and the
# executable (which is PIE anyway).
ALL_CPPFLAGS = $(strip -D_GNU_SOURCE -I$(HOSTDIR) $(LUA_CFLAGS) $(UV_CFLAGS) \
               $(EDIT_CFLAGS) $(SSL_CFLAGS) $(CPPFLAGS))
ALL_CFLAGS   = $(strip -std=c11 $(OPTFLAGS) -fPIC $(WARNINGS) $(SANFLAGS) \
               $(CFLAGS))
ALL_LDFLAGS  = $(strip $(SANFLAGS) $(LDFLAGS))

SRCS      := $(sort $(wildcard $(HOSTDIR)/*.c))
MAIN_SRCS := $(HOSTDIR)/main.c $(HOSTDIR)/repl.c
CORE_SRCS := $(filter-out $(MAIN_SRCS),$(SRCS))
CORE_OBJS := $(patsubst $(HOSTDIR)/%.c,$(BUILD)/obj/%.o,$(CORE_SRCS))
MAIN_OBJ  := $(BUILD)/obj/main.o $(BUILD)/obj/repl.o
LUA_SRCS  := $(sort $(wildcard $(LUADIR)/loom/*.lua))
GEN_C     := $(BUILD)/gen/embedded.c
GEN_OBJ   := $(BUILD)/gen/embedded.o
GEN_LIST  := $(BUILD)/gen/lua-files
GEN_STAMP := $(BUILD)/gen/embedded.stamp

EXE := $(BUILD)/bin/loom
SO  := $(BUILD)/lib/loom/core.so

# curl, socat and nc are real peers for the network tests (curl for the
# HTTP example, socat and nc for raw TCP, UDP and Unix sockets); tmux
# drives the prompt through a pseudo-terminal in its tests. libssl-dev is
# TLS (host/tls.c); the openssl tool makes the tests' certificates and is
# their TLS peer (s_server, s_client). luarocks builds and installs the
# rock in the install checks, and lua5.3 is the other Lua that loom must
# refuse to load into. (Debian's luarocks needs one of lua5.1 to lua5.3 to
# run anyway; nothing here runs a bare `lua`, which lua5.3 becomes unless
# the lua-interpreter alternative is set.)
DEB_PACKAGES := gcc libc6-dev lua5.4 liblua5.4-dev libuv1-dev lua-busted libedit-dev \
                libssl-dev pkg-config curl socat netcat-openbsd tmux openssl \
                luarocks lua5.3

.PHONY: all deps test asan bench demo install uninstall clean FORCE

all: $(SO) $(EXE)

# --- deps: install missing Debian packages --------------------------------
# One dpkg-query for all packages; apt runs only when one is missing.
deps:
	@command -v dpkg-query >/dev/null 2>&1 || exit 0; \
	have=" $$(dpkg-query -W -f='$${db:Status-Status}:$${Package} ' \
	          $(DEB_PACKAGES) 2>/dev/null) "; \
	missing=; \
	for p in $(DEB_PACKAGES); do \
	  case "$$have" in *" installed:$$p "*) ;; *) missing="$$missing $$p";; esac; \
	done; \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "loom needs these Debian packages:$$missing" >&2; \
	  echo "install them as root:  apt-get install -y$$missing" >&2; \
	  exit 1; \
	fi; \
	echo "installing missing packages:$$missing"; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get update && apt-get install -y $$missing

# --- build -------------------------------------------------------------------
$(BUILD)/obj/%.o: $(HOSTDIR)/%.c Makefile | deps
	@mkdir -p $(@D)
	$(CC) $(ALL_CPPFLAGS) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

# The generated file is held to the same flags as the hand-written ones.
$(GEN_OBJ): $(GEN_C) Makefile | deps
	$(CC) $(ALL_CPPFLAGS) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

# Rewritten only when the set of Lua files changes, so that adding or
# removing a file regenerates embedded.c even when no file is newer.
$(GEN_LIST): FORCE
	@mkdir -p $(@D)
	@echo '$(LUA_SRCS)' | cmp -s - $@ || echo '$(LUA_SRCS)' > $@

# embed.lua leaves embedded.c untouched when its contents would not change;
# the stamp records that it ran, so a no-op build runs nothing.
$(GEN_STAMP): $(EMBED) $(LUA_SRCS) $(GEN_LIST) | deps
	@mkdir -p $(@D)
	$(LUA) $(EMBED) $(GEN_C) $(LUA_SRCS)
	@touch $@

$(GEN_C): $(GEN_STAMP)
	@[ -f $@ ] || $(LUA) $(EMBED) $@ $(LUA_SRCS)

# The module takes Lua's symbols from the interpreter that loads it, so it
# is not linked against liblua.
$(SO): $(CORE_OBJS)
	@mkdir -p $(@D)
	$(CC) -shared $(ALL_LDFLAGS) $(SO_LDFLAGS) -o $@ $^ \
	  $(strip $(UV_LIBS) $(SSL_LIBS)) -lm

# -Wl,-E exports Lua's API from the executable, so C modules built for the
# system Lua load in it.
$(EXE): $(MAIN_OBJ) $(CORE_OBJS) $(GEN_OBJ)
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) -Wl,-E -o $@ $^ \
	  $(strip $(LUA_LIBS) $(UV_LIBS) $(SSL_LIBS) $(EDIT_LIBS)) -lm -ldl

-include $(wildcard $(BUILD)/obj/*.d $(BUILD)/gen/*.d)

# --- test --------------------------------------------------------------------
# scripts/run-tests.sh builds (through this Makefile again) and runs every
# step, so that even a failed build ends in the summary line. It inherits
# MAKEFLAGS, hence `+`.
RUN_TESTS = MAKE='$(MAKE)' CC='$(CC)' LUA='$(LUA)' BUSTED='$(BUSTED)' \
            LUADIR='$(LUADIR)' bash scripts/run-tests.sh

test: | deps
	+@$(RUN_TESTS) all

asan: | deps
	+@$(RUN_TESTS) asan

# --- run ---------------------------------------------------------------------
demo: all
	$(EXE) scripts/demo.lua

bench: all
	@if [ -f scripts/bench/run.sh ]; then \
	  bash scripts/bench/run.sh; \
	else \
	  echo "no benchmarks yet (scripts/bench/run.sh does not exist)"; \
	fi

# --- install -----------------------------------------------------------------
# The layout of Debian's Lua packages and of luarocks trees: the C module
# under lib/lua/5.4, the Lua files under share/lua/5.4, where plain
# lua5.4 looks when PREFIX is /usr/local or /usr.
BIN_DIR      = $(DESTDIR)$(PREFIX)/bin
LUA_CMOD_DIR = $(DESTDIR)$(PREFIX)/lib/lua/5.4/loom
LUA_LMOD_DIR = $(DESTDIR)$(PREFIX)/share/lua/5.4/loom
MAN1_DIR     = $(DESTDIR)$(PREFIX)/share/man/man1
MAN_PAGE     = docs/loom.1
# The Lua Language Server's annotations (types/): data, not modules.
TYPES_DIR    = $(DESTDIR)$(PREFIX)/share/loom/types
TYPES_SRCS   = $(sort $(wildcard types/loom/*.lua))

install: all
	install -d $(BIN_DIR) $(LUA_CMOD_DIR) $(LUA_LMOD_DIR) $(MAN1_DIR)
	install -m 755 $(EXE) $(BIN_DIR)/loom
	install -m 755 $(SO) $(LUA_CMOD_DIR)/core.so
	install -m 644 $(LUA_SRCS) $(LUA_LMOD_DIR)/
	install -m 644 $(MAN_PAGE) $(MAN1_DIR)/loom.1
	install -d $(TYPES_DIR)/loom
	install -m 644 types/loom.lua $(TYPES_DIR)/
	install -m 644 $(TYPES_SRCS) $(TYPES_DIR)/loom/

# Removes what install put there, and loom's own directories; the shared
# ones (bin, man1, ...) stay.
uninstall:
	rm -f $(BIN_DIR)/loom $(LUA_CMOD_DIR)/core.so $(MAN1_DIR)/loom.1
	rm -f $(addprefix $(LUA_LMOD_DIR)/,$(notdir $(LUA_SRCS)))
	rm -f $(TYPES_DIR)/loom.lua $(addprefix $(TYPES_DIR)/loom/,$(notdir $(TYPES_SRCS)))
	rmdir $(LUA_CMOD_DIR) $(LUA_LMOD_DIR) $(TYPES_DIR)/loom $(TYPES_DIR) \
	  $(DESTDIR)$(PREFIX)/share/loom 2>/dev/null || true

clean:
	rm -rf build build-asan
