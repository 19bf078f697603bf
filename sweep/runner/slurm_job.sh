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
GANSWEEP=(@PYTHON@ -m sweep.cli)
cd @CWD@
@EXPORTS@say() { echo "gansweep-slurm: $*"; }
say "job $SLURM_JOB_ID ($JOB_NUMBER of at most $MAX_JOBS) on $SLURM_JOB_NODELIST, $(date -Is)"

# Ray: on one node gansweep starts its own instance; on several, a head here and a worker on each other node.
nodes=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))
if [ ${#nodes[@]} -gt 1 ]; then
  head_ip=$(hostname -I | awk '{print $1}')  # the batch shell runs on the first node
  port=$((6379 + SLURM_JOB_ID % 1000))
  @RAY@ start --head --node-ip-address="$head_ip" --port=$port --num-cpus="$SLURM_CPUS_PER_TASK"@GPUS@ --block &
  sleep 10
  srun --nodes=$((${#nodes[@]} - 1)) --ntasks=$((${#nodes[@]} - 1)) --exclude="${nodes[0]}" \
    @RAY@ start --address="$head_ip:$port" --num-cpus="$SLURM_CPUS_PER_TASK"@GPUS@ --block &
  sleep 10
  CLUSTER=(--address "$head_ip:$port")
else
  CLUSTER=(--num-cpus "$SLURM_CPUS_PER_TASK")
fi

@LAUNCH@
driver=$!
chain=no cancelled=no
# USR1 (the time limit is near) reaches this shell alone: stop the driver, then chain.
trap 'chain=yes; say "time limit in @GRACE@s: stopping the sweep"; kill -TERM $driver' USR1
# TERM (scancel, or the limit itself) reaches every process of the job, the driver too: no successor.
trap 'cancelled=yes; say "TERM (scancel or the time limit): the sweep stops"' TERM
while kill -0 $driver 2>/dev/null; do wait $driver; done
wait $driver; rc=$?
[ ${#nodes[@]} -gt 1 ] && @RAY@ stop >/dev/null 2>&1

if [ $rc -eq 0 ]; then
  say "the sweep is finished (see $RUN); no successor"
  exit 0
elif [ $chain = yes ] && [ $rc -eq @CHAIN_EXIT@ ]; then
  if "${GANSWEEP[@]}" status "$RUN" --finished >/dev/null 2>&1; then  # the limit came as the sweep ended
    say "the sweep is finished (see $RUN); no successor"
    exit 0
  fi
  if [ "$JOB_NUMBER" -ge "$MAX_JOBS" ]; then
    say "stopped after $MAX_JOBS jobs; not submitting another: gansweep slurm --resume $RUN --submit carries on"
    exit 1
  fi
  next=$(sbatch --parsable --dependency=afterany:$SLURM_JOB_ID \
    --export=ALL,GANSWEEP_SLURM_JOB_NUMBER=$((JOB_NUMBER + 1)) "$RUN/slurm/@SCRIPT_NAME@")
  say "submitted job $next to resume the run"
  exit 0
elif [ $cancelled = yes ]; then
  say "stopped by TERM (exit status $rc); no successor: gansweep slurm --resume $RUN --submit carries on"
  exit $rc
else
  say "the sweep ended with exit status $rc; no successor (another job would repeat it): see above, then gansweep slurm --resume $RUN --submit"
  exit $rc
fi
