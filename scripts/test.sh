#!/usr/bin/env bash
# Runs the whole test suite. Installs what the fixtures need (etcd, ZooKeeper, protoc, libfaketime) with apt
# and the Nacos server (rnacos, with cargo) when missing; the fixtures start and stop the servers
# themselves on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
# etcd-client's build imports google/protobuf/*.proto, which protoc alone does not ship.
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
[ -x /usr/share/zookeeper/bin/zkServer.sh ] || need+=(zookeeper)
# tests/tests/nacos_clock.rs runs rnacos under libfaketime to step its wall clock back.
compgen -G '/usr/lib/*/faketime/libfaketime.so.1' >/dev/null \
  || [ -f /usr/lib/faketime/libfaketime.so.1 ] || need+=(libfaketime)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# Nacos: rnacos (a Rust server speaking Nacos' HTTP and gRPC APIs), once per machine (~16 min
# to build on 2 cores); it lands in cargo's bin directory, where the fixture looks for it.
if ! command -v rnacos >/dev/null 2>&1 \
  && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/rnacos" ] \
  && [ ! -x "$HOME/.cargo/bin/rnacos" ]; then
  echo "installing: rnacos 0.8.8 (cargo install)"
  cargo install rnacos --locked --version 0.8.8
fi

# No incremental build caches: they are of no use on a fresh checkout and took 3.4 GB here.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo test --workspace --all-features --no-run "$@"
# The quick reliability campaign is one test of about 2.5 min that mostly waits on the servers it
# restarts (the CPU was 50-99 % idle during it): it runs beside the rest of the suite, its output
# kept apart and printed when it ends; either failing fails the script.
campaign_log="$(mktemp)"
cargo test --workspace --all-features --test campaign_quick "$@" >"$campaign_log" 2>&1 &
campaign=$!
status=0
cargo test --workspace --all-features "$@" -- --skip quick_campaign_keeps_every_must_be_zero_counter_at_zero \
  || status=$?
campaign_status=0
wait "$campaign" || campaign_status=$?
echo "--- campaign_quick (ran beside the suite):"
cat "$campaign_log"
rm -f "$campaign_log"
[ "$status" -eq 0 ] || exit "$status"
[ "$campaign_status" -eq 0 ] || exit "$campaign_status"
# The trybuild snapshots, without the backends' features (see tests/tests/ui.rs).
cargo test -p tests --test ui "$@"
