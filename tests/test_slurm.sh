#!/usr/bin/env bash
# tests/test_slurm.sh - deploy/slurm on a real Slurm (Debian's slurm-wlm) with several nodes.
#
# Starts munged, slurmctld and four slurmd nodes (tests/slurm_cluster.sh: each node a network
# namespace with its own address on a bridge, its own hostname, /tmp and /dev/shm, and two fake
# GPUs in gres.conf; falling back to several slurmd on loopback, then to one, and saying why),
# then, submitting from the controller's namespace as a login node would:
#   1. the serving job (heterogeneous, deploy/slurm/anymal-slurm serve): coordinator and HTTP
#      gateway on one node, an encoder worker on another, a shard group of P = 2 with one rank
#      on each of two more nodes (srun --mpi=pmix; its ranks talk TCP between the namespaces,
#      checked with ss); every task bound to one CPU;
#   2. requests from outside the job: anymal client with text, image, audio, IMU and video,
#      32 at once, and HTTP with and without the API key;
#   3. scale: a second shard group joins (health: 2 groups) and leaves (anymal-slurm stop);
#   4. scancel midway through a burst of requests: the client ends (no hang), the coordinator
#      stopped on SIGTERM, no process of the job is left on any node;
#   5. gres: with --device cuda two encoders and two ranks sharing a node get a GPU each (the
#      programs then stop for want of a real GPU, and the job ends cleanly);
#   6. the plain-job fallback (--single): one request, then the ordered stop;
#   7. the batch job with --requeue: requeued midway (scontrol requeue), it runs again, resumes,
#      and every custom_id is in the output exactly once (skipped, saying so, where `anymal
#      batch` is not built);
# and at the end, after scancel of everything, no anymal, srun or slurmstepd process of this
# cluster anywhere. With fewer than 4 nodes (fallback), 1-4 run on the plain job instead.
# Every daemon and namespace is removed on exit, also on failure (trap). Exit 77 (skipped)
# only when this machine cannot run Slurm at all, with the reason.
set -u
src=${AM_SOURCE_DIR:?}
B=${AM_BIN_DIR:?}
G=$src/tests/golden
W=$src/deploy/slurm/anymal-slurm
t_start=$(date +%s)
fails=0
note() { echo "test_slurm [$(($(date +%s) - t_start))s]: $*"; }
fail() {
  echo "FAIL: $*"
  fails=$((fails + 1))
}
skip() {
  echo "SKIPPED: $*"
  exit 77
}

[ "$(id -u)" = 0 ] || skip "needs root (slurmd runs jobs as their user; namespaces need CAP_SYS_ADMIN)"
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  note "slurmctld/slurmd/munged missing: running deploy/install-deps.sh"
  "$src/deploy/install-deps.sh" || skip "deploy/install-deps.sh could not install slurm-wlm and munge"
fi

# Not under /tmp: each node mounts a /tmp of its own.
SC_DIR=$(mktemp -d /var/tmp/anymal-slurm.XXXXXX)
# shellcheck source=tests/slurm_cluster.sh
. "$src/tests/slurm_cluster.sh"
client_pid=
finish() {
  local status=$?
  [ -n "$client_pid" ] && kill -KILL "$client_pid" 2>/dev/null
  sc_down
  if [ $status = 0 ] && [ $fails = 0 ] && [ "${AM_KEEP_SLURM_DIR:-0}" != 1 ]; then
    rm -rf "$SC_DIR"
  else
    echo "test_slurm: logs kept in $SC_DIR"
  fi
}
trap finish EXIT
trap 'echo "test_slurm: SIGINT"; exit 130' INT
trap 'echo "test_slurm: SIGTERM"; exit 143' TERM

if ! sc_up; then
  skip "no Slurm could be started here: $SC_WHY (logs: $SC_DIR)"
fi
[ -n "$SC_WHY" ] && note "FALLBACK to '$SC_MODE': $SC_WHY"
note "cluster up: mode $SC_MODE, $(sc_in ctl sinfo -h -N -o %N | sort -u | wc -l) slurmd node(s)"
iface=lo
[ "$SC_MODE" = netns ] && iface=eth0

