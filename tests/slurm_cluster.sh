# tests/slurm_cluster.sh - a real Slurm cluster on this one machine, for tests/test_slurm.sh.
# shellcheck shell=bash
#
# Sourced, not run. sc_up starts munged, slurmctld and SC_NODES slurmd daemons (Debian's
# slurm-wlm) and sc_down stops every process it started and removes what it made. Three
# layouts, tried in this order; SC_MODE says which one came up and SC_WHY why the ones
# before it did not:
#   netns   each node is a network namespace of its own (address 10.77.0.(10+N) on eth0, a veth
#           into a bridge that lives in a namespace of its own, so nothing is added to the
#           machine's own network), with its own hostname (UTS namespace) and its own /tmp and
#           /dev/shm (mount namespace), as separate machines have. The controller and the
#           "login node" the test submits from is one more namespace (10.77.0.1).
#   ports   (no network namespaces here) several slurmd on loopback, one port each
#           (NodeName ... Port=N, slurmd -N name; Debian's slurmd accepts it), each still with
#           its own hostname, /tmp and /dev/shm.
#   single  one slurmd on loopback, as the machine itself (no namespaces at all).
# Forced with SC_FORCE_MODE=ports|single (to test the fallbacks). Needs root (CAP_NET_ADMIN
# and CAP_SYS_ADMIN for namespaces, and slurmd runs jobs as their user).
#
# Everything lives in $SC_DIR (not under /tmp: a node's /tmp is its own). Names carry the
# test's PID so that two runs never share a namespace or a socket.

SC_NODES=${SC_NODES:-4}
SC_P=am$$ # namespace and veth prefix (IFNAMSIZ is 16: keep it short)
SC_MODE=
SC_WHY=
SC_PIDS=() # daemons started here, killed by sc_down
SC_NS=()   # namespaces made here, deleted by sc_down

sc_log() { echo "slurm-cluster: $*" >&2; }

# sc_in NODE CMD...: run CMD as on node NODE (ctl = the controller / login node).
sc_in() {
  local node=$1
  shift
  if [ "$SC_MODE" = netns ]; then
    SLURM_CONF=$SC_DIR/slurm.conf ip netns exec "$SC_P$node" "$@"
  else
    SLURM_CONF=$SC_DIR/slurm.conf "$@"
  fi
}

# The command that starts a daemon "on" a node: its own hostname, /tmp and /dev/shm (a node's
# PMIx and Open MPI session files live there, and would collide if nodes shared them), and in
# netns mode its own network; exec'ed all the way (setsid too: the shell's background job is
# no process group leader) so the PID we keep is the daemon's.
sc_node_exec() {
  local node=$1
  shift
  local net=()
  # nsenter, not `ip netns exec`: that one remounts /sys, hiding the cgroup mounts slurmd needs.
  [ "$SC_MODE" = netns ] && net=(nsenter --net="/run/netns/$SC_P$node")
  # setsid: a session of its own, so that nothing Slurm signals reaches the test's shell.
  if [ "$SC_MODE" = single ]; then
    exec setsid "$@"
  fi
  exec setsid "${net[@]}" unshare --mount --uts sh -c \
    'mount -t tmpfs -o mode=1777 tmpfs /tmp && mount -t tmpfs -o mode=1777 tmpfs /dev/shm &&
     hostname "$0" && exec "$@"' "$node" "$@"
}

sc_net_up() { # the namespaces, the bridge and one veth per host
  local sw=${SC_P}sw i addr
  ip netns add "$sw" || return 1
  SC_NS+=("$sw")
  ip -n "$sw" link add br0 type bridge && ip -n "$sw" link set br0 up && ip -n "$sw" link set lo up ||
    return 1
  for i in ctl $(seq 1 "$SC_NODES"); do
    addr=10.77.0.1
    [ "$i" = ctl ] || addr=10.77.0.$((10 + i)) i=n$i
    ip netns add "$SC_P$i" || return 1
    SC_NS+=("$SC_P$i")
    ip -n "$sw" link add "v$i" type veth peer name eth0 netns "$SC_P$i" &&
      ip -n "$sw" link set "v$i" master br0 && ip -n "$sw" link set "v$i" up &&
      ip -n "$SC_P$i" link set lo up && ip -n "$SC_P$i" addr add "$addr/24" dev eth0 &&
      ip -n "$SC_P$i" link set eth0 up || return 1
  done
}

