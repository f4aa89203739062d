# Start a throwaway PostgreSQL server on loopback; sourced by scripts/test and bench/run.
# Installs the server from Debian's packages when it is absent.
#   start_postgres [durable]   → exports CHAINLOOM_PG_URL, stops the server on exit
# Without "durable" the server runs with fsync off (tests only care about behaviour, not power loss).

_pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

_as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

_free_port() { "${PYTHON:-python3}" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_postgres() {
  local durable=${1:-}
  if [ -z "$(_pg_bin)" ]; then
    echo "scripts/postgres.sh: installing PostgreSQL from Debian's packages" >&2
    _as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    _as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  fi
  local bin; bin=$(_pg_bin)
  PG_DIR=$(mktemp -d /tmp/chainloom-pg.XXXXXX)
  local run=()
  if [ "$(id -u)" = 0 ]; then
    # initdb refuses to run as root: run the server as the packaged 'postgres' user.
    id postgres >/dev/null 2>&1 || useradd --system --home "$PG_DIR" postgres
    chown postgres "$PG_DIR"
    run=(runuser -u postgres --)
  fi
  "${run[@]}" "$bin/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 >/dev/null
  local port; port=$(_free_port)
  # The whole test run's three passes share this server, each starting services (some of several worker
  # processes, each with its pools) at once: 200 connections ran out once.
  local options="-p $port -k $PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=600"
  [ "$durable" = durable ] || options="$options -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  "${run[@]}" "$bin/pg_ctl" -D "$PG_DIR/data" -o "$options" -l "$PG_DIR/server.log" -w start >/dev/null
  PG_STOP=("${run[@]}" "$bin/pg_ctl" -D "$PG_DIR/data" -m fast -w stop)
  "${run[@]}" "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres chainloom >/dev/null
  export CHAINLOOM_PG_URL="postgresql://postgres@127.0.0.1:$port/chainloom"
  echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($PG_DIR)" >&2
}

stop_postgres() {
  if [ -n "${PG_DIR:-}" ]; then
    "${PG_STOP[@]}" >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
    PG_DIR=
  fi
}
