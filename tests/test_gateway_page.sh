#!/usr/bin/env bash
# tests/test_gateway_page.sh - the status page in headless Chromium (Debian's chromium), as an
# operator opens it: it must show the cluster (the coordinator, the encoder and the shard
# group with their load) and the playground must stream an answer (the page's "#play" URL
# sends the prompt on load). The DOM after the page ran is checked, and a screenshot is
# kept in the test directory. Runs as root with --no-sandbox; skips (77) when Chromium is
# missing or cannot start.
set -u
cd "$(dirname "$0")/.."
dir=${AM_GW_TEST_DIR:-${AM_BIN_DIR:?}/../gateway-test}
mkdir -p "$dir"
CHROME=$(command -v chromium || command -v chromium-browser || true)
[ -n "$CHROME" ] || { echo "SKIP: chromium is not installed (deploy/install-deps.sh installs it)"; exit 77; }
ch() { timeout 60 "$CHROME" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
  --no-first-run --user-data-dir="$dir/chrome-profile" "$@" 2>>"$dir/chrome.log"; }
if ! ch --dump-dom "data:text/html,<p>ok</p>" | grep -q "<p>ok</p>"; then
  echo "SKIP: chromium cannot start headless here: $(tail -3 "$dir/chrome.log")"; exit 77
fi
source tests/gateway_cluster.sh
trap gw_cluster_down EXIT
gw_cluster_up "$dir" || exit 1
fails=0
dom=$(ch --virtual-time-budget=15000 --run-all-compositor-stages-before-draw --dump-dom "$GW/#play")
grep -q 'data-workers="2"' <<<"$dom" && grep -q '>group0<' <<<"$dom" && grep -q '>enc0<' <<<"$dom" &&
  grep -q 'class="ok">serving' <<<"$dom" && echo "ok   the page shows the cluster (coordinator serving, enc0, group0)" ||
  { echo "FAIL the cluster is not on the page"; fails=1; }
n=$(grep -o 'data-streamed="[0-9]*"' <<<"$dom" | grep -o '[0-9]*')
answer=$(grep -o '<div id="answer">[^<]*' <<<"$dom" | cut -c18-)
if [ "${n:-0}" -ge 2 ] && [ -n "$answer" ] && grep -q 'completion tokens' <<<"$dom"; then
  echo "ok   the playground streamed an answer in $n chunks: ${answer:0:40}"
else
  echo "FAIL the playground did not stream (chunks '${n:-}', answer '${answer:0:40}')"; fails=1
fi
rm -f "$dir/status-page.png"
ch --virtual-time-budget=15000 --window-size=1200,900 --screenshot="$dir/status-page.png" "$GW/#play" >/dev/null
size=$(stat -c %s "$dir/status-page.png" 2>/dev/null || echo 0)
[ "$size" -gt 20000 ] && echo "ok   screenshot $dir/status-page.png ($size bytes)" ||
  { echo "FAIL screenshot: $size bytes"; fails=1; }
exit $fails
