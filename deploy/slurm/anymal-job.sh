#!/usr/bin/env bash
# deploy/slurm/anymal-job.sh - the job script that deploy/slurm/anymal-slurm submits.
#
# Runs as the batch step, on the first node of component 0 (heterogeneous job) or of the
# allocation (plain job). Everything comes from ANYMAL_* variables set by anymal-slurm (see its
# --help; `anymal-slurm ... --dry-run` prints them) and from Slurm's own variables:
#   serve  coordinator (component 0), encoder workers (component 1), shard groups (one
#          component each, `srun --mpi=pmix`); waits until health answers with every worker
#          registered, prints the endpoint (job output, $logs/endpoint, the job's Comment) and
#          serves until the job is cancelled or its time ends.
#   batch  the same cluster, then `anymal batch` over the input; the job ends with its status.
#   scale  shard groups only, joining the running coordinator ANYMAL_COORDINATOR.
# Stopping: SIGTERM to this script (`anymal-slurm stop`, i.e. `scancel --batch --signal=TERM`,
# or Slurm's --signal=B:TERM@120 before the time limit) stops in order: the batch runner, then
# it waits (ANYMAL_DRAIN_S) for active requests to end, then shard groups and encoders, then
# the coordinator. A plain `scancel` signals every process at once; each stops on SIGTERM
# (docs/reliability.md, "SIGTERM drain") and Slurm kills what is left after KillWait.
set -uo pipefail

kind=${ANYMAL_KIND:?set by anymal-slurm}
bin=${ANYMAL_BIN:?}
model=${ANYMAL_MODEL:?}
n_enc=${ANYMAL_ENCODERS:-0}
n_groups=${ANYMAL_GROUPS:-1}
threads=${ANYMAL_THREADS:-1}
device=${ANYMAL_DEVICE:-cpu}
cpu_bind=${ANYMAL_CPU_BIND:-cores}
start_timeout=${ANYMAL_START_TIMEOUT:-600}
drain_s=${ANYMAL_DRAIN_S:-30}
logs=${ANYMAL_LOGS:?}/job-$SLURM_JOB_ID.run${SLURM_RESTART_COUNT:-0}
mkdir -p "$logs"
[ -n "${ANYMAL_PRECISION:-}" ] && export AM_CPU_PRECISION=$ANYMAL_PRECISION
# Shard ranks talk over this interface (Open MPI's TCP transport), and so does ZeroMQ: the
# coordinator binds its address there and every worker connects to that address.
if [ -n "${ANYMAL_IFACE:-}" ]; then
  export OMPI_MCA_btl_tcp_if_include=$ANYMAL_IFACE OMPI_MCA_oob_tcp_if_include=$ANYMAL_IFACE
fi

say() { echo "anymal-job[$SLURM_JOB_ID]: $*"; }
het=0
[ -n "${SLURM_HET_SIZE:-}" ] && het=1

# srun options that place a step: its component (heterogeneous) or a share of the allocation
# (plain job: --exact takes only what the step asks for, so steps run side by side).
place() { # component, tasks: sets the array at
  if [ $het = 1 ]; then
    at=(--het-group="$1")
  else
    at=(--exact --ntasks="$2" --cpus-per-task="$threads")
  fi
}
gpu_opts=()
[ "$device" != cpu ] && gpu_opts=(--gpus-per-task=1)

# Every task's first log line says where it runs: its node, the GPU gres gave it and the
# CPUs --cpu-bind left it (task_sh CMD ARGS... runs CMD ARGS after it; CMD may be sh code).
# shellcheck disable=SC2016
task_line='echo "anymal-job: task $SLURM_PROCID of step $SLURM_STEP_ID on $(hostname):" \
  "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset}" \
  "cpus=$(sed -n "s/^Cpus_allowed_list:[[:space:]]*//p" /proc/self/status)" >&2'

steps=() # PIDs of the srun of each step, in start order
names=()
start_step() { # name, srun options and command...
  local name=$1
  shift
  srun --job-name="anymal-$name" --kill-on-bad-exit=1 --cpu-bind="$cpu_bind" "$@" &
  steps+=($!)
  names+=("$name")
}

