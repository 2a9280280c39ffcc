#!/usr/bin/env bash
# Starts a receiver that prints every event it gets (127.0.0.1:9090) and the
# gateway with the demo config (:8080). Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

bus="${SIGNALBOX_BUS:-redis://127.0.0.1:6379/0}"
hostport="${bus#*://}"; hostport="${hostport#*@}"; hostport="${hostport%%/*}"
host="${hostport%%:*}"; port="${hostport##*:}"
if ! (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
  cat >&2 <<MSG
signalbox: no Redis answers at $host:$port, and this build stores events in Redis.
  Start one:          sudo apt-get install -y redis-server && redis-server --daemonize yes
  or point elsewhere: SIGNALBOX_BUS=redis://host:port/0 make run
MSG
  exit 1
fi

bin/signalbox receive --addr 127.0.0.1:9090 &
receiver=$!
trap 'kill $receiver 2>/dev/null; wait $receiver 2>/dev/null' EXIT

bin/signalbox serve --addr "${SIGNALBOX_ADDR:-:8080}" --config examples/demo --bus "$bus" --replica-id demo
