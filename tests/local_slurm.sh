#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for the tests that need a real one (tests/test_slurm.py),
# or by hand:
#
#   eval "$(tests/local_slurm.sh up /tmp/slurm)"    # prints `export SLURM_CONF=...`; partition "debug"
#   sbatch --wrap hostname; squeue
#   tests/local_slurm.sh down /tmp/slurm
#
# Needs Debian's `slurm-wlm` and `munge` (apt-get install -y slurm-wlm munge; .ci/run installs them)
# and root (slurmd runs jobs as their user; here everything is root). Everything it writes is under
# the folder given; its own munge daemon and ports, so it does not touch a system SLURM.
set -euo pipefail

cmd=${1:?usage: local_slurm.sh up|down DIR}
dir=$(realpath -m "${2:?usage: local_slurm.sh up|down DIR}")

down() {
    for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munged.pid"; do
        if [[ -s $pidfile ]]; then
            kill "$(cat "$pidfile")" 2>/dev/null || true
        fi
    done
    # wait for them to go (slurmd ends its jobs first)
    for _ in $(seq 50); do
        alive=0
        for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munged.pid"; do
            [[ -s $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null && alive=1
        done
        ((alive)) || break
        sleep 0.2
    done
    for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munged.pid"; do  # still there after 10 s
        if [[ -s $pidfile ]]; then
            kill -9 "$(cat "$pidfile")" 2>/dev/null || true
        fi
    done
}

if [[ $cmd == down ]]; then
    down
    exit 0
fi
[[ $cmd == up ]] || { echo "usage: local_slurm.sh up|down DIR" >&2; exit 2; }

for bin in munged slurmctld slurmd sbatch scontrol; do
    command -v "$bin" >/dev/null || { echo "local_slurm.sh: $bin not found (apt-get install -y slurm-wlm munge)" >&2; exit 3; }
done
[[ $(id -u) == 0 ]] || { echo "local_slurm.sh: needs root (slurmd runs the jobs)" >&2; exit 3; }

mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
chmod 700 "$dir/munge"
host=$(hostname -s)
# free ports, so two clusters (or a system one) never collide
read -r ctl_port node_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')

# munge: its own key and socket
dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$dir/munge/munge.key"
munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
    --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munge/munge.seed"

cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 2048 ))
cat > "$dir/slurm.conf" <<EOF
ClusterName=attnlab
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$ctl_port
SlurmdPort=$node_port
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=30
MinJobAge=600
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SchedulerParameters=sched_interval=1
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$dir/slurm.conf
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 100); do
    if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
        echo "export SLURM_CONF=$SLURM_CONF"
        exit 0
    fi
    sleep 0.2
done
echo "local_slurm.sh: the node did not come up; see $dir/slurmctld.log and $dir/slurmd.log" >&2
down
exit 1