"$B/anymal" mkmodel --shape tiny --with-encoders --seed 0 --out "$SC_DIR/tiny" >/dev/null ||
  { fail "mkmodel"; exit 1; }
logs=$SC_DIR/logs
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_mpi_yield_when_idle=1
# The 2 cores are shared by every "node": ranks waiting in an all-reduce must yield.
common=(--model "$SC_DIR/tiny" --threads 1 --iface "$iface" --logs "$logs" --start-timeout 90)
[ "$SC_MODE" = single ] && common+=(--cpu-bind none)
# Slurm commands that wait are bounded (a job that can never start would wait forever).
slurm_w() { sc_in ctl timeout 150 "$@"; }

# job_state ID: the state of a job (of its first component), "" once Slurm forgot it.
job_state() { sc_in ctl squeue -h -t all -j "$1" -o %T 2>/dev/null | head -n 1; }
# wait_end ID SECONDS: until the job is in a final state (COMPLETED, CANCELLED, FAILED, ...).
wait_end() {
  local s
  for _ in $(seq $(($2 * 4))); do
    s=$(job_state "$1")
    case $s in RUNNING | PENDING | COMPLETING | CONFIGURING | REQUEUED | RESIZING | SUSPENDED) ;; *) return 0 ;; esac
    sleep 0.25
  done
  return 1
}
# job_procs: what a job leaves behind if its teardown fails: anymal programs, srun and
# slurmstepd of this cluster (the test runs one job at a time, so these are that job's).
job_procs() {
  local p c
  for p in $(sc_ours); do
    c=$(cat "/proc/$p/comm" 2>/dev/null)
    case $c in anymal-* | srun | slurmstepd) echo "$p:$c" ;; esac
  done
}
# our_programs: anymal processes of this cluster, whatever job.
our_programs() {
  local p
  for p in $(sc_ours); do
    case $(cat "/proc/$p/comm" 2>/dev/null) in anymal*) echo "$p:$(cat "/proc/$p/comm")" ;; esac
  done
}
# scancel_and_check ID LABEL [stop]: cancel (scancel: every process gets SIGTERM at once; stop:
# `anymal-slurm stop`, the job script stops them in order), wait for the end, then no process
# of the job may remain.
scancel_and_check() {
  local t0=$SECONDS left
  if [ "${3:-}" = stop ]; then sc_in ctl "$W" stop "$1"; else sc_in ctl scancel "$1"; fi
  wait_end "$1" 60 || fail "$2: job $1 still $(job_state "$1") 60 s after scancel"
  if procs_gone "$2: job $1"; then
    local how="scancel"
    [ "${3:-}" = stop ] && how="anymal-slurm stop"
    note "$2: job $1 ended after $how and left no process, in $((SECONDS - t0)) s"
  fi
}
# procs_gone LABEL: once a job has ended, its processes must be gone within 10 s (slurmstepd
# takes a moment to finish).
procs_gone() {
  local left
  for _ in $(seq 40); do
    left=$(job_procs)
    [ -z "$left" ] && return 0
    sleep 0.25
  done
  fail "$1: processes left after the job ended: $left"
  return 1
}

