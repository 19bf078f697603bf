#!/usr/bin/env bash
# A real Slurm of N nodes on this one machine, to try `gansweep slurm` and to test it (tests/test_slurm.py
# starts one per test module; .ci/run installs the packages). Each node is its own slurmd (`slurmd -N nK`,
# Debian's Slurm runs several on one host) with its own address (127.0.0.(K+1)), port, spool, pid and log
# files; slurmctld and munge (Slurm's authentication) are private to DIR too, so nothing of the machine's
# own Slurm, if any, is touched. Needs root (the daemons run as root) and Debian's slurmctld, slurmd,
# slurm-client and munge.
#
#   tools/slurm-testbed.sh start DIR [NODES]    # NODES defaults to 2; prints the line to source
#   export SLURM_CONF=DIR/slurm.conf            # then sbatch, squeue, gansweep slurm --submit as usual
#   tools/slurm-testbed.sh stop DIR             # cancels every job, stops the daemons
#
# Every node offers all of the machine's CPUs: two nodes on 2 cores oversubscribe them, which is what a
# test of the multi-node path needs (real nodes, real srun, real network addresses), not speed.
set -euo pipefail

usage() { echo "usage: $0 start DIR [NODES] | stop DIR" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1 dir=$2 nodes=${3:-2}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

stop() {
  [ -f "$dir/slurm.conf" ] || { echo "$dir holds no test bed" >&2; exit 2; }
  SLURM_CONF="$dir/slurm.conf" scancel --user="$(id -un)" 2>/dev/null || true
  for pid_file in "$dir"/slurmd-*.pid "$dir/slurmctld.pid" "$dir/munged.pid"; do
    [ -f "$pid_file" ] && kill "$(cat "$pid_file")" 2>/dev/null || true
  done
}

start() {
  [[ $nodes =~ ^[1-9]$ ]] || { echo "NODES: 1 to 9, got $nodes" >&2; exit 2; }
  [ "$(id -u)" = 0 ] || { echo "the test bed's daemons run as root" >&2; exit 2; }
  for d in munged slurmctld slurmd; do
    [ -x "/usr/sbin/$d" ] || { echo "/usr/sbin/$d missing: apt-get install slurmctld slurmd slurm-client munge" >&2; exit 2; }
  done
  mkdir -p "$dir/state" "$dir/log"
  dir=$(cd "$dir" && pwd)
  head -c 1024 /dev/urandom > "$dir/munge.key" && chmod 600 "$dir/munge.key"
  /usr/sbin/munged --force --socket="$dir/munge.sock" --key-file="$dir/munge.key" --pid-file="$dir/munged.pid" \
    --log-file="$dir/log/munged.log" --seed-file="$dir/munged.seed"
  local host names=() lines=""
  host=$(hostname)
  for k in $(seq 1 "$nodes"); do
    names+=("n$k")
    mkdir -p "$dir/spool-n$k"
    lines+="NodeName=n$k NodeHostname=$host NodeAddr=127.0.0.$((k + 1)) Port=$(free_port) CPUs=$(nproc) State=UNKNOWN"$'\n'
  done
  cat > "$dir/slurm.conf" <<EOF
ClusterName=gansweep-testbed
SlurmctldHost=$host(127.0.0.1)
AuthType=auth/munge
AuthInfo=socket=$dir/munge.sock
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$(free_port)
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool-%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
KillWait=30
${lines}PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  export SLURM_CONF="$dir/slurm.conf"
  /usr/sbin/slurmctld -i
  for n in "${names[@]}"; do /usr/sbin/slurmd -N "$n"; done
  for _ in $(seq 120); do  # every node idle, within a minute
    [ "$(sinfo -h -N -t idle -o %N | sort -u | wc -l)" = "$nodes" ] && { echo "export SLURM_CONF=$SLURM_CONF"; return; }
    sleep 0.5
  done
  echo "the test bed's nodes did not come up idle in 60 s; see $dir/log" >&2
  sinfo -N >&2 || true
  exit 1
}

case $cmd in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
