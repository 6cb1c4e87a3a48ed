#!/usr/bin/env bash
# bench/run_e2e.sh - end-to-end aggregate throughput through the coordinator vs the same
# shard group driven in process (issue 6), and the decoder's timeline with encoders busy.
#
# usage: bench/run_e2e.sh [BIN_DIR]      (default build/bin; see bench/README.md)
# env:   SHAPES="tiny 110m"  decoder shapes (tiny comes with encoders; 110m is decoder only)
#        B=16 N=64 M=128     batch, prompt tokens, generated tokens per request
#        T1=1 T2=1           decoder threads for P = 1, and per rank for P = 2 (2-core machine:
#                            the coordinator, the client and the link threads need the rest)
#        MIX_M=64            generated tokens per request in the multimodal mix
#        REPS=2              runs of each side; the best of each is compared
#        WORK=/tmp/am_e2e    model directories and logs
#
# For each shape and P in {1, 2}: `anymal bench batch` (the scheduler in process over the
# same paged context, the same prompts, ignore_eos) gives the baseline; then
# anymal-coordinator + anymal-shard-worker (P ranks under mpirun for P = 2) + bench_e2e
# (the C client, B requests submitted at once) give the same work through the actor
# system. Aggregate tokens/s = B x M / wall time from the first submit to the last token,
# on both sides (prefill included). Then a multimodal mix on the tiny model (every fourth
# request text only, the others with an image, an audio clip or an IMU signal; two
# encoder workers of 1 thread) prints the shard leader's timeline: busy, idle, and time
# in which every live request waited for encoder rows.
set -euo pipefail
BIN=${1:-build/bin}
SRC=$(cd "$(dirname "$0")/.." && pwd)
SHAPES=${SHAPES:-"tiny 110m"}
B=${B:-16} N=${N:-64} M=${M:-128} T1=${T1:-1} T2=${T2:-1} REPS=${REPS:-2} MIX_M=${MIX_M:-64}
WORK=${WORK:-/tmp/am_e2e}
# mpirun as root is for this benchmark's throwaway processes only. yield_when_idle: ranks
# waiting in an all-reduce yield the core (more processes than cores here; without it a
# P = 2 group beside the coordinator and the client ran 100x slower).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_mpi_yield_when_idle=${OMPI_MCA_mpi_yield_when_idle:-1}
mkdir -p "$WORK"
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

json() { sed -n "s/.*\"$2\": *\([0-9.e+-]*\).*/\1/p" <<<"$1" | head -1; }

model_dir() { # shape -> directory (made once)
    local d="$WORK/$1"
    if [ ! -e "$d/config.json" ]; then
        if [ "$1" = tiny ]; then "$BIN/anymal" mkmodel --shape tiny --with-encoders --seed 0 --out "$d" >/dev/null
        else "$BIN/anymal" mkmodel --shape "$1" --with-encoders --vision tiny --audio tiny --imu tiny --seed 0 \
            --out "$d" >/dev/null; fi
    fi
    echo "$d"
}

start_coord() { # -> sets EP, CPID
    rm -f "$WORK/ep"
    "$BIN/anymal-coordinator" --bind 'tcp://127.0.0.1:*' --endpoint-file "$WORK/ep" 2>"$WORK/coord.log" &
    CPID=$!
    PIDS+=("$CPID")
    for _ in $(seq 100); do [ -s "$WORK/ep" ] && break; sleep 0.05; done
    EP=$(cat "$WORK/ep")
}

start_shard() { # model P threads -> SPID
    if [ "$2" = 1 ]; then
        "$BIN/anymal-shard-worker" --coordinator "$EP" --model "$1" --threads "$3" --capacity "$B" 2>"$WORK/shard.log" &
    else
        mpirun -np "$2" --bind-to none "$BIN/anymal-shard-worker" --coordinator "$EP" --model "$1" --threads "$3" \
            --capacity "$B" 2>"$WORK/shard.log" &
    fi
    SPID=$!
    PIDS+=("$SPID")
}

stop() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

