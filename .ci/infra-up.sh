#!/usr/bin/env bash
# .ci/infra-up.sh - bring up throw-away test infrastructure on THIS machine (Debian 12, root, no systemd):
#   ssh   : OpenSSH server on 127.0.0.1:$AIRJOBS_SSH_PORT, public-key login only, for one unprivileged user
#   slurm : munged + MariaDB + slurmdbd + slurmctld + slurmd, one node (the real hostname and CPU count),
#           partitions "debug" (default) and "batch"; slurmdbd is there so that `sacct` works.
#
# Usage:  bash .ci/infra-up.sh [STATE_DIR]        STATE_DIR defaults to $AIRJOBS_INFRA, else <checkout>/var/infra
# Idempotent: installs missing Debian packages, keeps existing keys/state, starts only what is not running,
# then checks everything end to end (ssh login, node idle, one sbatch job COMPLETED in sacct) and writes and
# prints STATE_DIR/infra.env. Stop with .ci/infra-down.sh STATE_DIR (by pid file only).
#
# Everything this script writes is under STATE_DIR, except what cannot be: the Debian packages, the unix
# user (its home is /home/$AIRJOBS_SSH_USER, where ~/.ssh/authorized_keys and job output files live) and
# /run/sshd (sshd's compiled-in privilege-separation directory).
#
# Settings (environment):
#   AIRJOBS_SSH_PORT=2222  AIRJOBS_SSH_USER=airjobs-ssh
#   AIRJOBS_SLURMCTLD_PORT=6817  AIRJOBS_SLURMD_PORT=6818  AIRJOBS_SLURMDBD_PORT=6819  AIRJOBS_DB_PORT=3306
#   AIRJOBS_SLURM_CPUS (default: 256)  AIRJOBS_INFRA_TIMEOUT=60 (seconds per readiness wait)
set -euo pipefail

CHECKOUT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
STATE=${1:-${AIRJOBS_INFRA:-$CHECKOUT/var/infra}}
SSH_PORT=${AIRJOBS_SSH_PORT:-2222}
SSH_USER=${AIRJOBS_SSH_USER:-airjobs-ssh}
CTLD_PORT=${AIRJOBS_SLURMCTLD_PORT:-6817}
SLURMD_PORT=${AIRJOBS_SLURMD_PORT:-6818}
DBD_PORT=${AIRJOBS_SLURMDBD_PORT:-6819}
DB_PORT=${AIRJOBS_DB_PORT:-3306}
TIMEOUT=${AIRJOBS_INFRA_TIMEOUT:-60}
PKGS=(openssh-server openssh-client munge slurmctld slurmd slurm-client slurmdbd mariadb-server curl)  # curl: the Agave CLI shapes test

export DEBIAN_FRONTEND=noninteractive LC_ALL=C
T0=$(date +%s%N)
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
log() { printf '[infra-up +%6sms] %s\n' "$(ms_since "$T0")" "$*"; }

