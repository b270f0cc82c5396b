# Local dependencies of Crewmesh, checked and (when absent or down) installed
# and started. Sourced by scripts/up, scripts/test and .ci/run. Idempotent.

say() { printf '==> %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

apt_updated=""
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    say "cannot install $* here (no apt-get): install it yourself and re-run"
    return 1
  fi
  if [ -z "$apt_updated" ]; then
    $SUDO apt-get update -qq >/dev/null
    apt_updated=1
  fi
  say "installing $*"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

# Waits up to $2 seconds for command $1 to succeed.
wait_for() {
  local check=$1 seconds=$2
  for _ in $(seq "$((seconds * 5))"); do
    if eval "$check" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  return 1
}

ensure_protoc() {
  command -v protoc >/dev/null 2>&1 || apt_install protobuf-compiler
}

pg_ready() { pg_isready -h 127.0.0.1 -p 5432 -q; }

ensure_postgres() {
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    apt_install postgresql
    # A fresh install asks for passwords on loopback; local development trusts it,
    # matching the default DATABASE_URL (postgres@127.0.0.1, no password).
    local hba
    for hba in /etc/postgresql/*/main/pg_hba.conf; do
      $SUDO sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
    done
  fi
  if ! pg_ready; then
    say "starting PostgreSQL"
    local version
    version=$(ls /etc/postgresql | sort -n | tail -n 1)
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    wait_for pg_ready 30 || { say "PostgreSQL did not start; see /var/log/postgresql/"; return 1; }
  fi
}

redis_ready() { redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG; }

ensure_redis() {
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  if ! redis_ready; then
    say "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    $SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
      --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_for redis_ready 15 || { say "Redis did not start; see /var/log/redis/ci.log"; return 1; }
  fi
}

# Creates database $1 on the local server when it does not exist.
ensure_database() {
  local name=$1
  if ! psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$name'" | grep -q 1; then
    say "creating database $name"
    psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $name"
  fi
}

# The S3-compatible server media-svc stores objects in during development and
# tests: s3s-fs, with the same defaults as media-svc's config. A user-set
# S3_ENDPOINT names their own storage, and nothing is started.
S3S_FS_VERSION=0.14.1
s3_ready() { (exec 3<>/dev/tcp/127.0.0.1/8014) 2>/dev/null; }

ensure_s3() {
  if [ -n "${S3_ENDPOINT:-}" ] && [ "${S3_ENDPOINT%/}" != "http://127.0.0.1:8014" ]; then
    say "S3_ENDPOINT=$S3_ENDPOINT is set: using that storage, not starting a local one"
    return 0
  fi
  if s3_ready; then return 0; fi
  local bin
  bin=$(command -v s3s-fs 2>/dev/null || true)
  if [ -z "$bin" ] && [ -x "$HOME/.cargo/bin/s3s-fs" ]; then bin="$HOME/.cargo/bin/s3s-fs"; fi
  if [ -z "$bin" ]; then
    say "installing s3s-fs $S3S_FS_VERSION, the local S3-compatible server (cargo install, about 2 minutes, once)"
    cargo install "s3s-fs@$S3S_FS_VERSION" --features binary --locked --quiet
    bin="${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs"
  fi
  local data=${CREWMESH_S3_DATA:-/tmp/crewmesh-s3}
  local log=${CREWMESH_S3_LOG:-/tmp/crewmesh-s3.log}
  mkdir -p "$data"
  say "starting s3s-fs on 127.0.0.1:8014 (data in $data, log in $log)"
  # setsid: the server outlives the script that started it, like the system services.
  setsid nohup "$bin" --host 127.0.0.1 --port 8014 \
    --access-key "${AWS_ACCESS_KEY_ID:-crewmesh-dev}" \
    --secret-key "${AWS_SECRET_ACCESS_KEY:-crewmesh-dev-secret}" \
    "$data" >"$log" 2>&1 </dev/null &
  wait_for s3_ready 30 || { say "s3s-fs did not start; see $log"; return 1; }
}

ensure_all() {
  ensure_protoc
  ensure_postgres
  ensure_redis
  ensure_s3
}