best() { printf '%s\n' "$@" | sort -g | tail -1; }

echo "| decoder | P | threads | B x (N + M) | in-process tok/s | through coordinator tok/s | ratio | shard leader busy / idle / wait_rows s |"
echo "|---|---|---|---|---|---|---|---|"
for shape in $SHAPES; do
    MD=$(model_dir "$shape")
    V=$(sed -n 's/.*"vocab_size": *\([0-9]*\).*/\1/p' "$MD/config.json" | head -1)
    for P in 1 2; do
        T=$([ "$P" = 1 ] && echo "$T1" || echo "$T2")
        base=() e2e=()
        for _ in $(seq "$REPS"); do
            out=$("$BIN/anymal" bench batch --model "$MD" --batch "$B" --prompt-tokens "$N" --gen-tokens "$M" \
                --threads "$T" --tp "$P" 2>>"$WORK/base.log" | grep '"bench":"batch"')
            echo "$out" >>"$WORK/results.jsonl"
            base+=("$(awk -v t="$(json "$out" total_s)" -v n=$((B * M)) 'BEGIN{printf "%.1f", n / t}')")
            start_coord
            start_shard "$MD" "$P" "$T"
            out=$("$BIN/bench_e2e" "$EP" --batch "$B" --prompt-tokens "$N" --gen-tokens "$M" --vocab "$V")
            echo "$out" >>"$WORK/results.jsonl"
            e2e+=("$(json "$out" agg_tok_per_s)")
            stop "$SPID"
            stop "$CPID"
            tl=$(grep '"shard_leader"' "$WORK/shard.log" | tail -1)
            echo "$tl" >>"$WORK/results.jsonl"
        done
        b=$(best "${base[@]}") e=$(best "${e2e[@]}")
        echo "| $shape | $P | $T | $B x ($N + $M) | $b (${base[*]}) | $e (${e2e[*]}) | $(awk -v a="$e" -v b="$b" 'BEGIN{printf "%.2f", a / b}') | $(json "$tl" busy_s) / $(json "$tl" idle_s) / $(json "$tl" wait_rows_s) |"
    done
done

# The multimodal mix: encoders busy while the decoder generates.
G="$SRC/tests/golden"
echo
echo "| decoder | requests (text / image / audio / IMU) | wall s | tok/s | TTFT p50 / max ms | shard leader busy / idle / wait_rows s |"
echo "|---|---|---|---|---|---|"
for shape in $SHAPES; do
    MD=$(model_dir "$shape")
    V=$(sed -n 's/.*"vocab_size": *\([0-9]*\).*/\1/p' "$MD/config.json" | head -1)
    start_coord
    for k in 0 1; do
        "$BIN/anymal-encoder" --coordinator "$EP" --model "$MD" --modality all --threads 1 --name "enc$k" \
            2>"$WORK/enc$k.log" &
        EPIDS[$k]=$!
        PIDS+=("${EPIDS[$k]}")
    done
    start_shard "$MD" 1 "$T1"
    out=$("$BIN/bench_e2e" "$EP" --batch "$B" --prompt-tokens "$N" --gen-tokens "$MIX_M" --vocab "$V" \
        --media "$G/vision/images/land_q90.jpg,$G/audio/speech48.wav,$G/imu/imu50.npy")
    echo "$out" >>"$WORK/results.jsonl"
    stop "$SPID"
    for k in 0 1; do stop "${EPIDS[$k]}"; done
    stop "$CPID"
    tl=$(grep '"shard_leader"' "$WORK/shard.log" | tail -1)
    echo "$tl" >>"$WORK/results.jsonl"
    echo "| $shape (P = 1, $T1 thread; 2 encoders x 1 thread) | $B x ($N + media + 8 -> $MIX_M) | $(json "$out" total_s) | $(json "$out" agg_tok_per_s) | $(json "$out" ttft_ms_p50) / $(json "$out" ttft_ms_max) | $(json "$tl" busy_s) / $(json "$tl" idle_s) / $(json "$tl" wait_rows_s) |"
done