LOGS=()   # log files worth showing when something fails (filled in as components are set up)
fail() {  # fail MESSAGE [LOGFILE...] : message + tail of the given (default: all known) logs, exit 1
  local msg=$1 f; shift
  local files=("$@"); [ ${#files[@]} -gt 0 ] || files=("${LOGS[@]}")
  echo "infra-up: FAILED: $msg" >&2
  for f in "${files[@]}"; do
    [ -s "$f" ] || continue
    echo "----- tail -n 25 $f" >&2; tail -n 25 "$f" >&2
  done
  echo "infra-up: daemons already started are left running for inspection; stop them with:" \
       "bash $CHECKOUT/.ci/infra-down.sh $STATE" >&2
  exit 1
}
trap 'fail "command failed (line $LINENO): $BASH_COMMAND"' ERR

# alive NAME PIDFILE: the pid file names a live (non-zombie) process whose command is NAME.
# PID 1 here reaps orphans slowly, and kill -0 succeeds on a zombie, hence the state check.
alive() {
  local pid; [ -s "$2" ] || return 1; pid=$(cat "$2" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/stat" ] || return 1
  [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]
}
port_busy() { ss -Htln "sport = :$1" | grep -q .; }
wait_for() { # wait_for SECONDS CMD... : poll every 0.2 s
  local end=$(( $(date +%s) + $1 )); shift
  until "$@" >/dev/null 2>&1; do [ "$(date +%s)" -lt "$end" ] || return 1; sleep 0.2; done
}
need_port_free() { port_busy "$1" && fail "port $1 ($2) is already in use by something else; set $3" /dev/null; return 0; }

[ "$(id -u)" = 0 ] || fail "must run as root" /dev/null
mkdir -p "$STATE"; STATE=$(cd "$STATE" && pwd -P); chmod 755 "$STATE"
SSHD=$STATE/ssh; M=$STATE/munge; DB=$STATE/db; S=$STATE/slurm
log "state directory $STATE"

# ------------------------------------------------------------------------------------------- packages
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  t=$(date +%s%N); LOGS+=("$STATE/apt.log")
  # No systemd here: postinst scripts would fall back to /etc/init.d and start sshd on :22, munged,
  # mariadb, slurm... A policy-rc.d that exits 101 forbids that (the image usually has one already).
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; made_policy=1
  fi
  {
    apt-get -o DPkg::Lock::Timeout=600 update -q &&
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
  } >"$STATE/apt.log" 2>&1 || { [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d; fail "apt-get failed"; }
  [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
  log "apt-get update + install ${missing[*]}: $(ms_since "$t") ms"
fi

# ------------------------------------------------------------------------------------------- the ssh user
t=$(date +%s%N)
if ! id -u "$SSH_USER" >/dev/null 2>&1; then
  useradd --create-home --home-dir "/home/$SSH_USER" --shell /bin/bash --user-group "$SSH_USER"
fi
# useradd leaves the password "!" (locked); sshd with UsePAM=no then refuses even key logins
# ("account is locked"). "*" = no password, not locked. Only keys can log in anyway.
usermod -p '*' "$SSH_USER"
SSH_HOME=$(getent passwd "$SSH_USER" | cut -d: -f6)
[ -d "$SSH_HOME" ] || install -d -m 755 -o "$SSH_USER" -g "$SSH_USER" "$SSH_HOME"

# ------------------------------------------------------------------------------------------- fake schedulers
# tests/fakes -> ~/fakes of the ssh user, replaced on every run: fake PBS/Torque, SGE, LSF and HTCondor commands
# (source ~/fakes/<sched>/env.sh; their job state is kept in ~/.fake-<sched>, which stays) and slurm-count
# (source ~/fakes/slurm-count/env.sh: squeue/sacct wrappers logging each call to ~/fakes/slurm-count/calls.log).
if [ -d "$CHECKOUT/tests/fakes" ]; then
  t=$(date +%s%N)
  rm -rf "$SSH_HOME/fakes.new"
  cp -R "$CHECKOUT/tests/fakes" "$SSH_HOME/fakes.new"
  find "$SSH_HOME/fakes.new" \( -name __pycache__ -o -name calls.log \) -prune -exec rm -rf {} +
  chown -R "$SSH_USER:$SSH_USER" "$SSH_HOME/fakes.new"
  chmod -R go-w "$SSH_HOME/fakes.new"
  rm -rf "$SSH_HOME/fakes"
  mv "$SSH_HOME/fakes.new" "$SSH_HOME/fakes"
  log "fake schedulers and slurm-count installed in $SSH_HOME/fakes: $(ms_since "$t") ms"
fi

# ------------------------------------------------------------------------------------------- sshd
install -d -m 755 "$SSHD"; LOGS+=("$SSHD/sshd.log")
[ -s "$SSHD/hostkey" ]     || ssh-keygen -q -t ed25519 -N '' -C airjobs-infra-host   -f "$SSHD/hostkey"
[ -s "$SSHD/id_ed25519" ]  || ssh-keygen -q -t ed25519 -N '' -C airjobs-infra-client -f "$SSHD/id_ed25519"
chmod 600 "$SSHD/hostkey" "$SSHD/id_ed25519"
install -d -m 700 -o "$SSH_USER" -g "$SSH_USER" "$SSH_HOME/.ssh"
install -m 600 -o "$SSH_USER" -g "$SSH_USER" "$SSHD/id_ed25519.pub" "$SSH_HOME/.ssh/authorized_keys"
echo "[127.0.0.1]:$SSH_PORT $(cut -d' ' -f1,2 "$SSHD/hostkey.pub")" > "$SSHD/known_hosts"
cat > "$SSHD/sshd_config" <<EOF
# written by .ci/infra-up.sh
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $SSHD/hostkey
PidFile $SSHD/sshd.pid
AllowUsers $SSH_USER
PermitRootLogin no
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AuthorizedKeysFile .ssh/authorized_keys
X11Forwarding no
Subsystem sftp internal-sftp
MaxStartups 100:30:200
MaxSessions 50
LogLevel VERBOSE
# the slurm configuration lives in the state directory, not in /etc/slurm
SetEnv SLURM_CONF=$S/slurm.conf
EOF
if alive sshd "$SSHD/sshd.pid"; then
  log "sshd already running (pid $(cat "$SSHD/sshd.pid"))"
else
  need_port_free "$SSH_PORT" sshd AIRJOBS_SSH_PORT
  mkdir -p /run/sshd && chmod 755 /run/sshd   # privilege-separation dir, normally made by the init script
  /usr/sbin/sshd -t -f "$SSHD/sshd_config" || fail "sshd_config rejected" /dev/null
  /usr/sbin/sshd -f "$SSHD/sshd_config" -E "$SSHD/sshd.log"   # daemonizes; absolute path required
  log "sshd started"
fi
RSH=(ssh -o BatchMode=yes -o IdentitiesOnly=yes -o UserKnownHostsFile="$SSHD/known_hosts" -o StrictHostKeyChecking=yes
     -o ConnectTimeout=5 -o LogLevel=ERROR -p "$SSH_PORT" -i "$SSHD/id_ed25519" "$SSH_USER@127.0.0.1")
wait_for "$TIMEOUT" "${RSH[@]}" true || fail "ssh key login as $SSH_USER@127.0.0.1:$SSH_PORT does not work" "$SSHD/sshd.log"
wait_for "$TIMEOUT" alive sshd "$SSHD/sshd.pid" || fail "sshd wrote no usable pid file $SSHD/sshd.pid" "$SSHD/sshd.log"
log "sshd (pid $(cat "$SSHD/sshd.pid")): login as $SSH_USER on 127.0.0.1:$SSH_PORT ok: $(ms_since "$t") ms"

# ------------------------------------------------------------------------------------------- munge
t=$(date +%s%N); LOGS+=("$M/munged.start.log" "$M/munged.log")
install -d -m 755 -o munge -g munge "$M"
if [ ! -s "$M/munge.key" ]; then
  mungekey --create --keyfile="$M/munge.key" --bits=1024
fi
chown munge:munge "$M/munge.key"; chmod 400 "$M/munge.key"
MUNGE_SOCKET=$M/munge.socket
if alive munged "$M/munged.pid"; then
  log "munged already running (pid $(cat "$M/munged.pid"))"
else
  rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
  runuser -u munge -- /usr/sbin/munged --key-file="$M/munge.key" --socket="$MUNGE_SOCKET" \
      --pid-file="$M/munged.pid" --log-file="$M/munged.log" --seed-file="$M/munged.seed" \
      </dev/null >"$M/munged.start.log" 2>&1 || fail "munged did not start" "$M/munged.start.log" "$M/munged.log"
fi
munge_ok() { munge -S "$MUNGE_SOCKET" -n </dev/null | unmunge -S "$MUNGE_SOCKET"; }
wait_for "$TIMEOUT" munge_ok || fail "munged does not answer on $MUNGE_SOCKET" "$M/munged.log"
log "munged up (pid $(cat "$M/munged.pid")): $(ms_since "$t") ms"

# ------------------------------------------------------------------------------------------- MariaDB (for slurmdbd)
t=$(date +%s%N); LOGS+=("$DB/mariadbd.err")
install -d -m 755 -o mysql -g mysql "$DB" "$DB/run"
DBSOCK=$DB/run/mysqld.sock
if [ ! -d "$DB/data/mysql" ]; then
  rm -rf "$DB/data"; install -d -m 750 -o mysql -g mysql "$DB/data"
  mariadb-install-db --user=mysql --datadir="$DB/data" --auth-root-authentication-method=socket \
      --skip-test-db >"$DB/install-db.log" 2>&1 || fail "mariadb-install-db failed" "$DB/install-db.log"
  log "mariadb datadir initialised: $(ms_since "$t") ms"
fi
if alive mariadbd "$DB/run/mariadbd.pid"; then
  log "mariadbd already running (pid $(cat "$DB/run/mariadbd.pid"))"
else
  need_port_free "$DB_PORT" mariadbd AIRJOBS_DB_PORT
  # runs as root only to drop to mysql itself; TCP on 127.0.0.1 because slurmdbd has no socket setting
  setsid /usr/sbin/mariadbd --user=mysql --datadir="$DB/data" --socket="$DBSOCK" --pid-file="$DB/run/mariadbd.pid" \
      --bind-address=127.0.0.1 --port="$DB_PORT" --skip-name-resolve --log-error="$DB/mariadbd.err" \
      --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 --skip-log-bin \
      </dev/null >/dev/null 2>&1 &
fi
wait_for "$TIMEOUT" mariadb -S "$DBSOCK" -e 'select 1' || fail "mariadbd does not answer" "$DB/mariadbd.err"
[ -s "$DB/slurm-db-password" ] || { (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$DB/slurm-db-password"); }
DBPW=$(cat "$DB/slurm-db-password")
mariadb -S "$DBSOCK" -e "
  CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DBPW';
  ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DBPW';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" || fail "cannot create the slurm database user" "$DB/mariadbd.err"
log "mariadbd up on 127.0.0.1:$DB_PORT (pid $(cat "$DB/run/mariadbd.pid")): $(ms_since "$t") ms"

# ------------------------------------------------------------------------------------------- slurm config
t=$(date +%s%N)
HOST=$(hostname -s)
# 256 CPUs on a 2-core machine (config_overrides lets slurmd accept it), so hundreds of test jobs run at once;
# AIRJOBS_SLURM_CPUS=0 keeps the real hardware as slurmd sees it (CPUs, sockets, cores, threads)
HW=$(/usr/sbin/slurmd -C 2>/dev/null | head -n1 | grep -oE '(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=[0-9]+' | tr '\n' ' ' || true)
[ -n "$HW" ] || HW="CPUs=$(nproc)"
[ "${AIRJOBS_SLURM_CPUS:-256}" = 0 ] || HW="CPUs=${AIRJOBS_SLURM_CPUS:-256} "
CPUS=$(grep -oE 'CPUs=[0-9]+' <<<"$HW" | cut -d= -f2)
MEM=$(( $(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo) * 8 / 10 ))
install -d -m 755 -o slurm -g slurm "$S" "$S/state" "$S/log" "$S/run"
install -d -m 755 "$S/spool"
LOGS+=("$S/log/slurmdbd.start.log" "$S/log/slurmdbd.log" "$S/log/slurmctld.start.log" "$S/log/slurmctld.log"
      "$S/log/slurmd.start.log" "$S/log/slurmd.log")
export SLURM_CONF=$S/slurm.conf
cat > "$S/slurm.conf.new" <<EOF
# single-node test cluster written by .ci/infra-up.sh (clients: SLURM_CONF=$S/slurm.conf)
ClusterName=airjobs
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=slurm
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/run/slurmctld.pid
SlurmdPidFile=$S/run/slurmd.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups without systemd
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
# default 3 s between batch scheduling passes; 0 -> jobs start on the controller's ~1 s tick
SchedulerParameters=batch_sched_delay=0
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# for accounting_storage/slurmdbd this names the munge socket (AuthInfo does not cover that connection)
AccountingStoragePass=$MUNGE_SOCKET
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$S/log/jobcomp.txt
MinJobAge=300
MailProg=/bin/true
ReturnToService=2
SlurmdTimeout=30
SlurmctldTimeout=30
MessageTimeout=10
InactiveLimit=0
KillWait=2
NodeName=$HOST NodeAddr=127.0.0.1 ${HW}RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=batch Nodes=$HOST Default=NO MaxTime=INFINITE State=UP
EOF
cat > "$S/slurmdbd.conf.new" <<EOF
# written by .ci/infra-up.sh; slurmdbd finds it next to \$SLURM_CONF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=slurm
LogFile=$S/log/slurmdbd.log
PidFile=$S/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=$DBPW
EOF
for f in slurm.conf slurmdbd.conf; do
  if [ -f "$S/$f" ] && ! cmp -s "$S/$f.new" "$S/$f" && { alive slurmctld "$S/run/slurmctld.pid" || alive slurmdbd "$S/run/slurmdbd.pid"; }; then
    log "WARNING: $f changed while slurm is running; run infra-down.sh and infra-up.sh again to apply it"
  fi
  mv -f "$S/$f.new" "$S/$f"
done
chmod 644 "$S/slurm.conf"
chown slurm:slurm "$S/slurmdbd.conf"; chmod 600 "$S/slurmdbd.conf"   # slurmdbd is fatal on looser modes

# ------------------------------------------------------------------------------------------- slurm daemons
if alive slurmdbd "$S/run/slurmdbd.pid"; then
  log "slurmdbd already running (pid $(cat "$S/run/slurmdbd.pid"))"
else
  need_port_free "$DBD_PORT" slurmdbd AIRJOBS_SLURMDBD_PORT
  /usr/sbin/slurmdbd </dev/null >"$S/log/slurmdbd.start.log" 2>&1 || fail "slurmdbd did not start"
fi
dbd_ok() { alive slurmdbd "$S/run/slurmdbd.pid" && port_busy "$DBD_PORT"; }
wait_for "$TIMEOUT" dbd_ok || fail "slurmdbd not listening on $DBD_PORT" "$S/log/slurmdbd.log" "$DB/mariadbd.err"
log "slurmdbd up (pid $(cat "$S/run/slurmdbd.pid"))"

if alive slurmctld "$S/run/slurmctld.pid"; then
  log "slurmctld already running (pid $(cat "$S/run/slurmctld.pid"))"
else
  need_port_free "$CTLD_PORT" slurmctld AIRJOBS_SLURMCTLD_PORT
  # daemonizes and drops to SlurmUser; -i: start even if state files are missing or unreadable
  /usr/sbin/slurmctld -f "$S/slurm.conf" -i </dev/null >"$S/log/slurmctld.start.log" 2>&1 || fail "slurmctld did not start"
fi
if alive slurmd "$S/run/slurmd.pid"; then
  log "slurmd already running (pid $(cat "$S/run/slurmd.pid"))"
else
  need_port_free "$SLURMD_PORT" slurmd AIRJOBS_SLURMD_PORT
  /usr/sbin/slurmd -f "$S/slurm.conf" -N "$HOST" </dev/null >"$S/log/slurmd.start.log" 2>&1 || fail "slurmd did not start"
fi
node_idle() { [ "$(sinfo -h -n "$HOST" -p debug -o %T 2>/dev/null)" = idle ]; }
wait_for "$TIMEOUT" node_idle || fail "node $HOST never became idle (sinfo: $(sinfo -h -N -o '%N %T %E' 2>&1 | tr '\n' ' '))"
log "slurmctld (pid $(cat "$S/run/slurmctld.pid")) + slurmd (pid $(cat "$S/run/slurmd.pid")) up, node $HOST idle ($CPUS CPUs): $(ms_since "$t") ms"

# ------------------------------------------------------------------------------------------- end-to-end check
t=$(date +%s%N)
JOB=$("${RSH[@]}" "sbatch --parsable -J infra-up-check -o /dev/null --wrap true" 2>&1) \
  || fail "sbatch through ssh failed: $JOB"
JOB=${JOB%%;*}
[[ $JOB =~ ^[0-9]+$ ]] || fail "sbatch through ssh printed no job id: $JOB"
job_completed() { [ "$(sacct -n -P -X -o State -j "$JOB" 2>/dev/null | head -n1)" = COMPLETED ]; }
wait_for "$TIMEOUT" job_completed \
  || fail "job $JOB did not reach COMPLETED in sacct (sacct: $(sacct -n -P -X -o JobID,State,ExitCode -j "$JOB" 2>&1 | tr '\n' ' '); squeue: $(squeue -t all -h -j "$JOB" -o '%T %r' 2>&1))"
log "sbatch --wrap true as $SSH_USER through ssh -> job $JOB COMPLETED in sacct: $(ms_since "$t") ms"

# ------------------------------------------------------------------------------------------- facts
cat > "$STATE/infra.env.new" <<EOF
AIRJOBS_INFRA=$STATE
AIRJOBS_SSH_HOST=127.0.0.1
AIRJOBS_SSH_PORT=$SSH_PORT
AIRJOBS_SSH_USER=$SSH_USER
AIRJOBS_SSH_KEY=$SSHD/id_ed25519
AIRJOBS_SSH_KNOWN_HOSTS=$SSHD/known_hosts
AIRJOBS_SLURM_CONF=$S/slurm.conf
AIRJOBS_SLURM_NODE=$HOST
AIRJOBS_SLURM_PARTITIONS=debug,batch
EOF
mv -f "$STATE/infra.env.new" "$STATE/infra.env"
log "ready in $(ms_since "$T0") ms; $STATE/infra.env:"
cat "$STATE/infra.env"
