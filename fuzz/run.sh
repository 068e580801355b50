#!/usr/bin/env bash
# Coverage-guided fuzzing with cargo-fuzz (libFuzzer), on the stable toolchain.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Runs each target (default: all four) for SECONDS (default 60), seeded with cuts of the
# bundled real captures and the shipped configuration. Crashes land in
# fuzz/artifacts/TARGET/; each one becomes an ordinary regression test. The corpus grows in
# fuzz/corpus/TARGET/ (not committed) and is reused by the next run.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(codec_sessions routing_reply config template)
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# `-s none`: no sanitizer, so stable rustc does (RUSTC_BOOTSTRAP lets cargo-fuzz pass its
# coverage flags); Rust's own checks (bounds, overflow in debug assertions) still trap.
export RUSTC_BOOTSTRAP=1
fixtures=../fixtures/freeswitch-1.10

seed() {
  local target=$1 dir=corpus/$1
  mkdir -p "$dir"
  case $target in
    codec_sessions)
      # The first byte picks the read size; then a cut of a capture (plain and json).
      local n=0
      for f in "$fixtures"/*.esl; do
        n=$((n + 1))
        { printf "\\x$(printf %02x $((n % 64)))"; head -c 60000 "$f"; } >"$dir/cut-$(basename "$f")"
      done
      ;;
    routing_reply)
      printf 'status=ACK&destination=1003&callername=CRM%%20Jo%%20Bloggs' >"$dir/ack"
      printf 'status=ACK&destination=%%2B31502102544' >"$dir/ack-e164"
      printf 'status=NAK&reason=unknown' >"$dir/nak"
      printf 'status=ERR' >"$dir/err"
      printf 'status=ACK&destination=1%%24%%7Bsystem(touch%%20/tmp/x)%%7D' >"$dir/hostile"
      printf '{"status":"ACK","destination":"1003"}' >"$dir/json"
      ;;
    config)
      cp ../switchhook.example.toml "$dir/example.toml"
      ;;
    template)
      printf 'https://crm.example/hook/{ddiNum}?cli={cli}' >"$dir/url"
      printf '{"caller": "{cli}", "talk": {talk}, "who": "{ansUsrName}"}' >"$dir/body"
      printf 'Bearer {customData}' >"$dir/header"
      ;;
  esac
}

for t in "${targets[@]}"; do
  seed "$t"
  echo "== fuzzing $t for ${secs}s"
  cargo fuzz run -s none -O "$t" "corpus/$t" -- \
    -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=4096 -print_final_stats=1
done
