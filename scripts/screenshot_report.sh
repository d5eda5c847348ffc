#!/usr/bin/env bash
# Render a run's report.html in headless Chromium and save a PNG screenshot next to it, to see that it renders.
#   scripts/screenshot_report.sh runs/demo            -> runs/demo/report.png
# Installs Debian's chromium when it is missing (root, apt). No network is used by the page: it is self-contained.
set -euo pipefail
run_dir="${1:-runs/demo}"
report="$(cd "$run_dir" && pwd)/report.html"
[ -f "$report" ] || { echo "no $report; run thinkrl demo (or thinkrl report $run_dir) first" >&2; exit 1; }
if ! command -v chromium >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
profile="$(mktemp -d)"
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars \
  --window-size=1200,2400 --screenshot="$run_dir/report.png" "file://$report" 2>/dev/null
rm -rf "$profile"
echo "screenshot: $run_dir/report.png"