# --- the coordinator: the first host of component 0, at its address on ANYMAL_IFACE (else its
# Slurm NodeAddr), on ANYMAL_PORT, else a port Slurm reserved for the step (MpiParams=ports),
# else one the kernel picks (written to endpoint-file) - never a fixed guess.
ep=${ANYMAL_COORDINATOR:-}
if [ "$kind" != scale ]; then
  nodelist=${SLURM_JOB_NODELIST_HET_GROUP_0:-$SLURM_JOB_NODELIST}
  host=$(scontrol show hostnames "$nodelist" | head -n 1)
  if [ -n "${ANYMAL_IFACE:-}" ]; then
    addr=$(ip -4 -o addr show dev "$ANYMAL_IFACE" | awk '{ split($4, a, "/"); print a[1]; exit }')
    [ -n "$addr" ] || { say "no IPv4 address on interface $ANYMAL_IFACE on $(hostname)"; exit 1; }
  else
    addr=$(scontrol show node "$host" | sed -n 's/.*NodeAddr=\([^ ]*\).*/\1/p')
    # NodeAddr may be a name (it defaults to the NodeName): ZeroMQ binds an address.
    [[ $addr =~ ^[0-9.]+$ ]] || addr=$(getent ahostsv4 "${addr:-$host}" | awk '{ print $1; exit }')
    [ -n "$addr" ] || { say "no IPv4 address for node $host (NodeAddr, DNS); give --iface"; exit 1; }
  fi
  port=${ANYMAL_PORT:-}
  resv=()
  if [ -z "$port" ] && scontrol show config | grep -q '^MpiParams.*ports='; then
    resv=(--resv-ports=1)
  fi
  rm -f "$logs/endpoint" "$logs/coordinator.ep"
  # The step's own SLURM_STEP_RESV_PORTS is known only inside it, hence sh -c.
  # The links are not CURVE yet (keys for a job's components: not built), and the
  # coordinator refuses a non-loopback bind without keys unless --insecure: the job's
  # nodes must be on a private network (docs/security.md).
  say "coordinator links are not authenticated (no CURVE keys): keep the nodes on a private network"
  # shellcheck disable=SC2016
  place 0 1
  start_step coordinator "${at[@]}" --nodes=1 --ntasks=1 --nodelist="$host" "${resv[@]}" \
    -o "$logs/coordinator.log" \
    sh -c "$task_line"'; p=${0:-${SLURM_STEP_RESV_PORTS%%[-,]*}}; b=$1; shift
           exec "$b" --bind "tcp://$1:${p:-*}" --insecure --endpoint-file "$2" $3' \
    "$port" "$bin/anymal-coordinator" "$addr" "$logs/coordinator.ep" "${ANYMAL_COORD_ARGS:-}"
  for _ in $(seq 300); do
    [ -s "$logs/coordinator.ep" ] && break
    kill -0 "${steps[0]}" 2>/dev/null || break
    sleep 0.1
  done
  [ -s "$logs/coordinator.ep" ] || { say "the coordinator did not start: $logs/coordinator.log"; exit 1; }
  ep=$(cat "$logs/coordinator.ep")
  say "coordinator $ep on $host"

  # The OpenAI-compatible HTTP API beside it (a second step on component 0's CPU: --overlap),
  # on the same address when clients must authenticate (ANYMAL_API_KEY_FILE) or when the
  # admin opened it (ANYMAL_HTTP_OPEN), else on the node's loopback; its port as the
  # coordinator's (ANYMAL_HTTP_PORT, a reserved port, or any free one, told by --port-file).
  http=
  if [ "${ANYMAL_HTTP:-1}" = 1 ]; then
    gw_host=127.0.0.1
    gw_args=()
    if [ -n "${ANYMAL_API_KEY_FILE:-}" ]; then
      gw_host=$addr gw_args=(--api-key-file "$ANYMAL_API_KEY_FILE")
    elif [ "${ANYMAL_HTTP_OPEN:-0}" = 1 ]; then
      gw_host=$addr gw_args=(--allow-unauthenticated)
    fi
    rm -f "$logs/gateway.port"
    # shellcheck disable=SC2016
    start_step gateway "${at[@]}" --overlap --nodes=1 --ntasks=1 --nodelist="$host" "${resv[@]}" \
      -o "$logs/gateway.log" \
      sh -c "$task_line"'; p=${0:-${SLURM_STEP_RESV_PORTS%%[-,]*}}; b=$1; shift
             exec "$b" --port "${p:-0}" --port-file "$@"' \
      "${ANYMAL_HTTP_PORT:-}" "$bin/anymal-gateway" "$logs/gateway.port" --coordinator "$ep" \
      --host "$gw_host" "${gw_args[@]}" ${ANYMAL_GATEWAY_ARGS:-}
    for _ in $(seq 300); do
      [ -s "$logs/gateway.port" ] && break
      kill -0 "${steps[-1]}" 2>/dev/null || break
      sleep 0.1
    done
    [ -s "$logs/gateway.port" ] || { say "the gateway did not start: $logs/gateway.log"; exit 1; }
    http=http://$gw_host:$(tr -d '[:space:]' <"$logs/gateway.port")
    say "gateway $http on $host"
  fi