sc_gpus() { # the fake GPU devices, once
  SC_GPUS=2
  SC_GPU_WHY=
  mkdir -p "$SC_DIR/dev"
  local d
  for d in nvidia0 nvidia1; do
    [ -c "$SC_DIR/dev/$d" ] && continue
    if ! SC_GPU_WHY=$(mknod "$SC_DIR/dev/$d" c 1 3 2>&1); then
      SC_GPUS=0
      return
    fi
  done
}

sc_conf() { # slurm.conf for the mode in force
  local c=$SC_DIR/slurm.conf i addr port ctl_addr=127.0.0.1 ctl_name
  ctl_name=ctl
  [ "$SC_MODE" = single ] && ctl_name=$(hostname)
  [ "$SC_MODE" = netns ] && ctl_addr=10.77.0.1
  cat >"$c" <<EOF
# written by tests/slurm_cluster.sh ($SC_MODE)
ClusterName=anymaltest
SlurmctldHost=$ctl_name($ctl_addr)
SlurmctldPort=$SC_CTL_PORT
SlurmdPort=$SC_SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SC_DIR/munge/munge.socket,cred_expire=10
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$SC_DIR/ctld
SlurmdSpoolDir=$SC_DIR/spool/%n
SlurmctldPidFile=$SC_DIR/slurmctld.pid
SlurmdPidFile=$SC_DIR/slurmd-%n.pid
SlurmctldLogFile=$SC_DIR/slurmctld.log
SlurmdLogFile=$SC_DIR/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
MpiParams=ports=$SC_RESV_PORTS
SwitchType=switch/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
# Requeued jobs wait for cred_expire (AuthInfo above) and, it turned out, for the next ping of
# the nodes (every SlurmdTimeout/3): 60 s made a requeue take 35 s, 15 s takes 12 s.
SlurmdParameters=config_overrides
JobRequeue=0
KillWait=15
MinJobAge=600
SlurmdTimeout=15
MessageTimeout=20
InactiveLimit=0
SchedulerParameters=bf_interval=1
EOF
  for i in $(seq 1 "$SC_NODES"); do
    addr=127.0.0.1
    port=
    [ "$SC_MODE" = netns ] && addr=10.77.0.$((10 + i))
    [ "$SC_MODE" = ports ] && port="Port=$((SC_SLURMD_PORT + i))"
    [ "$SC_MODE" = single ] && [ "$i" -gt 1 ] && break
    local name=n$i
    [ "$SC_MODE" = single ] && name=$(hostname)
    echo "NodeName=$name NodeAddr=$addr CPUs=$SC_CPUS RealMemory=1024 $port State=UNKNOWN" >>"$c"
  done
  echo "PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP" >>"$c"
  # Two "GPUs" per node, to check gres binding: Slurm needs character devices (these are
  # /dev/null's numbers, so nothing uses them) and sets each task's CUDA_VISIBLE_DEVICES.
  # Without CAP_MKNOD there are none (SC_GPUS=0, SC_GPU_WHY says why).
  if [ "$SC_GPUS" -gt 0 ]; then
    echo "Name=gpu File=$SC_DIR/dev/nvidia[0-1]" >"$SC_DIR/gres.conf"
    sed -i 's/ State=UNKNOWN$/ Gres=gpu:2 State=UNKNOWN/; s/^MpiDefault=none$/MpiDefault=none\nGresTypes=gpu/' "$c"
  fi
}

sc_wait_idle() { # wait until N nodes are idle (slurmd registered); 1 when a daemon died
  local want=$1 n p
  for _ in $(seq 150); do
    for p in "${SC_PIDS[@]}"; do kill -0 "$p" 2>/dev/null || return 1; done
    n=$(sc_in ctl sinfo -h -N -t idle -o '%N' 2>/dev/null | sort -u | wc -l)
    [ "$n" -ge "$want" ] && return 0
    sleep 0.2
  done
  return 1
}

sc_start() { # name, log, command...: a daemon kept in SC_PIDS
  local name=$1 log=$2
  shift 2
  SLURM_CONF=$SC_DIR/slurm.conf "$@" >"$log" 2>&1 &
  SC_PIDS+=($!)
  sc_log "started $name (pid $!)"
}

