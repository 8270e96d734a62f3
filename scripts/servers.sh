#!/usr/bin/env bash
# Throw-away etcd and ZooKeeper servers on loopback for getty-registry's tests.
#
#   scripts/servers.sh up             install missing Debian packages, start both, wait until healthy
#   scripts/servers.sh down           stop both and remove their directories
#   scripts/servers.sh status         print whether each server answers
#   scripts/servers.sh stop-etcd | start-etcd | restart-etcd   (data dir kept across restarts)
#   scripts/servers.sh wipe-etcd      restart etcd with an empty data dir (simulates total data loss)
#   scripts/servers.sh stop-zk   | start-zk   | restart-zk     (data dir kept across restarts)
#   scripts/servers.sh zkcli ARGS...  run ZooKeeper's CLI (ZooKeeperMain) against our server
#
# etcd listens on 127.0.0.1:23790 (peer 23800), ZooKeeper on 127.0.0.1:21810: non-default ports
# so that a system etcd (2379) or ZooKeeper (2181) cannot clash. State lives in
# $GETTY_SERVERS_DIR (default /tmp/getty-servers): data dirs, logs, PID files.
# Tests read GETTY_ETCD / GETTY_ZK (defaults matching the ports above).
# Needs root on Debian 12 to install packages (only when something is missing).
set -euo pipefail

DIR="${GETTY_SERVERS_DIR:-/tmp/getty-servers}"
ETCD_PORT="${GETTY_ETCD_PORT:-23790}"
ETCD_PEER_PORT="${GETTY_ETCD_PEER_PORT:-23800}"
ZK_PORT="${GETTY_ZK_PORT:-21810}"
ZK_JAR=/usr/share/java/zookeeper.jar