# serve_job LABEL OPTIONS...: submit a serving job, wait for its endpoint; sets job_id, ep.
serve_job() {
  local label=$1 out t0=$SECONDS
  shift
  out=$(slurm_w "$W" serve "${common[@]}" --encoders 1 --groups 1 --tp 2 "$@" --wait 2>&1)
  echo "$out"
  job_id=$(sed -n 's/.*submitted serve job \([0-9]*\).*/\1/p' <<<"$out" | head -n 1)
  ep=$(sed -n 's/.*serving at \(tcp:[^ ]*\).*/\1/p' <<<"$out")
  if [ -z "$ep" ]; then
    fail "$label ${job_id:-?} did not serve: $(cat "$logs/job-${job_id:-x}.out" 2>/dev/null)"
    return 1
  fi
  note "$label $job_id up at $ep in $((SECONDS - t0)) s (submit to health)"
  sc_in ctl squeue -j "$job_id" -o '%.8i %.10j %.9T %.6D %N'
}
# req LABEL CLIENT-ARGS...: one request from outside the job (the login node) must be answered.
req() {
  local label=$1 o
  shift
  if o=$(sc_in ctl "$B/anymal" client --coordinator "$ep" --max-tokens 8 --timeout-ms 30000 "$@" 2>&1) &&
    grep -q 'finish=length' <<<"$o"; then
    return 0
  fi
  fail "request $label: $o"
  return 1
}
# exercise: every modality, then 32 requests at once.
exercise() {
  local ok=0 t0=$SECONDS burst
  req text --text "Once upon a time" && ok=$((ok + 1))
  req image --text "Look:" --image "$G/vision/images/land_q90.jpg" --text "What is it?" && ok=$((ok + 1))
  req audio --text "Listen:" --audio "$G/audio/speech48.wav" && ok=$((ok + 1))
  req imu --text "This motion:" --imu "$G/imu/imu333.npy" && ok=$((ok + 1))
  req video --text "Watch:" --video "$G/vision/video/clip.mp4" && ok=$((ok + 1))
  note "$ok of 5 multimodal requests (text, image, audio, IMU, video) answered from outside the job in $((SECONDS - t0)) s"
  burst=$(sc_in ctl "$B/anymal" client --coordinator "$ep" --text Describe --image "$G/vision/images/land_q90.jpg" \
    --max-tokens 16 --repeat 32 --concurrency 8 --timeout-ms 30000 2>&1)
  grep -q '"failed": 0' <<<"$burst" || fail "32 requests at once: $burst"
  note "32 image requests at concurrency 8: $burst"
}
# cancel_midway: scancel during a burst of requests; the client ends (answers or errors, no
# hang), the coordinator stopped on SIGTERM, nothing of the job is left on any node.
cancel_midway() {
  sc_in ctl "$B/anymal" client --coordinator "$ep" --text Describe --image "$G/vision/images/land_q90.jpg" \
    --max-tokens 64 --ignore-eos --repeat 1000000 --concurrency 8 --timeout-ms 5000 >"$SC_DIR/burst.out" 2>&1 &
  client_pid=$!
  local h
  for _ in $(seq 40); do # midway: once requests are in flight
    h=$(sc_in ctl "$B/anymal" client --coordinator "$ep" --health 2>/dev/null)
    grep -q '"active_requests": [1-9]' <<<"$h" && break
    sleep 0.25
  done
  note "scancel with requests in flight: $h"
  scancel_and_check "$job_id" "scancel midway"
  for _ in $(seq 120); do
    kill -0 "$client_pid" 2>/dev/null || break
    sleep 0.25
  done
  if kill -0 "$client_pid" 2>/dev/null; then fail "the client still waits 30 s after scancel"; else
    wait "$client_pid"
    local st=$?
    note "the client of the cancelled job ended (status $st): $(tail -n 1 "$SC_DIR/burst.out")"
    [ $st = 1 ] || fail "the client's burst was not cut by the scancel (status $st)"
  fi
  client_pid=
  grep -q '"coordinator"' "$logs/job-$job_id.run0/coordinator.log" ||
    fail "the coordinator did not stop on SIGTERM (no counters line in its log)"
}

