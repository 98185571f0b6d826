#!/usr/bin/env bash
# .ci/infra-down.sh - stop what .ci/infra-up.sh started, using ONLY the pid files it wrote (never by name).
# Usage: bash .ci/infra-down.sh [STATE_DIR]      (same default as infra-up: $AIRJOBS_INFRA, else <checkout>/var/infra)
# Each daemon gets SIGTERM, then SIGKILL after $AIRJOBS_INFRA_STOP_TIMEOUT seconds (default 10).
# Idempotent: missing or stale pid files are reported and skipped. Keys, the munge key, the slurm state and
# the accounting database stay in STATE_DIR, so infra-up.sh can start the same setup again.
set -uo pipefail

CHECKOUT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
STATE=${1:-${AIRJOBS_INFRA:-$CHECKOUT/var/infra}}
STOP_TIMEOUT=${AIRJOBS_INFRA_STOP_TIMEOUT:-10}
if [ ! -d "$STATE" ]; then echo "infra-down: $STATE does not exist, nothing to stop"; exit 0; fi
STATE=$(cd "$STATE" && pwd -P)
S=$STATE/slurm
export SLURM_CONF=$S/slurm.conf LC_ALL=C

# PID 1 on this machine reaps orphans slowly and kill -0 succeeds on a zombie: state Z counts as gone.
running() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
# pid_of NAME PIDFILE: the pid in PIDFILE if it is a live process whose command is NAME (guards against pid reuse)
pid_of() {
  local pid; [ -s "$2" ] || return 1; pid=$(cat "$2" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && running "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] && echo "$pid"
}
children_of() { # direct children of a pid, from /proc (the command name may contain spaces: cut after ')')
  local f
  for f in /proc/[0-9]*/stat; do
    sed -E 's/^([0-9]+) \(.*\) . ([0-9]+) .*/\1 \2/' "$f" 2>/dev/null
  done | awk -v p="$1" '$2 == p {print $1}'
}
kill_pids() { # kill_pids LABEL PID... : TERM, wait up to STOP_TIMEOUT, then KILL
  local label=$1; shift; local p left=()
  [ $# -gt 0 ] || return 0
  kill -TERM "$@" 2>/dev/null
  local end=$(( $(date +%s) + STOP_TIMEOUT ))
  while :; do
    left=(); for p in "$@"; do running "$p" && left+=("$p"); done
    [ ${#left[@]} -eq 0 ] && { echo "infra-down: $label (pid $*) stopped"; return 0; }
    [ "$(date +%s)" -lt "$end" ] || break
    sleep 0.2
  done
  echo "infra-down: $label (pid ${left[*]}) ignored SIGTERM for ${STOP_TIMEOUT}s, sending SIGKILL"
  kill -KILL "${left[@]}" 2>/dev/null
  local still=("${left[@]}")
  for _ in $(seq 25); do
    left=(); for p in "${still[@]}"; do running "$p" && left+=("$p"); done
    [ ${#left[@]} -eq 0 ] && { echo "infra-down: $label killed"; return 0; }
    sleep 0.2
  done
  echo "infra-down: WARNING: $label (pid ${left[*]}) still running after SIGKILL"
  return 0
}
stop() { # stop NAME PIDFILE
  local pid
  if [ ! -s "$2" ]; then echo "infra-down: $1: no pid file"; return 0; fi
  if ! pid=$(pid_of "$1" "$2"); then
    echo "infra-down: $1: pid $(cat "$2" 2>/dev/null) from $2 is not a running $1"; rm -f "$2"; return 0
  fi
  kill_pids "$1" "$pid"; rm -f "$2"
}

# 1. jobs first: slurmstepd and the job processes are not children of slurmd and would outlive it
if pid_of slurmctld "$S/run/slurmctld.pid" >/dev/null && pid_of slurmd "$S/run/slurmd.pid" >/dev/null; then
  if [ -n "$(squeue -h -o %i 2>/dev/null)" ]; then
    scancel --full --state=PENDING 2>/dev/null; scancel --full --state=RUNNING 2>/dev/null
    scancel --full --state=SUSPENDED 2>/dev/null
    for _ in $(seq 50); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.2; done
    left=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ')
    if [ -n "$left" ]; then echo "infra-down: jobs still listed after scancel: $left"; else echo "infra-down: jobs cancelled"; fi
  fi
fi
stop slurmd "$S/run/slurmd.pid"
# Fallback: `scontrol listpids` asks each remaining slurmstepd over its socket in SlurmdSpoolDir (works
# without slurmd) for its job's exact pids; once those are gone every slurmstepd exits by itself.
if [ -f "$SLURM_CONF" ] && command -v scontrol >/dev/null; then
  jp=$(scontrol listpids 2>/dev/null | awk 'NR > 1 && $1 ~ /^[0-9]+$/ {print $1}' | sort -un)
  # shellcheck disable=SC2086
  [ -n "$jp" ] && kill_pids "leftover job processes" $jp
fi
stop slurmctld "$S/run/slurmctld.pid"
stop slurmdbd  "$S/run/slurmdbd.pid"
stop mariadbd  "$STATE/db/run/mariadbd.pid"
stop munged    "$STATE/munge/munged.pid"

# 2. sshd: the per-connection sshd processes are children of the listener; stop them, then the listener
if pid=$(pid_of sshd "$STATE/ssh/sshd.pid"); then
  # shellcheck disable=SC2046
  kill_pids "sshd sessions" $(children_of "$pid")
fi
stop sshd "$STATE/ssh/sshd.pid"
echo "infra-down: done ($STATE)"
