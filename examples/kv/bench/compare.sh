#!/usr/bin/env bash
# raft-kv against etcd 3.4 on this machine, with the same load generator and settings:
# 3 members on loopback, fsync on, 256-byte values. Prints one line per measurement.
#
#   bash examples/kv/bench/compare.sh              # both systems, 10 s per measurement
#   SECONDS_PER_RUN=30 SYSTEMS="raft-kv" CHECK_PERF="s m l xl" bash examples/kv/bench/compare.sh
#
# Needs `etcd` and `etcdctl` (Debian: etcd-server, etcd-client) and python3 (to read the JSON).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../../.."

SECONDS_PER_RUN="${SECONDS_PER_RUN:-10}"
SYSTEMS="${SYSTEMS:-raft-kv etcd}"
CHECK_PERF="${CHECK_PERF:-s m l xl}"
cargo build --release -q -p raft-kv
BIN="$PWD/target/release/raft-kv"
WORK="$(mktemp -d /tmp/raft-kv-compare-XXXXXX)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 2
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# Below the kernel's ephemeral range (32768-60999 by default): a port in that range can be
# taken as the local port of a member's outgoing connection before the member meant to listen
# on it has started (seen here: "Address already in use").
CLIENT_PORTS=(22379 22389 22399)
PEER_PORTS=(22380 22390 22400)
ENDPOINTS="127.0.0.1:22379,127.0.0.1:22389,127.0.0.1:22399"

start() { # system
    local system=$1 cluster="" i
    for i in 0 1 2; do cluster+="m$i=http://127.0.0.1:${PEER_PORTS[$i]},"; done
    cluster="${cluster%,}"
    for i in 0 1 2; do
        local args=(--name "m$i" --data-dir "$WORK/$system-m$i"
            --listen-client-urls "http://127.0.0.1:${CLIENT_PORTS[$i]}"
            --advertise-client-urls "http://127.0.0.1:${CLIENT_PORTS[$i]}"
            --listen-peer-urls "http://127.0.0.1:${PEER_PORTS[$i]}"
            --initial-advertise-peer-urls "http://127.0.0.1:${PEER_PORTS[$i]}"
            --initial-cluster "$cluster" --initial-cluster-state new
            --initial-cluster-token "compare-$system")
        if [[ $system == etcd ]]; then
            etcd "${args[@]}" >"$WORK/$system-m$i.log" 2>&1 &
        else
            RUST_LOG=warn NO_COLOR=1 "$BIN" serve "${args[@]}" >"$WORK/$system-m$i.log" 2>&1 &
        fi
        PIDS+=($!)
    done
    for _ in $(seq 100); do
        if ETCDCTL_API=3 etcdctl --endpoints="$ENDPOINTS" --command-timeout=1s put warmup x >/dev/null 2>&1; then
            return
        fi
        sleep 0.2
    done
    echo "error: $system did not start; logs in $WORK" >&2
    exit 1
}

stop() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}

bench() { # system label bench-args...
    local system=$1 label=$2
    shift 2
    "$BIN" bench --endpoints="$ENDPOINTS" --duration="${SECONDS_PER_RUN}s" --value-size=256 --json "$@" 2>/dev/null |
        python3 -c '
import json, sys
r = json.load(sys.stdin)
l = r["latency_us"]
row = (sys.argv[1], sys.argv[2], r["throughput_ops_per_sec"], l["p50"], l["p90"], l["p99"], l["max"], r["errors"])
print("%-8s %-32s %9.0f ops/s  p50 %6d us  p90 %6d us  p99 %6d us  max %6d us  errors %d" % row)
' "$system" "$label"
}

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
echo "etcd: $(etcd --version 2>/dev/null | head -1); runs of ${SECONDS_PER_RUN}s; 256-byte values; 3 members on loopback"
for system in $SYSTEMS; do
    start "$system"
    bench "$system" "writes, 1 client" --clients=1 --conns=1
    bench "$system" "writes, 64 clients, 8 conns" --clients=64 --conns=8
    bench "$system" "linearizable reads, 64 clients" --clients=64 --conns=8 --read-ratio=1 --key-space=1000
    for load in $CHECK_PERF; do
        if out="$(ETCDCTL_API=3 etcdctl --endpoints="$ENDPOINTS" check perf --load="$load" 2>&1)"; then
            verdict=PASS
        else
            verdict=FAIL
        fi
        summary="$(printf '%s\n' "$out" | tr '\r' '\n' | grep -E '^(PASS|FAIL)' | tr '\n' ' ' || true)"
        if [[ -z $summary ]]; then summary="$(printf '%s' "$out" | tr '\r' '\n' | tail -n 3 | tr '\n' ' ')"; fi
        echo "$system check perf --load=$load: $verdict ($summary)"
    done
    stop
done
