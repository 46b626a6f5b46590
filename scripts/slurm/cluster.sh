#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the tests of the Slurm path (tests/test_launchers_slurm.py) and for
# trying a sweep as it runs on a cluster:
#
#   scripts/slurm/cluster.sh up       install what is missing (Debian packages, as root), start munged, MariaDB,
#                                     slurmdbd, slurmctld and slurmd, wait until the node is idle; a no-op when up
#   scripts/slurm/cluster.sh down     cancel the cluster's jobs, stop the daemons this script started, by pid
#   scripts/slurm/cluster.sh status   exit 0 when the cluster answers and its node is idle or busy
#   scripts/slurm/cluster.sh env      the line to source so that sinfo, sbatch, sacct... talk to this cluster
#
# Everything lives in $NORMPOS_SLURM_DIR (default /tmp/normpos-slurm): the filled-in slurm.conf and
# slurmdbd.conf (from slurm.conf.in, slurmdbd.conf.in beside this script), state, spool, the database, logs, and
# started/NAME, the pid of each daemon this script started (down stops those and nothing else). Nothing is
# written to /etc/slurm: commands find the cluster through SLURM_CONF. The ports are Slurm's usual 6817-6819
# and 6830 for MariaDB on 127.0.0.1, so there is one such cluster per machine.
# Why slurmdbd: submitit asks sacct for the state of a job that left no result file (cancelled, killed);
# without accounting sacct answers "accounting storage is disabled" and Hydra's launcher waits forever.
#
# Exit status: 0 done, 3 cannot run here (one line says why: not root, no apt-get), 1 failed (with log lines).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
HERE=$(cd "$(dirname "$0")" && pwd)
STATE=${NORMPOS_SLURM_DIR:-/tmp/normpos-slurm}
export SLURM_CONF=$STATE/etc/slurm.conf
DBPORT=6830
CPUS=$(($(nproc) > 4 ? $(nproc) : 4))  # the node's CPUs as Slurm counts them (slurm.conf.in says why)
PACKAGES=(munge slurm-wlm slurmdbd mariadb-server mariadb-client)
COMMANDS=(munged munge slurmctld slurmd slurmdbd sinfo sbatch sacct sacctmgr scontrol mariadbd mariadb-install-db mariadb)

say() { echo "slurm: $*"; }
cannot() { echo "normpos: slurm: cannot run here: $*" >&2; exit 3; }
die() {
    echo "normpos: error: slurm: $1" >&2
    [ -n "${2:-}" ] && [ -f "$2" ] && tail -n 15 "$2" | sed 's/^/    /' >&2
    exit 1
}

# a pid that is running and is the named program (a pid file may outlive its process, and pids are reused)
alive() { [ -n "${1:-}" ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]; }
pid_in() { cat "$1" 2>/dev/null || true; }
started() { alive "$(pid_in "$STATE/started/$1")" "$1"; }
remember() { mkdir -p "$STATE/started"; echo "$2" >"$STATE/started/$1"; }

wait_until() {  # wait_until SECONDS WHAT COMMAND...: run COMMAND each half second until it succeeds
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.5
    done
}