fi

# --- encoder workers: component 1, one task each, named enc<task>.
comp=1
if [ "$kind" != scale ] && [ "$n_enc" -gt 0 ]; then
  # shellcheck disable=SC2016
  place 1 "$n_enc"
  start_step encoders "${at[@]}" "${gpu_opts[@]}" -o "$logs/encoder-%t.log" \
    sh -c "$task_line"'; exec "$0" --coordinator "$1" --model "$2" --modality "$3" --threads "$4" \
           --device "$5" --name "enc$SLURM_PROCID" ${6:+$6}' \
    "$bin/anymal-encoder" "$ep" "$model" "${ANYMAL_MODALITY:-all}" "$threads" "$device" \
    "${ANYMAL_ENCODER_ARGS:-}"
  comp=2
fi
[ "$kind" = scale ] && comp=0

# --- shard groups: one component each, P ranks under Slurm's PMIx (no mpirun).
mpi=${ANYMAL_MPI:-pmix}
tp=${ANYMAL_TP:-2}
read -ra shard_args <<<"${ANYMAL_SHARD_ARGS:-}" # options, split at spaces
for g in $(seq 0 $((n_groups - 1))); do
  name=group$g
  [ "$kind" = scale ] && name=group-$SLURM_JOB_ID-$g
  place $((comp + g)) "$tp"
  start_step "$name" "${at[@]}" --mpi="$mpi" "${gpu_opts[@]}" \
    -o "$logs/$name-rank%t.log" sh -c "$task_line"'; exec "$@"' "$name" \
    "$bin/anymal-shard-worker" --coordinator "$ep" --model "$model" --threads "$threads" \
    --device "$device" --name "$name" "${shard_args[@]}"
done

# --- stopping, in order; also what the job does when the coordinator step ends.
signal_steps() { # signal, front|workers|coordinator: scancel --signal to those steps of this job
  local id name comps
  # A heterogeneous job's components are jobs of their own (%A), each with its steps.
  comps=$(squeue -h -j "$SLURM_JOB_ID" -o %A 2>/dev/null | paste -sd,)
  squeue -h -s -j "${comps:-$SLURM_JOB_ID}" -o '%i %j' 2>/dev/null | while read -r id name; do
    case $2:$name in
      front:anymal-gateway | coordinator:anymal-coordinator | workers:anymal-encoders | workers:anymal-group*) ;;
      *) continue ;;
    esac
    scancel --signal="$1" "$id" 2>/dev/null
  done
}
stopping=0
runner=
stop() {
  [ $stopping = 1 ] && return
  stopping=1
  trap '' TERM INT
  say "stopping"
  if [ -n "$runner" ] && kill -0 "$runner" 2>/dev/null; then # its journal is on disk: resumable
    kill -TERM "$runner" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$runner" 2>/dev/null && sleep 0.2; done
    kill -KILL "$runner" 2>/dev/null
  fi
  if [ "$kind" != scale ]; then # drain: wait for active requests to end
    local t_end=$((SECONDS + drain_s)) active
    while [ $SECONDS -lt $t_end ] && kill -0 "${steps[0]}" 2>/dev/null; do
      active=$("$bin/anymal" client --coordinator "$ep" --health --timeout-ms 2000 2>/dev/null |
        sed -n 's/.*"active_requests": \([0-9]*\).*/\1/p')
      [ "${active:-0}" = 0 ] && break
      sleep 0.5
    done
  fi
  # SIGTERM reaches a step's tasks through Slurm (scancel --signal on the step): a SIGTERM to
  # srun itself would make it kill its tasks outright. Workers first: the coordinator would
  # only fail their requests.
  local i k t_end alive
  signal_steps TERM front # the gateway first: no new HTTP requests
  for i in workers coordinator; do
    signal_steps TERM "$i"
    t_end=$((SECONDS + 15))
    alive=1
    while [ $alive = 1 ] && [ $SECONDS -lt $t_end ]; do
      alive=0
      for k in "${!steps[@]}"; do
        [ $i = workers ] && [ "${names[$k]}" = coordinator ] && continue
        kill -0 "${steps[$k]}" 2>/dev/null && alive=1
      done
      [ $alive = 1 ] && sleep 0.2
    done
  done
  for k in "${!steps[@]}"; do kill -KILL "${steps[$k]}" 2>/dev/null; done # srun: KILL ends its step
  wait 2>/dev/null
  say "stopped"
}
trap 'stop; exit 0' TERM INT # a stop asked for is the job's normal end

