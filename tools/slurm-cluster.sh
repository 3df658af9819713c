#!/usr/bin/env bash
# A SLURM cluster on this one host for the tests: munged, slurmctld and two slurmd daemons acting as
# nodes n1 and n2, 4 fake GPUs each (character-device gres files), cgroup-free (proctrack/linuxproc,
# task/none). Everything lives in one directory; `stop` kills what `start` started, by pid.
#
#   bash tools/slurm-cluster.sh start DIR     # prints the SLURM_CONF to export
#   bash tools/slurm-cluster.sh stop DIR
#
# Needs root and Debian's slurm-wlm and munge (tools/setup.sh --test installs them).
set -euo pipefail
action=${1:?start or stop}
dir=$(realpath -m "${2:?a directory for the cluster}")
host=$(hostname -s)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

stop() {
  for pidfile in "$dir"/run/*.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
}

if [ "$action" = stop ]; then
  stop
  exit 0
fi

mkdir -p "$dir"/{run,state,state/spool-n1,state/spool-n2,log,dev,munge}
stop  # a cluster left in this directory by an earlier run
chmod 700 "$dir/munge"
cp /etc/munge/munge.key "$dir/munge/munge.key" 2>/dev/null || dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$dir/munge/munge.key"
socket="$dir/munge/munge.socket"
munged --force --key-file "$dir/munge/munge.key" --socket "$socket" --pid-file "$dir/run/munged.pid" \
  --log-file "$dir/log/munged.log" --seed-file "$dir/munge/seed"

ctl_port=$(free_port)
for node in n1 n2; do
  for i in 0 1 2 3; do
    [ -e "$dir/dev/$node-gpu$i" ] || mknod "$dir/dev/$node-gpu$i" c 1 3
  done
done
cat > "$dir/slurm.conf" <<CONF
ClusterName=pmad
SlurmctldHost=$host
SlurmctldPort=$ctl_port
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$socket
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
MinJobAge=300
InactiveLimit=0
KillWait=30
SlurmdParameters=config_overrides
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/state/spool-%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
NodeName=n1 NodeHostname=$host NodeAddr=127.0.0.1 Port=$(free_port) CPUs=8 RealMemory=4000 Gres=gpu:4 State=UNKNOWN
NodeName=n2 NodeHostname=$host NodeAddr=127.0.0.1 Port=$(free_port) CPUs=8 RealMemory=4000 Gres=gpu:4 State=UNKNOWN
PartitionName=gpu Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
cat > "$dir/gres.conf" <<CONF
NodeName=n1 Name=gpu File=$dir/dev/n1-gpu[0-3]
NodeName=n2 Name=gpu File=$dir/dev/n2-gpu[0-3]
CONF
export SLURM_CONF="$dir/slurm.conf"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF" -N n1
slurmd -f "$SLURM_CONF" -N n2
for _ in $(seq 100); do
  idle=$(sinfo -h -N -o '%N %t' 2>/dev/null | grep -c 'idle' || true)
  [ "$idle" -ge 2 ] && break
  sleep 0.2
done
sinfo -h -N -o '%N %t %G' >&2
echo "export SLURM_CONF=$SLURM_CONF"
