#!/bin/bash
# gansweep on Slurm: run @NAME@, written by `gansweep slurm` on @DATE@.
# Every job of the chain runs this file: the first one that finds no run in RUN starts the sweep,
# each later one resumes it. Near the time limit Slurm sends USR1 (--signal below): the sweep
# stops cleanly and the next job is submitted. Edit freely; the #SBATCH lines are Slurm's.
@SBATCH@
set -uo pipefail

RUN=@RUN@  # the run directory: a filesystem every node of the job sees
MAX_JOBS=@MAX_JOBS@  # jobs in this chain at most
JOB_NUMBER=${GANSWEEP_SLURM_JOB_NUMBER:-1}
IDLE_JOBS=${GANSWEEP_SLURM_IDLE_JOBS:-0}  # jobs in a row, before this one, that finished no point
GANSWEEP=(@PYTHON@ -m sweep.cli)
cd @CWD@
@EXPORTS@say() { echo "gansweep-slurm: $*"; }
say "job $SLURM_JOB_ID ($JOB_NUMBER of at most $MAX_JOBS) on $SLURM_JOB_NODELIST, $(date -Is)"

# Ray: on one node gansweep starts its own instance. On several, a Ray cluster across the job's nodes: a
# head on this (the first) node, a worker on each other one (one srun task a node), each announcing the
# address Slurm reaches its node at, each in a process group of its own that the job kills when it ends.
# Ray's token authentication: a fresh token for this job, in a file only you can read, given to every
# Ray process and to the driver by RAY_AUTH_TOKEN_PATH (an unauthenticated head would run anyone's code).
nodes=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))
node_ip() {  # the IPv4 address Slurm reaches node $1 at (its NodeAddr): what other nodes can reach
  local addr
  addr=$(scontrol show node "$1" 2>/dev/null | grep -o 'NodeAddr=[^ ]*' | cut -d= -f2)
  getent ahostsv4 "${addr:-$1}" | awk 'NR == 1 {print $1}'
}
ray_node() {  # ray_node [HEAD_ADDRESS]: this node's Ray (a head without an address), until a USR2 here
  local args=(--head --port="$RAY_PORT" --include-dashboard=false) ip group=""
  [ $# -gt 0 ] && args=(--address="$1")
  ip=$(node_ip "$SLURMD_NODENAME")
  # scancel's TERM reaches every process of the job: a Ray that died of it would leave the driver, which
  # stops the sweep on that TERM, hung on its lost head. So Ray runs with TERM blocked, in a process group
  # of its own, and the job stops it (USR2, below) once the driver is done.
  trap '' TERM
  exec 2>/dev/null  # bash's own "Killed" line for the group stopped below; Ray's output goes to its log
  trap '[ -n "${group:-}" ] && kill -KILL -- -$group 2>/dev/null; rm -rf "/tmp/gansweep-ray-$SLURM_JOB_ID-$SLURMD_NODENAME"; exit 0' USR2
  @PYTHON@ -c 'import os, signal, sys; signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}); os.setsid(); os.execv(sys.argv[1], sys.argv[1:])' \
    @RAY@ start "${args[@]}" --node-ip-address="$ip" --num-cpus="$SLURM_CPUS_PER_TASK"@GPUS@ --block \
    --disable-usage-stats --temp-dir="/tmp/gansweep-ray-$SLURM_JOB_ID-$SLURMD_NODENAME" \
    > "$RUN/slurm/$SLURM_JOB_ID-ray-$SLURMD_NODENAME.log" 2>&1 &
  group=$!
  wait $group
  kill -KILL -- -$group 2>/dev/null  # ray start ended (its head lost, say): nothing of it stays
}
stop_ray() {  # the workers' step (srun passes USR2 on to its tasks), then the head: nothing of Ray outlives the job
  [ -n "${workers:-}" ] && kill -USR2 $workers 2>/dev/null && wait $workers 2>/dev/null
  [ -n "${head:-}" ] && kill -USR2 $head 2>/dev/null && wait $head 2>/dev/null
  rm -f "${RAY_AUTH_TOKEN_PATH:-}"
  workers="" head=""
}
if [ ${#nodes[@]} -gt 1 ]; then
  export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$RUN/slurm/ray-$SLURM_JOB_ID.token"
  (umask 077 && @PYTHON@ -c 'import secrets; print(secrets.token_hex(32))' > "$RAY_AUTH_TOKEN_PATH")
  export RAY_PORT=$((6379 + SLURM_JOB_ID % 1000)) SLURM_CPUS_PER_TASK RUN
  export -f node_ip ray_node
  head_address="$(node_ip "${nodes[0]}"):$RAY_PORT"
  trap stop_ray EXIT
  ray_node & head=$!
  # each worker's step asks for the node's CPUs (and GPUs) itself: srun no longer inherits --cpus-per-task
  srun --nodes=$((${#nodes[@]} - 1)) --ntasks=$((${#nodes[@]} - 1)) --exclude="${nodes[0]}" --kill-on-bad-exit=0 \
    --cpus-per-task="$SLURM_CPUS_PER_TASK"@SRUN_GPUS@ bash -c 'ray_node "$0"' "$head_address" & workers=$!
  # every node joined, or the ones that did not named, within @JOIN_TIMEOUT@ s; the sweep goes on with those
  # that joined (a node that joins later gets trials from then on)
  expect=()
  for n in "${nodes[@]}"; do expect+=("$n=$(node_ip "$n")"); done
  if ! @PYTHON@ -m sweep.runner.slurm wait-for-nodes "$head_address" @JOIN_TIMEOUT@ "${expect[@]}"; then
    say "no Ray cluster to run on; no successor: see above, then gansweep slurm --resume $RUN --submit"
    exit 1
  fi
  export GANSWEEP_SLURM_NODES="${expect[*]}"  # the driver names a node that leaves (sweep/runner/nodes.py)
  CLUSTER=(--address "$head_address")
else
  CLUSTER=(--num-cpus "$SLURM_CPUS_PER_TASK")
fi

finished_before=$(@PYTHON@ -m sweep.runner.slurm finished-points "$RUN" 2>/dev/null || echo 0)
@LAUNCH@
driver=$!
chain=no cancelled=no
# USR1 (the time limit is near) reaches this shell alone: stop the driver, then chain.
trap 'chain=yes; say "time limit in @GRACE@s: stopping the sweep"; kill -TERM $driver' USR1
# TERM (scancel, or the limit itself) reaches every process of the job, the driver too: no successor.
trap 'cancelled=yes; say "TERM (scancel or the time limit): the sweep stops"' TERM
while kill -0 $driver 2>/dev/null; do wait $driver; done
wait $driver; rc=$?
stop_ray

if [ $rc -eq 0 ]; then
  say "the sweep is finished (see $RUN); no successor"
  exit 0
elif [ $chain = yes ] && [ $rc -eq @CHAIN_EXIT@ ]; then
  if "${GANSWEEP[@]}" status "$RUN" --finished >/dev/null 2>&1; then  # the limit came as the sweep ended
    say "the sweep is finished (see $RUN); no successor"
    exit 0
  fi
  finished_now=$(@PYTHON@ -m sweep.runner.slurm finished-points "$RUN" 2>/dev/null || echo 0)
  [ "$finished_now" -gt "$finished_before" ] && IDLE_JOBS=0 || IDLE_JOBS=$((IDLE_JOBS + 1))
  if [ "$IDLE_JOBS" -ge 2 ]; then
    say "the last 2 jobs finished no point ($finished_now finished in all): not submitting another (a job that only starts up needs a longer --time); gansweep slurm --resume $RUN --submit carries on"
    exit 1
  fi
  if [ "$JOB_NUMBER" -ge "$MAX_JOBS" ]; then
    say "stopped after $MAX_JOBS jobs; not submitting another: gansweep slurm --resume $RUN --submit carries on"
    exit 1
  fi
  next=$(sbatch --parsable --dependency=afterany:$SLURM_JOB_ID \
    --export=ALL,GANSWEEP_SLURM_JOB_NUMBER=$((JOB_NUMBER + 1)),GANSWEEP_SLURM_IDLE_JOBS=$IDLE_JOBS "$RUN/slurm/@SCRIPT_NAME@")
  say "submitted job $next to resume the run"
  exit 0
elif [ $cancelled = yes ]; then
  say "stopped by TERM (exit status $rc); no successor: gansweep slurm --resume $RUN --submit carries on"
  exit $rc
else
  say "the sweep ended with exit status $rc; no successor (another job would repeat it): see above, then gansweep slurm --resume $RUN --submit"
  exit $rc
fi