# --- ready: health answers with every worker of this job registered.
ready=0
t_end=$((SECONDS + start_timeout))
want_groups=$n_groups
[ "$kind" = scale ] && want_groups=$((n_groups + ${ANYMAL_GROUPS_BEFORE:-0}))
while [ $SECONDS -lt $t_end ]; do
  h=$("$bin/anymal" client --coordinator "$ep" --health --timeout-ms 2000 2>/dev/null)
  groups=$(sed -n 's/.*"shard_groups": \([0-9]*\).*/\1/p' <<<"$h")
  encs=$(sed -n 's/.*"encoders": \([0-9]*\).*/\1/p' <<<"$h")
  if [ "${groups:-0}" -ge "$want_groups" ] && { [ "$kind" = scale ] || [ "${encs:-0}" -ge "$n_enc" ]; }; then
    ready=1
    break
  fi
  for i in "${!steps[@]}"; do
    kill -0 "${steps[$i]}" 2>/dev/null && continue
    say "${names[$i]} ended before the cluster was ready: see $logs"
    stop
    exit 1
  done
  sleep 0.5
done
if [ $ready = 0 ]; then
  say "not ready after ${start_timeout}s (health: ${h:-none}); logs: $logs"
  stop
  exit 1
fi
say "ready in ${SECONDS}s: $h"
say "endpoint $ep${http:+ http $http}"
[ -n "${http:-}" ] && echo "$http" >"${ANYMAL_LOGS}/http-$SLURM_JOB_ID"
echo "$ep" >"$logs/endpoint.tmp" && mv "$logs/endpoint.tmp" "$logs/endpoint"
echo "$ep" >"${ANYMAL_LOGS}/endpoint-$SLURM_JOB_ID"
scontrol update JobId="$SLURM_JOB_ID" Comment="$ep${http:+ $http}" 2>/dev/null || true

if [ "$kind" = batch ]; then
  args=(--coordinator "$ep" --input "$ANYMAL_INPUT" --output "$ANYMAL_OUTPUT")
  [ -n "${ANYMAL_ERRORS:-}" ] && args+=(--errors "$ANYMAL_ERRORS")
  [ -n "${ANYMAL_CONCURRENCY:-}" ] && args+=(--concurrency "$ANYMAL_CONCURRENCY")
  [ -n "${ANYMAL_MEDIA_ROOT:-}" ] && args+=(--media-root "$ANYMAL_MEDIA_ROOT")
  say "anymal batch ${args[*]} (restart ${SLURM_RESTART_COUNT:-0})"
  "$bin/anymal" batch "${args[@]}" &
  runner=$!
  wait "$runner"
  status=$?
  runner=
  say "anymal batch ended with status $status"
  stop
  exit $status
fi

# --- serve until stopped. A worker step that ends is reported and the rest keep serving (the
# coordinator routes around it); the coordinator's end ends the job.
while :; do
  wait -n "${steps[@]}" 2>/dev/null
  for i in "${!steps[@]}"; do
    [ -z "${steps[$i]}" ] && continue
    kill -0 "${steps[$i]}" 2>/dev/null && continue
    wait "${steps[$i]}" 2>/dev/null
    say "${names[$i]} ended (status $?): see $logs"
    if [ "${names[$i]}" = coordinator ]; then
      stop
      exit 1
    fi
    unset "steps[$i]"
  done
  [ ${#steps[@]} -eq 0 ] && exit 1
done