install_missing() {
    local missing=()
    for c in "${COMMANDS[@]}"; do command -v "$c" >/dev/null || missing+=("$c"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" = 0 ] || cannot "not root, and ${missing[*]} missing (install ${PACKAGES[*]} as root)"
    command -v apt-get >/dev/null || cannot "no apt-get to install ${missing[*]} (install ${PACKAGES[*]} yourself)"
    say "installing ${PACKAGES[*]} (missing: ${missing[*]}; apt-get, a minute or two)"
    # the packages' scripts must not start system daemons of their own (they would outlive us): Debian's
    # policy-rc.d answers 101 ("action forbidden") to every service start while they install
    local policy=/usr/sbin/policy-rc.d own_policy=
    if [ ! -e $policy ]; then
        printf '#!/bin/sh\n# scripts/slurm/cluster.sh: no service starts while it installs\nexit 101\n' >$policy
        chmod 755 $policy
        own_policy=1
    fi
    local log=$STATE/log/apt.log ok=1
    mkdir -p "$STATE/log"
    { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"; } >"$log" 2>&1 || ok=
    [ -n "$own_policy" ] && rm -f $policy
    [ -n "$ok" ] || die "apt-get could not install ${PACKAGES[*]} ($log):" "$log"
    for c in "${COMMANDS[@]}"; do command -v "$c" >/dev/null || die "$c still missing after installing ${PACKAGES[*]}"; done
}

fill() {  # fill TEMPLATE DEST: the template with @HOST@, @STATE@, @CPUS@, @DBPORT@, @DBPASS@ filled in
    sed -e "s|@HOST@|$HOST|g" -e "s|@STATE@|$STATE|g" -e "s|@CPUS@|$CPUS|g" -e "s|@DBPORT@|$DBPORT|g" \
        -e "s|@DBPASS@|$(cat "$STATE/etc/dbpass")|g" "$1" >"$2.tmp"
    mv "$2.tmp" "$2"
}

configure() {
    mkdir -p "$STATE"/{etc,ctld,spool,run,log,started}
    [ -s "$STATE/etc/dbpass" ] || (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$STATE/etc/dbpass")
    fill "$HERE/slurm.conf.in" "$SLURM_CONF"
    (umask 077 && fill "$HERE/slurmdbd.conf.in" "$STATE/etc/slurmdbd.conf")  # slurmdbd wants it 0600
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi  # a munged answers (ours or the machine's)
    local key=/etc/munge/munge.key
    if [ ! -s $key ]; then
        mungekey --create --keyfile=$key >/dev/null
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge $key
    chmod 0400 $key
    runuser -u munge -- munged || die "munged did not start" /var/log/munge/munged.log
    wait_until 10 munged test -s /run/munge/munged.pid || die "munged wrote no pid file" /var/log/munge/munged.log
    remember munged "$(pid_in /run/munge/munged.pid)"
    wait_until 10 munge sh -c 'munge -n | unmunge' || die "munge does not answer" /var/log/munge/munged.log
    say "munged started (pid $(pid_in "$STATE/started/munged"))"
}

# MariaDB runs as mysql: its socket, pid file and log sit in a folder of its own
DB=$STATE/mariadb
sql() { mariadb --no-defaults --socket="$DB/mysqld.sock" -u root -e "$1"; }

start_mariadb() {
    started mariadbd && return 0
    if [ ! -d "$STATE/mysql/mysql" ]; then
        # a new database means new job records: the controller's saved state (job ids) starts anew with it
        rm -rf "$STATE/mysql" "$STATE/ctld" && mkdir -p "$STATE/mysql" "$STATE/ctld"
        chown mysql:mysql "$STATE/mysql"
        mariadb-install-db --no-defaults --user=mysql --datadir="$STATE/mysql" --auth-root-authentication-method=socket \
            --skip-test-db >"$STATE/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed" "$STATE/log/mariadb-install.log"
    fi
    mkdir -p "$DB" && chown mysql:mysql "$DB"
    setsid mariadbd --no-defaults --user=mysql --datadir="$STATE/mysql" --socket="$DB/mysqld.sock" \
        --pid-file="$DB/mariadbd.pid" --bind-address=127.0.0.1 --port=$DBPORT --skip-name-resolve \
        --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 --log-error="$DB/mariadb.log" \
        </dev/null >/dev/null 2>&1 &
    remember mariadbd $!
    wait_until 60 mariadb sql "SELECT 1" || die "MariaDB does not answer on $DB/mysqld.sock" "$DB/mariadb.log"
    sql "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$(cat "$STATE/etc/dbpass")';
         ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$(cat "$STATE/etc/dbpass")';
         GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
    say "MariaDB started (pid $!, 127.0.0.1:$DBPORT)"
}

start_daemon() {  # start_daemon NAME PIDFILE LOG READY-COMMAND...: a Slurm daemon that forks into the background
    local name=$1 pidfile=$2 log=$3
    shift 3
    started "$name" && return 0
    alive "$(pid_in "$pidfile")" "$name" && die "a $name this script did not start runs (pid $(pid_in "$pidfile")); stop it first"
    local conf=(-f "$SLURM_CONF")
    [ "$name" = slurmdbd ] && conf=()  # slurmdbd has no -f: it reads slurmdbd.conf beside $SLURM_CONF
    "$name" "${conf[@]}" >>"$STATE/log/$name.out" 2>&1 || die "$name did not start" "$log"
    wait_until 30 "$name" test -s "$pidfile" || die "$name wrote no pid file" "$log"
    remember "$name" "$(pid_in "$pidfile")"
    wait_until 60 "$name" "$@" || die "$name does not answer" "$log"
    say "$name started (pid $(pid_in "$pidfile"))"
}

# client commands get a time limit: without a controller to reach they retry (and without a slurm.conf they
# look for one through DNS) for a minute
node_state() { timeout 15 sinfo -h -N -o %T 2>/dev/null | head -n1; }
node_ready() { case "$(node_state)" in idle | mixed | allocated | completing) return 0 ;; esac; return 1; }
cluster_known() { sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx normpos; }

up() {
    HOST=$(hostname -s)
    if started slurmd && started slurmctld && started slurmdbd && started mariadbd && node_ready; then
        say "up already ($(node_state), SLURM_CONF=$SLURM_CONF)"
        return 0
    fi
    [ "$(id -u)" = 0 ] || cannot "not root (the daemons run as root, munged as munge)"
    install_missing
    configure
    start_munge
    start_mariadb
    start_daemon slurmdbd "$STATE/run/slurmdbd.pid" "$STATE/log/slurmdbd.log" sacctmgr -n list cluster
    cluster_known || sacctmgr -i add cluster normpos >/dev/null
    start_daemon slurmctld "$STATE/run/slurmctld.pid" "$STATE/log/slurmctld.log" scontrol ping
    start_daemon slurmd "$STATE/run/slurmd.pid" "$STATE/log/slurmd.log" node_ready
    [ "$(node_state)" = idle ] || wait_until 60 idle sh -c '[ "$(sinfo -h -N -o %T)" = idle ]' ||
        say "node is $(node_state), not idle: jobs left from before run on it"
    wait_until 30 sacct sacct -n -X -S now || die "sacct does not answer" "$STATE/log/slurmdbd.log"
    say "up: node $HOST $(node_state), partition local, $CPUS CPUs; SLURM_CONF=$SLURM_CONF"
}

stop_pid() {  # stop_pid NAME: SIGTERM to the pid this script recorded, SIGKILL 30 s later
    local name=$1 pid
    pid=$(pid_in "$STATE/started/$name")
    if alive "$pid" "$name"; then
        kill -TERM "$pid"
        wait_until 30 "$name" sh -c "! [ \"\$(cat /proc/$pid/comm 2>/dev/null)\" = $name ]" || {
            say "$name (pid $pid) ignored SIGTERM: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        }
        say "$name stopped (pid $pid)"
    fi
    rm -f "$STATE/started/$name"
}

down() {
    if [ ! -d "$STATE/started" ] || [ -z "$(ls -A "$STATE/started")" ]; then
        say "nothing of ours runs"
        return 0
    fi
    if started slurmctld; then  # no job may outlive the cluster: slurmstepd keeps running a job without slurmd
        local jobs
        jobs=$(squeue -h -o %A 2>/dev/null | tr '\n' ' ')
        if [ -n "${jobs// /}" ]; then
            say "cancelling jobs $jobs"
            scancel $jobs || true
            wait_until 60 "jobs to end" sh -c '[ -z "$(squeue -h -o %A)" ] && ! pgrep -x slurmstepd' ||
                say "jobs still ending after 60 s: $(squeue -h -o '%A %T' | tr '\n' ' ')"
        fi
    fi
    for name in slurmd slurmctld slurmdbd mariadbd munged; do stop_pid "$name"; done
}

status() {
    if [ -f "$SLURM_CONF" ] && started slurmctld && node_ready && timeout 15 sacct -n -X -S now >/dev/null 2>&1; then
        say "up ($(node_state), SLURM_CONF=$SLURM_CONF)"
    else
        say "down"
        return 1
    fi
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
env) echo "export SLURM_CONF=$SLURM_CONF" ;;
*)
    echo "usage: $0 up|down|status|env" >&2
    exit 2
    ;;
esac
