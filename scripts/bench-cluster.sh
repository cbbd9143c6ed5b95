#!/usr/bin/env bash
# Several brokers: continue throughput of one broker on sled, on the cookie-store daemon and on
# PostgreSQL, and of three brokers on the daemon and on PostgreSQL (BENCHMARKS.md, "Several
# brokers"). Uses a private PostgreSQL cluster (scripts/postgres.sh) and temp dirs; loopback only.
# soapbench continue: Echo ~1 KiB, 32 connections in all, 10 s after 2 s of warm-up.
set -u
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/target/release}
[[ -n "${SKIP_BUILD:-}" ]] || cargo build --release -p broker -p cookie-store -p broker-tests --bins
W=$(mktemp -d /tmp/bench-cluster.XXXX)
export BROKER_CLUSTER_SECRET=0123456789abcdef0123

eval "$(bash scripts/postgres.sh start 2>/dev/null)"
PGBASE=${COOKIE_STORE_TEST_PG%/postgres}
cat > $W/b.toml <<TOML
[broker]
workers = 2
[log]
level = "warn"
[[endpoint]]
path = "/soap"
dialect = "nonstop"
[[server_class]]
name = "echo"
adapter = "process"
command = ["{broker_exe}", "sample-server", "echo"]
min_workers = 2
max_workers = 4
request_timeout = "30s"
[[service]]
name = "Echo"
endpoint = "/soap"
server_class = "echo"
TOML
bench() { # label urls...
  local label=$1; shift; local n=$#; local conns=$((32 / n)); local pids=() i=0
  for u in "$@"; do
    $BIN/soapbench --url $u/soap --scenario continue --connections $conns --duration 10s --warmup 2s > $W/out.$label.$i 2>&1 & pids+=($!); i=$((i+1))
  done
  wait "${pids[@]}"
  echo "== $label"; grep -h -E "req/s|p99" $W/out.$label.* | head -12
}
start_brokers() { # store n
  local store=$1 n=$2
  for i in $(seq $n); do
    $BIN/broker --config $W/b.toml --id b$i --listen 127.0.0.1:2808$i --data-dir $W/d$i --store "$store" > $W/b$i.log 2>&1 &
  done
  for i in $(seq $n); do for t in $(seq 100); do curl -sf 127.0.0.1:2808$i/healthz >/dev/null && break; sleep 0.1; done; done
}
stop_brokers() { pkill -f "broker --config $W/b.toml"; sleep 1; }

start_brokers "sled:$W/sled" 1; bench sled http://127.0.0.1:28081; stop_brokers
$BIN/cookie-store serve --data $W/cs --listen 127.0.0.1:27070 > $W/cs.log 2>&1 & sleep 1
start_brokers "cookie-store://127.0.0.1:27070" 1; bench daemon-1 http://127.0.0.1:28081; stop_brokers
start_brokers "cookie-store://127.0.0.1:27070" 3; bench daemon-3 http://127.0.0.1:28081 http://127.0.0.1:28082 http://127.0.0.1:28083; stop_brokers
pkill -f "cookie-store serve --data $W/cs"
psql "$COOKIE_STORE_TEST_PG" -qc "CREATE DATABASE bench1" -c "CREATE DATABASE bench3"
start_brokers "$PGBASE/bench1" 1; bench pg-1 http://127.0.0.1:28081; stop_brokers
start_brokers "$PGBASE/bench3" 3; bench pg-3 http://127.0.0.1:28081 http://127.0.0.1:28082 http://127.0.0.1:28083; stop_brokers
bash scripts/postgres.sh stop "$COOKIE_STORE_TEST_PG_DIR" >/dev/null 2>&1
echo "work dir $W"