nodes=$(sc_in ctl sinfo -h -N -o %N | sort -u | wc -l)
# ---- 1-3. the serving job, heterogeneous: 4 nodes (its components never share a node).
keys=$SC_DIR/api-keys
echo "sk-slurm-test-$$" >"$keys" && chmod 600 "$keys"
if [ "$nodes" -ge 4 ] && serve_job "serving job" --component 2:--ntasks-per-node=1 --api-key-file "$keys"; then
  # Layout: the group's two ranks on two nodes, the encoder on a node that is none of theirs.
  layout=$(sc_in ctl squeue -h -j "$job_id" -o '%i %N')
  grp_nodes=$(awk -v c="${job_id}+2" '$1 == c { print $2 }' <<<"$layout")
  enc_nodes=$(awk -v c="${job_id}+1" '$1 == c { print $2 }' <<<"$layout")
  grp_list=$(sc_in ctl scontrol show hostnames "$grp_nodes")
  [ "$(wc -l <<<"$grp_list")" = 2 ] || fail "the shard group runs on '$grp_nodes', not on two nodes"
  grep -qx "$enc_nodes" <<<"$grp_list" && fail "the encoder shares node $enc_nodes with the group"
  comment=$(sc_in ctl squeue -h -j "$job_id" -o %k | head -n 1)
  [ "${comment%% *}" = "$ep" ] || fail "the job's Comment '$comment' does not start with the endpoint"
  if [ "$SC_MODE" = netns ]; then # rank 0 <-> rank 1 over TCP between the two namespaces
    n_a=$(head -n 1 <<<"$grp_list") n_b=$(tail -n 1 <<<"$grp_list")
    addr_b=10.77.0.$((10 + ${n_b#n}))
    conn=$(ip netns exec "$SC_P$n_a" ss -tnp 2>/dev/null | grep anymal-shard | grep -F " $addr_b:")
    if [ -n "$conn" ]; then note "MPI over TCP between $n_a and $n_b: $(head -n 1 <<<"$conn" | tr -s ' ')"; else
      fail "no TCP connection from the rank on $n_a to $addr_b ($n_b)"
    fi
  fi
  # Binding: every task's first log line names its node, GPU and CPUs; --cpu-bind=cores with
  # one CPU per task leaves each task one CPU.
  lines=$(head -q -n 1 "$logs/job-$job_id.run0/"*.log)
  echo "$lines"
  [ "$(grep -c 'anymal-job: task .* cpus=[0-9]*$' <<<"$lines")" = "$(grep -c 'anymal-job: task' <<<"$lines")" ] &&
    [ "$(grep -c 'anymal-job: task' <<<"$lines")" = 5 ] ||
    fail "not 5 tasks (coordinator, gateway, encoder, 2 ranks) each bound to one CPU: $lines"
  exercise
  # The HTTP gateway beside the coordinator: refuses a client without the key, answers one
  # with it (OpenAI chat completion), from the login node.
  http=$(cat "$logs/http-$job_id" 2>/dev/null)
  body='{"model": "tiny", "max_tokens": 8, "messages": [{"role": "user", "content": "Once upon a time"}]}'
  code=$(sc_in ctl curl -s -o /dev/null -w '%{http_code}' "$http/v1/chat/completions" \
    -H 'Content-Type: application/json' -d "$body")
  o=$(sc_in ctl curl -s "$http/v1/chat/completions" -H 'Content-Type: application/json' \
    -H "Authorization: Bearer $(cat "$keys")" -d "$body")
  if [ "$code" = 401 ] && grep -q '"chat.completion"' <<<"$o"; then
    note "HTTP gateway at $http: 401 without the key, a chat.completion with it"
  else
    fail "HTTP gateway at '$http': without the key $code (want 401), with it: $o"
  fi
  # scale: one more shard group joins the running cluster, then leaves it (anymal-slurm stop).
  out=$(slurm_w "$W" scale --coordinator "$ep" "${common[@]}" --tp 2 --wait 2>&1)
  scale_id=$(sed -n 's/.*submitted scale job \([0-9]*\).*/\1/p' <<<"$out")
  h=$(sc_in ctl "$B/anymal" client --coordinator "$ep" --health 2>&1)
  if grep -q '"shard_groups": 2' <<<"$h"; then note "scale job $scale_id joined: $h"; else
    fail "scale job ${scale_id:-?}: $out $h"
  fi
  if [ -n "$scale_id" ]; then
    sc_in ctl "$W" stop "$scale_id"
    wait_end "$scale_id" 30 || fail "scale job $scale_id still $(job_state "$scale_id") after anymal-slurm stop"
    h=$(sc_in ctl "$B/anymal" client --coordinator "$ep" --health 2>&1)
    grep -q '"shard_groups": 1' <<<"$h" || fail "after the scale job's stop: $h"
    req "after scale down" --text "Still there?" && note "scale job $scale_id stopped; the first group serves on: $h"
  fi
  cancel_midway
  # ---- GPUs through gres (two fake GPUs per node, tests/slurm_cluster.sh): two encoders and
  # two ranks on one node each get a GPU of their own; the programs then stop, saying why,
  # where there is no GPU (the job fails before it serves), or serve where there is one.
  if [ "$SC_GPUS" = 0 ]; then
    note "SKIPPED the gres check: no fake GPU devices here ($SC_GPU_WHY)"
  else
    out=$(slurm_w "$W" serve "${common[@]}" --logs "$logs/gpu" --encoders 2 --groups 1 --tp 2 --device cuda \
      --component 2:--ntasks-per-node=2 --wait 2>&1)
    gpu_id=$(sed -n 's/.*submitted serve job \([0-9]*\).*/\1/p' <<<"$out")
    [ -n "$gpu_id" ] && grep -q 'serving at' <<<"$out" && sc_in ctl scancel "$gpu_id"
    [ -n "$gpu_id" ] && wait_end "$gpu_id" 60
    for t in encoder-0 encoder-1 group0-rank0 group0-rank1; do
      head -n 2 "$logs/gpu/job-$gpu_id.run0/$t.log" 2>/dev/null | tr '\n' ' '
      echo
    done >"$SC_DIR/gpu.lines"
    cat "$SC_DIR/gpu.lines"
    enc_gpus=$(head -n 2 "$SC_DIR/gpu.lines" | sed -n 's/.*CUDA_VISIBLE_DEVICES=\([0-9]*\) .*/\1/p' | sort -u | wc -l)
    grp_gpus=$(tail -n 2 "$SC_DIR/gpu.lines" | sed -n 's/.*CUDA_VISIBLE_DEVICES=\([0-9]*\) .*/\1/p' | sort -u | wc -l)
    if [ "$enc_gpus" = 2 ] && [ "$grp_gpus" = 2 ]; then
      note "gres: 2 encoders and 2 ranks sharing a node each got a GPU of their own (job $gpu_id: $(tail -n 1 "$logs/gpu/job-$gpu_id.out"))"
    else
      fail "gres binding: encoders on $enc_gpus GPU(s), ranks on $grp_gpus, want 2 each: $out"
    fi
    procs_gone "GPU job $gpu_id"
  fi
  # ---- the plain-job fallback (--single): one request, then the ordered stop.
  if serve_job "plain job" --single; then
    req "plain job image" --text "Look:" --image "$G/vision/images/land_q90.jpg"
    scancel_and_check "$job_id" "plain job" stop
    grep -q '"coordinator"' "$logs/job-$job_id.run0/coordinator.log" ||
      fail "plain job: the coordinator did not stop on SIGTERM (no counters line in its log)"
    grep -q '"shard_leader"' "$logs/job-$job_id.run0/group0-rank0.log" ||
      fail "plain job: the shard leader did not stop on SIGTERM (no counters line in its log)"
  fi
elif [ "$nodes" -lt 4 ]; then
  note "FALLBACK: $nodes node(s): no heterogeneous job (its components need a node each); the plain job (--single) instead"
  if serve_job "plain job" --single; then
    exercise
    cancel_midway
  fi
fi

# ---- 4. the batch job, requeued midway: exactly once per custom_id.
if "$B/anymal" batch --help >/dev/null 2>&1; then
  n=60
  input=$SC_DIR/requests.jsonl
  for i in $(seq 1 $n); do
    case $((i % 3)) in
      0) part="{\"type\": \"text\", \"text\": \"Tell story $i.\"}" ;;
      1) part="{\"type\": \"image_url\", \"image_url\": {\"url\": \"vision/images/land_q90.jpg\"}}, {\"type\": \"text\", \"text\": \"What is it ($i)?\"}" ;;
      2) part="{\"type\": \"imu_url\", \"imu_url\": {\"url\": \"imu/imu333.npy\"}}, {\"type\": \"text\", \"text\": \"Motion $i?\"}" ;;
    esac
    echo "{\"custom_id\": \"req-$i\", \"method\": \"POST\", \"url\": \"/v1/chat/completions\", \"body\": {\"model\": \"tiny\", \"messages\": [{\"role\": \"user\", \"content\": [$part]}], \"max_tokens\": 48, \"temperature\": 0}}"
  done >"$input"
  bargs=(--encoders 1 --groups 1 --tp 2 --input "$input" --output "$SC_DIR/results.jsonl"
    --errors "$SC_DIR/errors.jsonl" --concurrency 4 --media-root "$G" --requeue)
  if [ "$nodes" -ge 4 ]; then bargs+=(--component 2:--ntasks-per-node=1); else bargs+=(--single); fi
  out=$(sc_in ctl "$W" batch "${common[@]}" "${bargs[@]}" 2>&1)
  batch_id=$(sed -n 's/.*submitted batch job \([0-9]*\).*/\1/p' <<<"$out")
  t0=$SECONDS
  if [ -z "$batch_id" ]; then fail "batch job not submitted: $out"; else
    # Requeue once some results are written and before all are.
    done_lines=0
    for _ in $(seq 600); do
      done_lines=$(cat "$SC_DIR/results.jsonl" "$SC_DIR/errors.jsonl" 2>/dev/null | wc -l)
      [ "$done_lines" -ge 5 ] && break
      [ -z "$(job_state "$batch_id")" ] && break
      sleep 0.1
    done
    if [ "$done_lines" -ge "$n" ]; then fail "the batch ended before it could be requeued midway"; fi
    sc_in ctl scontrol requeue "$batch_id" || fail "scontrol requeue $batch_id"
    note "batch job $batch_id requeued after $done_lines of $n results"
    # It runs again (restart 1), resumes, and ends.
    for _ in $(seq 720); do
      s=$(job_state "$batch_id")
      [ "$s" = COMPLETED ] || [ "$s" = FAILED ] || [ "$s" = CANCELLED ] || [ -z "$s" ] && break
      sleep 0.25
    done
    s=$(job_state "$batch_id")
    [ "$s" = COMPLETED ] || fail "batch job $batch_id ended $s: $(tail -n 5 "$logs/job-$batch_id.out")"
    [ -d "$logs/job-$batch_id.run1" ] || fail "batch job $batch_id did not run a second time"
    ids=$(cat "$SC_DIR/results.jsonl" "$SC_DIR/errors.jsonl" 2>/dev/null |
      sed -n 's/.*"custom_id": *"\([^"]*\)".*/\1/p' | sort)
    uniq_ids=$(sort -u <<<"$ids" | grep -c .)
    total=$(grep -c . <<<"$ids")
    errs=$(grep -c . "$SC_DIR/errors.jsonl" 2>/dev/null)
    if [ "$uniq_ids" = $n ] && [ "$total" = $n ]; then
      note "batch: $n custom_ids exactly once across output and errors ($errs errors) after a requeue, in $((SECONDS - t0)) s"
    else
      fail "batch: $total result lines, $uniq_ids distinct custom_ids, want $n each"
    fi
    procs_gone "batch job $batch_id"
  fi
else
  note "SKIPPED the batch job: this tree has no 'anymal batch' (issue 16)"
fi

# ---- the end: scancel everything; no process of ours anywhere (anymal programs, srun and
# slurmstepd of this cluster; the daemons are stopped by the exit trap).
sc_in ctl scancel --user=root 2>/dev/null
procs_gone "after scancel of every job"
[ -z "$(our_programs)" ] || fail "anymal processes left on the nodes: $(our_programs)"
note "mode $SC_MODE, $nodes node(s); $fails failure(s); $(($(date +%s) - t_start)) s in all"
[ $fails = 0 ]
