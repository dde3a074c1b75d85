#!/usr/bin/env bash
# A throwaway PostgreSQL server for the PostgreSQL store's tests.
#
# Sourced by .ci/run: starts a server on 127.0.0.1 in a fresh temporary folder, exports ZIMAGE_TEST_POSTGRES_URL
# (password login, as on a farm's shared server) and stops the server and removes the folder when .ci/run exits.
# Nothing happens when ZIMAGE_TEST_POSTGRES_URL is already set. Without PostgreSQL the tests are skipped, except
# on CI (CI=true), where PostgreSQL is installed with apt-get when missing and the tests must run
# (ZIMAGE_REQUIRE_POSTGRES=1).
#
# By hand: `bash .ci/postgres.sh --print` starts one, prints the export line and the stop command, and leaves it running.

_zpg_find_bindir() {
  local dir
  dir=$(pg_config --bindir 2>/dev/null || true)
  if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
    echo "$dir"
    return 0
  fi
  for dir in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV); do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
      echo "$dir"
      return 0
    fi
  done
  return 1
}

# Run a command as the cluster's owner: initdb and postgres refuse to run as root.
_zpg_as_owner() {
  if [ "$(id -u)" != 0 ]; then
    (cd / && "$@")
  elif command -v runuser >/dev/null; then
    (cd / && runuser -u "$_zpg_owner" -- "$@")
  else
    (cd / && su "$_zpg_owner" -s /bin/bash -c "$(printf '%q ' "$@")")
  fi
}

_zpg_start() {
  local mode=$1 bindir dir port password url stop start_s
  if [ "${CI:-}" = true ]; then
    export ZIMAGE_REQUIRE_POSTGRES=1
  fi
  if [ "$mode" = source ] && [ -n "${ZIMAGE_TEST_POSTGRES_URL:-}" ]; then
    return 0
  fi

  bindir=$(_zpg_find_bindir || true)
  if [ -z "$bindir" ] && [ "${CI:-}" = true ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { timeout 300 apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq postgresql; } >/dev/null 2>&1 || true
    bindir=$(_zpg_find_bindir || true)
  fi
  if [ -z "$bindir" ]; then
    if [ "${CI:-}" = true ]; then
      echo "error: PostgreSQL could not be found or installed, and CI must run the PostgreSQL store's tests" >&2
      return 1
    fi
    echo "note: PostgreSQL is not installed here; the PostgreSQL store's tests will be skipped"
    return 0
  fi

  start_s=$(date +%s.%N)
  if [ "$(id -u)" = 0 ]; then
    if id postgres >/dev/null 2>&1; then _zpg_owner=postgres; else _zpg_owner=nobody; fi
    dir=$(mktemp -d /tmp/zimage-pg.XXXXXX) || return 1
    chown "$_zpg_owner" "$dir" || return 1
  else
    _zpg_owner=$(id -un)
    dir=$(mktemp -d -t zimage-pg.XXXXXX) || return 1
  fi
  if ! _zpg_as_owner "$bindir/initdb" -D "$dir/data" -A trust -U postgres --no-sync >"$dir/initdb.log" 2>&1; then
    echo "error: initdb failed:" >&2
    cat "$dir/initdb.log" >&2
    rm -rf "$dir"
    return 1
  fi
  # Only the owner reaches the socket (it lives in the owner's 0700 folder); TCP always asks for the password.
  printf '%s\n' 'local all all trust' 'host all all 127.0.0.1/32 scram-sha-256' >"$dir/data/pg_hba.conf"
  _zpg_as_owner mkdir "$dir/socket"
  stop="$(printf '%q' "$bindir/pg_ctl") -D $(printf '%q' "$dir/data") stop -m fast"
  if [ "$(id -u)" = 0 ]; then
    stop="runuser -u $_zpg_owner -- $stop"
  fi
  stop="$stop >/dev/null 2>&1; rm -rf $(printf '%q' "$dir")"

  # A free port can be taken between the probe and the start: try a few.
  for _ in 1 2 3; do
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    if _zpg_as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 -o \
        "-c listen_addresses=127.0.0.1 -p $port -k $dir/socket -c fsync=off" start >/dev/null 2>&1; then
      break
    fi
    port=""
  done
  if [ -z "$port" ]; then
    echo "error: the PostgreSQL test server did not start:" >&2
    tail -n 20 "$dir/log" >&2
    eval "$stop"
    return 1
  fi

  password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
  if ! printf '%s\n' "CREATE ROLE zimage LOGIN PASSWORD '$password';" \
      "CREATE DATABASE zimage_test OWNER zimage;" \
      | _zpg_as_owner "$bindir/psql" -h "$dir/socket" -p "$port" -U postgres -d postgres -X -q \
          -v ON_ERROR_STOP=1 >/dev/null 2>"$dir/psql.log"; then
    echo "error: the PostgreSQL test database could not be created:" >&2
    cat "$dir/psql.log" >&2
    eval "$stop"
    return 1
  fi
  url="postgresql://zimage:$password@127.0.0.1:$port/zimage_test"

  if [ "$mode" = print ]; then
    echo "export ZIMAGE_TEST_POSTGRES_URL=$url"
    echo "# stop it with: $stop"
    return 0
  fi
  export ZIMAGE_TEST_POSTGRES_URL=$url
  if declare -F at_exit >/dev/null; then
    at_exit "$stop"
  else
    # shellcheck disable=SC2064  # the command is fixed now, on purpose
    trap "$stop" EXIT
  fi
  echo "note: PostgreSQL test server on 127.0.0.1:$port (started in $(python3 -c \
    "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$start_s" "$(date +%s.%N)") s)"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  if [ "${1:-}" != --print ]; then
    echo "usage: bash .ci/postgres.sh --print   (or source it, as .ci/run does)" >&2
    exit 2
  fi
  _zpg_start print
else
  _zpg_start source
fi
