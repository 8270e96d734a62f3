#!/usr/bin/env bash
# Runs every test of the workspace, as CI does: on a fresh Debian 12 with only Rust installed it
# installs what the tests need, starts the real servers they use on loopback, and stops them.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -x scripts/servers.sh ]; then
  scripts/servers.sh up
  trap 'scripts/servers.sh down' EXIT
fi

# Every backend (the registry tests need etcd and ZooKeeper), not the criterion benches.
cargo test --workspace --features getty/etcd,getty/zookeeper,getty-cli/etcd,getty-cli/zookeeper
# getty-rpc's OpenTelemetry trace context (the default build propagates its own context).
cargo test -p getty --features tracing-opentelemetry --test trace_otel
# getty-rpc's zstd bodies (an optional feature).
cargo test -p getty --features zstd --test compression --test compression_bomb
# The compressed golden frames of PROTOCOL.md, inflated (the codec checks run in the default build).
cargo test -p getty-rpc --features zstd --test golden
# The registry's counters (feature metrics) against the memory registry, etcd and ZooKeeper.
cargo test -p getty --features metrics,etcd,zookeeper --test registry_metrics
