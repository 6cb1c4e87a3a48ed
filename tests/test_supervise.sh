#!/usr/bin/env bash
# tests/test_supervise.sh - anymal-supervise keeps a real cluster's actors running.
#
# A coordinator, an encoder worker and a P = 2 shard group (mpirun), the worker and the
# group each under anymal-supervise, on the tiny model. Scenarios, each timed from the
# failure to HEALTH answering healthy with every worker back (the time to recovery):
#   1. SIGKILL rank 1 of the group: mpirun ends, the supervisor starts the group again;
#   2. SIGSTOP rank 1 (the group's --stall-ms 2000): the leader exits 70, likewise;
#   3. SIGKILL the encoder worker: started again.
# Then SIGTERM to each supervisor: it passes SIGTERM on (the actor drains), exits with the
# actor's status 0, and no process of the cluster is left. The supervisor's own contract:
# --max-restarts gives up with 1, a missing command is a usage error (2).
set -u
B=${AM_BIN_DIR:?}
tmp=$(mktemp -d /tmp/am_supervise.XXXXXX)
pids=()
fails=0
cleanup() {
  for p in "${pids[@]}"; do kill -KILL -- "-$p" 2>/dev/null; kill -KILL "$p" 2>/dev/null; done
  pkill -KILL -f "$tmp/tiny" 2>/dev/null
  wait 2>/dev/null
  [ "$fails" = 0 ] && rm -rf "$tmp" || echo "logs kept in $tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
now_ms() { date +%s%3N; }
start() { # name, command...: own process group
  local name=$1; shift
  setsid "$@" >"$tmp/$name.log" 2>&1 &
  pids+=($!)
}

# The supervisor's own contract first (no cluster needed).
"$B/anymal-supervise" --max-restarts 2 --backoff-ms 10 -- false 2>"$tmp/giveup.log"
st=$?
[ $st = 1 ] && [ "$(grep -c 'started false' "$tmp/giveup.log")" = 3 ] ||
  fail "--max-restarts 2 on 'false': status $st, $(grep -c started "$tmp/giveup.log") starts (want 1, 3)"
"$B/anymal-supervise" --name x 2>/dev/null
[ $? = 2 ] || fail "no command: want usage status 2"

"$B/anymal" mkmodel --shape tiny --with-encoders --seed 0 --out "$tmp/tiny" >/dev/null || { fail mkmodel; exit 1; }
start coordinator "$B/anymal-coordinator" --bind 'tcp://127.0.0.1:*' --endpoint-file "$tmp/ep" \
  --heartbeat-ms 100 --liveness 3
for _ in $(seq 100); do [ -s "$tmp/ep" ] && break; sleep 0.05; done
ep=$(cat "$tmp/ep")
start sup-encoder "$B/anymal-supervise" --name encoder --backoff-ms 200 -- \
  "$B/anymal-encoder" --coordinator "$ep" --model "$tmp/tiny" --modality all --threads 1 \
  --heartbeat-ms 100 --liveness 3 --reconnect-ms 50,400
sup_enc=${pids[-1]}
start sup-group "$B/anymal-supervise" --name group --backoff-ms 200 -- \
  mpirun -np 2 --oversubscribe --bind-to none "$B/anymal-shard-worker" --coordinator "$ep" \
  --model "$tmp/tiny" --threads 1 --heartbeat-ms 100 --liveness 3 --reconnect-ms 50,400 --stall-ms 2000
sup_group=${pids[-1]}

# all_back: healthy, one group and one encoder registered.
all_back() {
  "$B/anymal" client --coordinator "$ep" --health --timeout-ms 1000 2>/dev/null |
    grep -q '"healthy": true, "shard_groups": 1, "encoders": 1'
}
# wait_back LABEL T0: polls until the failure shows (not all_back: the coordinator's
# liveness, or the group's --stall-ms), then until all_back; prints and records the time
# to recovery from T0, the failure.
recovery=()
wait_back() {
  local label=$1 t0=$2 seen=0
  if [ "$label" != "cluster up" ]; then
    for _ in $(seq 200); do all_back || { seen=1; break; }; sleep 0.05; done
    [ $seen = 1 ] || { fail "$label: HEALTH never showed the failure"; return 1; }
  fi
  for _ in $(seq 600); do
    if all_back; then
      local ms=$(( $(now_ms) - t0 ))
      recovery+=("$label: $ms ms")
      echo "supervise: $label: back after $ms ms"
      return 0
    fi
    sleep 0.05
  done
  fail "$label: the cluster did not come back within 30 s"
  return 1
}
# rank_pid R: the pid of rank R of the group now running under sup_group.
rank_pid() {
  local mpirun p
  mpirun=$(pgrep -P "$sup_group" | head -1)
  for p in $(pgrep -P "$mpirun"); do
    tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$1" && { echo "$p"; return; }
  done
}
# A request answered end to end (text + IMU through the encoder).
serves() {
  "$B/anymal" client --coordinator "$ep" --text hi --imu "$(dirname "$0")/golden/imu/imu50.npy" \
    --max-tokens 2 --timeout-ms 20000 >/dev/null 2>&1
}

wait_back "cluster up" "$(now_ms)" || exit 1
serves || fail "a request before the failures"

r1=$(rank_pid 1)
[ -n "$r1" ] || { fail "no rank 1 found under the group's supervisor"; exit 1; }
t0=$(now_ms); kill -KILL "$r1"
wait_back "SIGKILL rank 1" "$t0"
serves || fail "a request after the group came back"

# A stopped rank shows when the group next steps: send a request, which the stopped rank
# holds up; when the leader gives up, the coordinator runs it again (it had no token yet)
# on the group the supervisor starts, so it is answered after all: nothing is lost.
r1=""
for _ in $(seq 100); do r1=$(rank_pid 1); [ -n "$r1" ] && break; sleep 0.05; done
[ -n "$r1" ] || { fail "no rank 1 found under the group's supervisor"; exit 1; }
t0=$(now_ms); kill -STOP "$r1"
serves &
req=$!
wait_back "SIGSTOP rank 1 (--stall-ms 2000)" "$t0"
wait "$req" || fail "the request held up by the stopped rank was lost"
echo "supervise: the request held up by the stopped rank was answered $(( $(now_ms) - t0 )) ms after the stop"
# gone: not there, or a zombie waiting for its reaper
gone() { [ ! -e "/proc/$1" ] || [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = Z ]; }
for _ in $(seq 100); do gone "$r1" && break; sleep 0.05; done
gone "$r1" || { fail "the stopped rank $r1 is still there: $(cat /proc/$r1/stat)"; kill -KILL "$r1"; }
grep -q "exited 70" "$tmp/sup-group.log" || fail "the group's leader did not exit 70 on the stall"
serves || fail "a request after the stall"

enc=$(pgrep -P "$sup_enc" | head -1); t0=$(now_ms); kill -KILL "$enc"
wait_back "SIGKILL the encoder" "$t0"
serves || fail "a request after the encoder came back"

# SIGTERM to the supervisors: each passes it to its actor's group and ends with the
# actor's status: the encoder drains and exits 0; mpirun, signalled, ends its job and
# exits 1 (Open MPI; to drain a group, SIGTERM its leader rank: test_actors test_drain).
for pair in "$sup_enc:0" "$sup_group:1"; do
  s=${pair%%:*} want=${pair##*:}
  kill -TERM "$s"
  st=-1
  for _ in $(seq 400); do kill -0 "$s" 2>/dev/null || { wait "$s"; st=$?; break; }; sleep 0.05; done
  [ "$st" = "$want" ] || fail "supervisor $s after SIGTERM: status $st (want $want)"
done
left=$(pgrep -f "$tmp/tiny" | grep -v "^$$\$" || true)
[ -z "$left" ] || fail "processes left after the supervisors stopped: $left"

echo "time to recovery (this machine; 2 cores shared):"
printf '  %s\n' "${recovery[@]}"
[ "$fails" = 0 ] && echo "test_supervise: passed" || echo "test_supervise: $fails failures"
[ "$fails" = 0 ]
