#!/usr/bin/env bash
# Runs the speed-camera pipeline on this machine: the three stage programs
# (127.0.0.1:9101-9103), the gateway on 127.0.0.1:8080 with the embedded bus
# in a temporary directory, then posts three flashes whose events overlap.
# Flashes 1 and 2 are speeding and get one fine each, joined from their own
# plate and speed; flash 3 is not. Stops everything at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."

go build -o bin/signalbox ./cmd/signalbox
go build -o bin/ ./examples/speed-camera/cmd/...

data=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT

bin/platereader --addr 127.0.0.1:9101 & pids+=($!)
bin/speedcorrection --addr 127.0.0.1:9102 & pids+=($!)
bin/fineissuer --addr 127.0.0.1:9103 & pids+=($!)
bin/signalbox serve --addr 127.0.0.1:8080 --config examples/speed-camera --data-dir "$data" \
  --replica-id speed-camera --log-level warn & pids+=($!)

for _ in $(seq 100); do
  curl -sf http://127.0.0.1:8080/readyz >/dev/null && break
  sleep 0.1
done

url=http://127.0.0.1:8080/default/default
flash() { # flash ID KIND DATA
  bin/signalbox send "$url" --source /speed-camera/cam-7 --id "$1-$2" --subject "$1" \
    --type "radar.$2" --data "$3" >/dev/null
}
# The image of each flash is its plate text in base64 (this example's stand-in
# for a photo). The halves arrive interleaved: 1, 2, 2, 3, 1, 3.
flash 1 flash.image "{\"image\":\"$(printf 'KA-SB 101' | base64)\"}"
flash 2 speed.raw '{"kmh":96,"limit":50}'
flash 2 flash.image "{\"image\":\"$(printf 'HD-XY 202' | base64)\"}"
flash 3 speed.raw '{"kmh":52,"limit":50}'
flash 1 speed.raw '{"kmh":131,"limit":100}'
flash 3 flash.image "{\"image\":\"$(printf 'MA-ZZ 303' | base64)\"}"

sleep 2
