#!/usr/bin/env bash
# Starts a receiver that prints every event it gets (127.0.0.1:9090) and the
# gateway with the demo config (:8080) on the embedded bus, whose data lives
# in ./data. SIGNALBOX_BUS=redis://host:port/0 uses Redis instead.
# Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

bus="${SIGNALBOX_BUS:-embedded}"
case "$bus" in
redis://* | rediss://*)
  hostport="${bus#*://}"; hostport="${hostport#*@}"; hostport="${hostport%%/*}"
  host="${hostport%%:*}"; port="${hostport##*:}"
  if ! (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
    cat >&2 <<MSG
signalbox: no Redis answers at $host:$port.
  Start one:        sudo apt-get install -y redis-server && redis-server --daemonize yes
  or use the embedded bus, which needs nothing installed: unset SIGNALBOX_BUS
MSG
    exit 1
  fi
  ;;
esac

bin/signalbox receive --addr 127.0.0.1:9090 &
receiver=$!
trap 'kill $receiver 2>/dev/null; wait $receiver 2>/dev/null' EXIT

bin/signalbox serve --addr "${SIGNALBOX_ADDR:-:8080}" --config examples/demo --bus "$bus" \
  --data-dir "${SIGNALBOX_DATA_DIR:-./data}" --replica-id demo
