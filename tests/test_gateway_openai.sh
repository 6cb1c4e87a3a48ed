#!/usr/bin/env bash
# tests/test_gateway_openai.sh - the real `openai` Python SDK (from PyPI, installed into a venv
# under the build dir) against anymal-gateway and a real cluster: chat non-streamed and
# streamed, an image part and an audio part, completions, models.list, and error cases
# mapped to the SDK's exception types (tests/gateway_openai.py). Skips (77) when PyPI
# cannot be reached.
set -u
cd "$(dirname "$0")/.."
dir=${AM_GW_TEST_DIR:-${AM_BIN_DIR:?}/../gateway-test}
venv=${AM_BIN_DIR}/../gateway-venv
mkdir -p "$dir"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import openai" 2>/dev/null; then
  python3 -m venv "$venv" && "$venv/bin/pip" install -q openai >"$dir/pip.log" 2>&1 || {
    echo "SKIP: cannot install the openai SDK from PyPI: $(tail -2 "$dir/pip.log")"; exit 77; }
fi
source tests/gateway_cluster.sh
trap gw_cluster_down EXIT
GW_AUTH=test-key gw_cluster_up "$dir" --api-key test-key || exit 1
GW=$GW MODEL=tiny timeout 120 "$venv/bin/python" tests/gateway_openai.py
