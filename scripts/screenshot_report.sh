#!/usr/bin/env bash
# Render a run's report.html in headless Chromium and save a PNG of the WHOLE page next to it.
#   scripts/screenshot_report.sh runs/demo            -> runs/demo/report.png
#   WIDTH=1280 scripts/screenshot_report.sh runs/demo -> another window width
# Installs Debian's chromium when it is missing (root, apt). The page is self-contained: no network is used.
#
# Chromium's --screenshot captures the window only, so this takes two passes: the first dumps the DOM, where
# the report's own script has written the page's full height (data-page-height on <html>); the second opens a
# window that tall. MAX_HEIGHT bounds the window (Chromium refuses very large surfaces).
set -euo pipefail
run_dir="${1:-runs/demo}"
width="${WIDTH:-1200}"
max_height="${MAX_HEIGHT:-30000}"
report="$(cd "$run_dir" && pwd)/report.html"
[ -f "$report" ] || { echo "no $report; run thinkrl demo (or thinkrl report $run_dir) first" >&2; exit 1; }
if ! command -v chromium >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking
  --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars)
height="$(chromium "${flags[@]}" --window-size="$width,1000" --dump-dom "file://$report" 2>/dev/null \
  | grep -o 'data-page-height="[0-9]*"' | head -1 | grep -o '[0-9]\+' || true)"
if [ -z "$height" ]; then
  echo "could not read the page height (an old report without data-page-height?); using $max_height px" >&2
  height="$max_height"
fi
if [ "$height" -gt "$max_height" ]; then
  echo "page is $height px; capturing the first $max_height px (raise MAX_HEIGHT)" >&2
  height="$max_height"
fi
chromium "${flags[@]}" --window-size="$width,$height" --screenshot="$run_dir/report.png" "file://$report" 2>/dev/null
echo "screenshot: $run_dir/report.png (${width}x${height})"
