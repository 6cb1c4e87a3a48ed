# tests/gateway_cluster.sh - sourced by the gateway tests: a real cluster on loopback.
#
# gw_cluster_up DIR [gateway options...] makes the tiny AnyMAL model (once, under DIR),
# starts anymal-coordinator, one anymal-encoder (all modalities), a shard group
# (mpirun -np ${GW_TP:-1} anymal-shard-worker) and anymal-gateway on free ports, and waits
# until /health says 200. It sets COORD (endpoint), GW (http://127.0.0.1:PORT), MODEL (the
# served model's name) and LOGS. gw_start_gateway NAME [options...] starts another gateway
# (sets GW2). Every process runs in its own process group (setsid) and gw_cluster_down,
# run by the EXIT trap the caller installs, kills them all (TERM, then KILL), mpirun's
# ranks included, so nothing is left behind even when a test fails half-way.
GW_PIDS=()
B=${AM_BIN_DIR:?}

gw_start() { # name, command...
  local name=$1; shift
  setsid "$@" >"$LOGS/$name.log" 2>&1 &
  GW_PIDS+=($!)
}

gw_cluster_down() {
  local p
  for p in "${GW_PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
  for _ in $(seq 50); do
    local alive=0
    for p in "${GW_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in "${GW_PIDS[@]}"; do kill -KILL -- "-$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  GW_PIDS=()
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# gw_wait_port FILE: the port a gateway wrote with --port-file.
gw_wait_port() {
  for _ in $(seq 200); do
    [ -s "$1" ] && { cat "$1"; return 0; }
    sleep 0.05
  done
  echo "gateway did not start: $(tail -3 "${1%.port}.log" 2>/dev/null)" >&2
  return 1
}

gw_start_gateway() { # name, options...
  local name=$1; shift
  rm -f "$LOGS/$name.port"
  gw_start "$name" "$B/anymal-gateway" --coordinator "$COORD" --port 0 --port-file "$LOGS/$name.port" "$@"
  GW2="http://127.0.0.1:$(gw_wait_port "$LOGS/$name.port")" || return 1
}

gw_cluster_up() { # dir, gateway options...
  local dir=$1; shift
  LOGS=$dir/logs
  mkdir -p "$LOGS"
  if [ ! -f "$dir/tiny/anymal.json" ]; then
    "$B/anymal" mkmodel --shape tiny --with-encoders --seed 0 --out "$dir/tiny" >/dev/null || return 1
  fi
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1
  local cport; cport=$(free_port)
  COORD="tcp://127.0.0.1:$cport"
  gw_start coordinator "$B/anymal-coordinator" --bind "$COORD" ${GW_COORD_OPTS:-}
  gw_start encoder "$B/anymal-encoder" --coordinator "$COORD" --model "$dir/tiny" --modality all --threads 1 --name enc0
  gw_start shard mpirun -np "${GW_TP:-1}" --oversubscribe --bind-to none "$B/anymal-shard-worker" \
    --coordinator "$COORD" --model "$dir/tiny" --threads 1 --name group0 ${GW_SHARD_OPTS:-}
  if [ -n "${GW_SLOW:-}" ]; then
    # A second shard group serving "slow": the 110m shape (bf16, no encoders) decodes ~30
    # tokens/s on one thread, so a generation lasts long enough to be cancelled mid-way.
    [ -f "$dir/slow/model.safetensors" ] ||
      "$B/anymal" mkmodel --shape 110m --format safetensors --dtype bf16 --seed 0 --out "$dir/slow" >/dev/null ||
      return 1
    gw_start slow mpirun -np 1 --oversubscribe --bind-to none "$B/anymal-shard-worker" \
      --coordinator "$COORD" --model "$dir/slow" --model-name slow --threads 1 --name slow0
  fi
  gw_start_gateway gateway "$@" || return 1
  GW=$GW2
  for _ in $(seq 300); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "$GW/health")" = 200 ]; then
      MODEL=tiny
      # every worker registered: the encoder, and the slow group when asked for
      local want=2
      [ -n "${GW_SLOW:-}" ] && want=3
      for _ in $(seq 300); do
        [ "$(curl -s "$GW/status.json" | grep -o '"role"' | wc -l)" -ge $want ] && return 0
        sleep 0.1
      done
      echo "not every worker registered; logs in $LOGS" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "the cluster did not come up; logs in $LOGS:" >&2
  tail -5 "$LOGS"/*.log >&2
  return 1
}