# sc_try MODE: bring the cluster up in MODE; 0 when every node registered.
sc_try() {
  SC_MODE=$1
  SC_CTL_PORT=${SC_CTL_PORT:-6817}
  SC_SLURMD_PORT=${SC_SLURMD_PORT:-6818}
  if [ "$SC_MODE" != netns ]; then # shared loopback: ports from this run's PID, not 6817
    SC_CTL_PORT=$((20000 + ($$ % 2000) * 10))
    SC_SLURMD_PORT=$((SC_CTL_PORT + 1))
  fi
  SC_RESV_PORTS=$((SC_CTL_PORT + 100))-$((SC_CTL_PORT + 199))
  # CPUs per node: the machine's 2 (a node of the multi-node modes runs at most 2 tasks); the
  # single node claims 4 (config_overrides) for the 4 tasks of the plain job, which then runs
  # with --cpu-bind=none (no binding to CPUs the machine lacks).
  SC_CPUS=2
  [ "$SC_MODE" = single ] && SC_CPUS=4
  local nodes=$SC_NODES
  [ "$SC_MODE" = single ] && nodes=1
  mkdir -p "$SC_DIR/ctld" "$SC_DIR/munge" "$SC_DIR/spool/$(hostname)"
  for i in $(seq 1 "$SC_NODES"); do mkdir -p "$SC_DIR/spool/n$i"; done
  chmod 700 "$SC_DIR/munge"
  if [ "$SC_MODE" = netns ] && ! sc_net_up 2>"$SC_DIR/netns.err"; then
    SC_WHY+="netns: $(tr '\n' ' ' <"$SC_DIR/netns.err"); "
    sc_down_daemons
    return 1
  fi
  sc_conf
  sc_start munged "$SC_DIR/munged.out" sc_node_exec ctl munged -F --force \
    --socket="$SC_DIR/munge/munge.socket" --key-file="$SC_DIR/munge/munge.key" \
    --pid-file="$SC_DIR/munge/munged.pid" --seed-file="$SC_DIR/munge/munged.seed" \
    --log-file="$SC_DIR/munge/munged.log"
  for _ in $(seq 50); do
    [ -S "$SC_DIR/munge/munge.socket" ] && break
    sleep 0.1
  done
  sc_start slurmctld "$SC_DIR/slurmctld.out" sc_node_exec ctl slurmctld -D -i -f "$SC_DIR/slurm.conf"
  local i name
  for i in $(seq 1 "$nodes"); do
    name=n$i
    [ "$SC_MODE" = single ] && name=$(hostname)
    sc_start "slurmd $name" "$SC_DIR/slurmd-$name.out" sc_node_exec "$name" slurmd -D -N "$name" -f "$SC_DIR/slurm.conf"
  done
  if ! sc_wait_idle "$nodes"; then
    SC_WHY+="$SC_MODE: $(tail -n 3 "$SC_DIR"/slurmd-*.out "$SC_DIR/slurmctld.log" 2>/dev/null | tr '\n' ' '); "
    sc_down_daemons
    return 1
  fi
  sc_log "$SC_MODE: $nodes node(s) idle: $(sc_in ctl sinfo -h -N -o '%N %T' | tr '\n' ' ')"
}

sc_up() {
  SC_DIR=${SC_DIR:?}
  # munged's key: 1 KiB of randomness, root only.
  mkdir -p "$SC_DIR/munge" && chmod 700 "$SC_DIR/munge"
  head -c 1024 /dev/urandom >"$SC_DIR/munge/munge.key" && chmod 400 "$SC_DIR/munge/munge.key"
  sc_gpus
  local m
  for m in netns ports single; do
    [ -n "${SC_FORCE_MODE:-}" ] && [ "$m" != "$SC_FORCE_MODE" ] && continue
    sc_try "$m" && return 0
  done
  return 1
}

# sc_ours: the PIDs of every process of this cluster: those in its namespaces, and those
# whose environment names its slurm.conf (slurmstepd and job tasks inherit SLURM_CONF), which
# finds them in the loopback modes too. The daemons themselves are left out.
sc_ours() {
  local ns p
  {
    for ns in "${SC_NS[@]}"; do ip netns pids "$ns" 2>/dev/null; done
    grep -lsz "^SLURM_CONF=$SC_DIR/slurm.conf\$" /proc/[0-9]*/environ | cut -d/ -f3
  } | sort -un | while read -r p; do
    [ "$p" = $$ ] || [ "$p" = "${BASHPID:-}" ] && continue
    case " ${SC_PIDS[*]} " in *" $p "*) continue ;; esac
    echo "$p"
  done
}

# The daemons (SIGTERM, 10 s), then whatever is left of them and of the jobs (SIGKILL: all
# processes in the namespaces or with our SLURM_CONF), then the namespaces. Killing the jobs
# first would kill slurmctld's helper slurmscriptd under it, and it would hang.
sc_down_daemons() {
  local ns p
  for p in "${SC_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 100); do
    local alive=0
    for p in "${SC_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in $(sc_ours) "${SC_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait "${SC_PIDS[@]}" 2>/dev/null || true
  for ns in "${SC_NS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  SC_PIDS=()
  SC_NS=()
}

sc_down() {
  sc_down_daemons
}