log() { echo "servers.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# Packages
# ---------------------------------------------------------------------------------------------
install_packages() {
    local pkgs=()
    command -v etcd >/dev/null 2>&1 || pkgs+=(etcd-server)
    command -v etcdctl >/dev/null 2>&1 || pkgs+=(etcd-client)
    [[ -f "$ZK_JAR" ]] || pkgs+=(libzookeeper-java)
    command -v java >/dev/null 2>&1 || pkgs+=(default-jre-headless)
    # protoc + the well-known .proto files: needed to build the etcd-client crate.
    command -v protoc >/dev/null 2>&1 || pkgs+=(protobuf-compiler)
    [[ -f /usr/include/google/protobuf/descriptor.proto ]] || pkgs+=(libprotobuf-dev)
    ((${#pkgs[@]} == 0)) && return 0
    log "installing ${pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends "${pkgs[@]}" >"$DIR/apt.log" 2>&1; then
        log "apt-get install failed; running apt-get update and retrying"
        apt-get update >>"$DIR/apt.log" 2>&1 || true
        apt-get install -y --no-install-recommends "${pkgs[@]}" >>"$DIR/apt.log" 2>&1 \
            || { tail -20 "$DIR/apt.log" >&2; die "could not install ${pkgs[*]}"; }
    fi
}

# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
pid_alive() { # pidfile
    [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

stop_pidfile() { # pidfile name
    local pidfile=$1 name=$2 pid i
    if [[ -f "$pidfile" ]]; then
        pid=$(cat "$pidfile")
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for ((i = 0; i < 100; i++)); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            if kill -0 "$pid" 2>/dev/null; then
                log "$name (pid $pid) ignored SIGTERM; sending SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
                for ((i = 0; i < 50; i++)); do
                    kill -0 "$pid" 2>/dev/null || break
                    sleep 0.1
                done
            fi
        fi
        rm -f "$pidfile"
    fi
}

port_open() { # port
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_port_closed() { # port
    local i
    for ((i = 0; i < 100; i++)); do
        port_open "$1" || return 0
        sleep 0.1
    done
    die "port $1 is still in use (another server running there?)"
}

# ---------------------------------------------------------------------------------------------
# etcd
# ---------------------------------------------------------------------------------------------
etcd_healthy() {
    ETCDCTL_API=3 etcdctl --endpoints="http://127.0.0.1:$ETCD_PORT" --dial-timeout=1s \
        --command-timeout=2s endpoint health >/dev/null 2>&1
}

start_etcd() {
    mkdir -p "$DIR/etcd"
    if pid_alive "$DIR/etcd.pid" && etcd_healthy; then
        return 0
    fi
    stop_pidfile "$DIR/etcd.pid" etcd
    wait_port_closed "$ETCD_PORT"
    # stdin/stdout/stderr detached so that a caller capturing our output does not wait for etcd.
    setsid etcd --name getty-test --data-dir "$DIR/etcd/data" \
        --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "getty-test=http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster-state new \
        </dev/null >>"$DIR/etcd/etcd.log" 2>&1 &
    echo $! >"$DIR/etcd.pid"
    local i
    for ((i = 0; i < 150; i++)); do
        if etcd_healthy; then
            log "etcd up on 127.0.0.1:$ETCD_PORT (pid $(cat "$DIR/etcd.pid"))"
            return 0
        fi
        pid_alive "$DIR/etcd.pid" || { tail -20 "$DIR/etcd/etcd.log" >&2; die "etcd exited"; }
        sleep 0.1
    done
    tail -20 "$DIR/etcd/etcd.log" >&2
    die "etcd not healthy after 15 s"
}

stop_etcd() {
    stop_pidfile "$DIR/etcd.pid" etcd
}

# ---------------------------------------------------------------------------------------------
# ZooKeeper (standalone server straight from libzookeeper-java's jar)
# ---------------------------------------------------------------------------------------------
zk_healthy() {
    local reply
    reply=$({
        exec 3<>"/dev/tcp/127.0.0.1/$ZK_PORT" && printf 'ruok' >&3 && read -r -t 2 -n 4 r <&3 && printf '%s' "$r"
    } 2>/dev/null) || true
    [[ "$reply" == imok ]]
}

start_zk() {
    mkdir -p "$DIR/zk/data"
    if pid_alive "$DIR/zk.pid" && zk_healthy; then
        return 0
    fi
    stop_pidfile "$DIR/zk.pid" zookeeper
    wait_port_closed "$ZK_PORT"
    cat >"$DIR/zk/zoo.cfg" <<EOF
tickTime=1000
initLimit=10
syncLimit=5
minSessionTimeout=2000
maxSessionTimeout=60000
dataDir=$DIR/zk/data
clientPort=$ZK_PORT
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,stat,mntr,cons,dump
EOF
    # Container nodes (getty-registry's parents) are checked every second instead of every
    # minute, so that tests see empty parents go.
    setsid java -Xmx256m -Dzookeeper.log.dir="$DIR/zk" -Dznode.container.checkIntervalMs=1000 \
        -cp "$ZK_JAR" org.apache.zookeeper.server.ZooKeeperServerMain "$DIR/zk/zoo.cfg" \
        </dev/null >>"$DIR/zk/zk.log" 2>&1 &
    echo $! >"$DIR/zk.pid"
    local i
    for ((i = 0; i < 300; i++)); do
        if zk_healthy; then
            log "zookeeper up on 127.0.0.1:$ZK_PORT (pid $(cat "$DIR/zk.pid"))"
            return 0
        fi
        pid_alive "$DIR/zk.pid" || { tail -20 "$DIR/zk/zk.log" >&2; die "zookeeper exited"; }
        sleep 0.1
    done
    tail -20 "$DIR/zk/zk.log" >&2
    die "zookeeper not healthy after 30 s"
}

stop_zk() {
    stop_pidfile "$DIR/zk.pid" zookeeper
}

zkcli() {
    [[ -f "$ZK_JAR" ]] || die "$ZK_JAR missing: run '$0 up' first"
    java -Xmx128m -cp "$ZK_JAR" org.apache.zookeeper.ZooKeeperMain \
        -server "${GETTY_ZK:-127.0.0.1:$ZK_PORT}" "$@" </dev/null
}

# ---------------------------------------------------------------------------------------------
cmd="${1:-}"
case "$cmd" in
up)
    mkdir -p "$DIR"
    install_packages
    start_etcd
    start_zk
    ;;
down)
    stop_etcd
    stop_zk
    rm -rf "$DIR"
    ;;
status)
    if etcd_healthy; then echo "etcd: up (127.0.0.1:$ETCD_PORT)"; else echo "etcd: down"; fi
    if zk_healthy; then echo "zookeeper: up (127.0.0.1:$ZK_PORT)"; else echo "zookeeper: down"; fi
    ;;
start-etcd) mkdir -p "$DIR" && start_etcd ;;
stop-etcd) stop_etcd ;;
restart-etcd) stop_etcd && mkdir -p "$DIR" && start_etcd ;;
wipe-etcd) stop_etcd && rm -rf "$DIR/etcd/data" && mkdir -p "$DIR" && start_etcd ;;
start-zk) mkdir -p "$DIR" && start_zk ;;
stop-zk) stop_zk ;;
restart-zk) stop_zk && mkdir -p "$DIR" && start_zk ;;
zkcli)
    shift
    zkcli "$@"
    ;;
*)
    echo "usage: $0 up|down|status|start-etcd|stop-etcd|restart-etcd|wipe-etcd|start-zk|stop-zk|restart-zk|zkcli ARGS..." >&2
    exit 2
    ;;
esac
