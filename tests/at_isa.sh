#!/usr/bin/env bash
# tests/at_isa.sh LEVEL CMD... - runs CMD with the CPU backend capped at instruction-set
# level LEVEL (AM_CPU_ISA, core/cpu_backend.h). Exit 77 (ctest: skipped) when the CPU
# lacks LEVEL, or when LEVEL is its best level: the plain run of the test covers that one.
set -u
level=$1
shift
anymal="${AM_BIN_DIR:?}/anymal"
if ! "$anymal" cpu --has "$level"; then
  echo "SKIP: this CPU has no $level level ($("$anymal" cpu --levels | tr '\n' ' '))"
  exit 77
fi
best=$("$anymal" cpu --levels | tail -1)
if [ "$level" = "$best" ]; then
  echo "SKIP: $level is this CPU's best level, which the plain run of the test covers"
  exit 77
fi
# The machine, for a failure's log: CI machines differ from the one a test was written on.
echo "at_isa: AM_CPU_ISA=$level on $("$anymal" cpu | head -1 | sed 's/^cpu: //'), $(nproc) cores"
AM_CPU_ISA=$level exec "$@"
