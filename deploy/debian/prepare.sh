#!/usr/bin/env bash
# Makes what the Debian package carries beside the source files, from the release binary:
# the unit with the packaged binary's path, the manual page and the shell completions. Run
# after `cargo build --release` and before `cargo deb --no-build`.
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-target}"
bin="$target/release/switchhook"
out="$target/release/debian-assets"
mkdir -p "$out"
sed 's|/usr/local/bin/switchhook|/usr/bin/switchhook|g' deploy/switchhook.service > "$out/switchhook.service"
"$bin" man | gzip -9n > "$out/switchhook.1.gz"
"$bin" completions bash > "$out/switchhook.bash"
"$bin" completions zsh > "$out/_switchhook"
"$bin" completions fish > "$out/switchhook.fish"
