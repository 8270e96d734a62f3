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
# Cluster mode (started by `up` too; for the cluster and security tests):
#   a 3-member etcd cluster        clients 127.0.0.1:23792,23793,23794 (peers 23802-23804)
#   a 3-server ZooKeeper ensemble  clients 127.0.0.1:21811,21812,21813 (quorum 28881-28883,
#                                  election 38881-38883)
#   a secured etcd                 127.0.0.1:23791 (peer 23801): TLS with client certificates
#                                  and auth enabled; users root, provider (readwrite on /getty-it/),
#                                  consumer (read on /getty-it/); passwords = "<user>-pw"
#   (ZooKeeper's digest ACLs need no server setting: the single server above serves them.)
#   Test certificates (a CA, a server certificate for 127.0.0.1 / localhost / etcd.getty.test and
#   a client certificate) are generated at run time with openssl in $DIR/tls; none is committed.
#   scripts/servers.sh stop-etcd-member N | kill-etcd-member N | start-etcd-member N
#                                         (N = 1..3; kill = SIGKILL; data kept)
#   scripts/servers.sh etcd-leader        print the member number (1..3) of the etcd leader
#   scripts/servers.sh stop-zk-member N   | kill-zk-member N | start-zk-member N
#   scripts/servers.sh zk-leader          print the server number (1..3) of the ZooKeeper leader
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
ETCD_SECURE_PORT="${GETTY_ETCD_SECURE_PORT:-23791}"
ETCD_SECURE_PEER_PORT=23801
ETCD_CLUSTER_PORTS=(23792 23793 23794)
ETCD_CLUSTER_PEER_PORTS=(23802 23803 23804)
ZK_ENSEMBLE_PORTS=(21811 21812 21813)

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
    command -v openssl >/dev/null 2>&1 || pkgs+=(openssl)
    # protoc + the well-known .proto files: needed to build the etcd-client crate.
    command -v protoc >/dev/null 2>&1 || pkgs+=(protobuf-compiler)
    [[ -f /usr/include/google/protobuf/descriptor.proto ]] || pkgs+=(libprotobuf-dev)
    # `ss` (tests/tcp.rs reads a listener's backlog back with it).
    command -v ss >/dev/null 2>&1 || pkgs+=(iproute2)
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
# Test certificates (generated here, never committed)
# ---------------------------------------------------------------------------------------------
gen_tls() {
    local t="$DIR/tls"
    [[ -f "$t/client.pem" ]] && return 0
    mkdir -p "$t"
    (
        cd "$t"
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=getty-test-ca" \
            -keyout ca.key -out ca.pem 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:etcd.getty.test\nextendedKeyUsage=serverAuth,clientAuth\n' >server.ext
        openssl req -newkey rsa:2048 -nodes -subj "/CN=etcd.getty.test" \
            -keyout server.key -out server.csr 2>/dev/null
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile server.ext -out server.pem 2>/dev/null
        printf 'extendedKeyUsage=clientAuth\n' >client.ext
        openssl req -newkey rsa:2048 -nodes -subj "/CN=getty-test-client" \
            -keyout client.key -out client.csr 2>/dev/null
        openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile client.ext -out client.pem 2>/dev/null
        rm -f ./*.csr ./*.ext
    )
    log "test certificates in $t"
}

# ---------------------------------------------------------------------------------------------
# Secured etcd: TLS (client certificates required) + auth
# ---------------------------------------------------------------------------------------------
secure_ctl() { # etcdctl against the secured etcd
    ETCDCTL_API=3 etcdctl --endpoints="https://127.0.0.1:$ETCD_SECURE_PORT" \
        --cacert="$DIR/tls/ca.pem" --cert="$DIR/tls/client.pem" --key="$DIR/tls/client.key" \
        --dial-timeout=2s --command-timeout=5s "$@"
}

etcd_secure_healthy() {
    secure_ctl --user=root:root-pw endpoint health >/dev/null 2>&1 \
        || secure_ctl endpoint health >/dev/null 2>&1
}

start_etcd_secure() {
    local d="$DIR/etcd-secure"
    mkdir -p "$d"
    gen_tls
    if pid_alive "$DIR/etcd-secure.pid" && etcd_secure_healthy; then
        return 0
    fi
    stop_pidfile "$DIR/etcd-secure.pid" etcd-secure
    wait_port_closed "$ETCD_SECURE_PORT"
    local t="$DIR/tls"
    setsid etcd --name getty-secure --data-dir "$d/data" \
        --listen-client-urls "https://127.0.0.1:$ETCD_SECURE_PORT" \
        --advertise-client-urls "https://127.0.0.1:$ETCD_SECURE_PORT" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_SECURE_PEER_PORT" \
        --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_SECURE_PEER_PORT" \
        --initial-cluster "getty-secure=http://127.0.0.1:$ETCD_SECURE_PEER_PORT" \
        --initial-cluster-state new \
        --cert-file "$t/server.pem" --key-file "$t/server.key" \
        --trusted-ca-file "$t/ca.pem" --client-cert-auth \
        </dev/null >>"$d/etcd.log" 2>&1 &
    echo $! >"$DIR/etcd-secure.pid"
    local i
    for ((i = 0; i < 150; i++)); do
        etcd_secure_healthy && break
        pid_alive "$DIR/etcd-secure.pid" || { tail -20 "$d/etcd.log" >&2; die "secured etcd exited"; }
        sleep 0.1
    done
    etcd_secure_healthy || { tail -20 "$d/etcd.log" >&2; die "secured etcd not healthy after 15 s"; }
    if [[ ! -f "$d/auth-enabled" ]]; then
        secure_ctl user add root:root-pw >/dev/null
        secure_ctl user grant-role root root >/dev/null
        secure_ctl role add getty-rw >/dev/null
        secure_ctl role grant-permission getty-rw --prefix=true readwrite /getty-it/ >/dev/null
        secure_ctl role add getty-ro >/dev/null
        secure_ctl role grant-permission getty-ro --prefix=true read /getty-it/ >/dev/null
        secure_ctl user add provider:provider-pw >/dev/null
        secure_ctl user grant-role provider getty-rw >/dev/null
        secure_ctl user add consumer:consumer-pw >/dev/null
        secure_ctl user grant-role consumer getty-ro >/dev/null
        secure_ctl auth enable >/dev/null
        touch "$d/auth-enabled"
    fi
    log "secured etcd up on 127.0.0.1:$ETCD_SECURE_PORT (TLS + auth; pid $(cat "$DIR/etcd-secure.pid"))"
}

# ---------------------------------------------------------------------------------------------
# Cluster members (etcd and ZooKeeper alike)
# ---------------------------------------------------------------------------------------------
wait_member() { # check-function index logfile what seconds
    local i
    for ((i = 0; i < $5 * 10; i++)); do
        "$1" "$2" && return 0
        sleep 0.1
    done
    tail -20 "$3" >&2
    die "$4 not ready after $5 s"
}

stop_members() { # pidfile-prefix what: stops members 1..3
    local i
    for i in 1 2 3; do stop_pidfile "$DIR/$1$i.pid" "$2 $i"; done
}

# ---------------------------------------------------------------------------------------------
# 3-member etcd cluster
# ---------------------------------------------------------------------------------------------
etcd_member_healthy() { # index 0..2
    ETCDCTL_API=3 etcdctl --endpoints="http://127.0.0.1:${ETCD_CLUSTER_PORTS[$1]}" \
        --dial-timeout=1s --command-timeout=2s endpoint health >/dev/null 2>&1
}

start_etcd_member() { # index 0..2
    local n=$1 d="$DIR/etcd-cluster/m$(($1 + 1))" cluster="" i
    for i in 0 1 2; do
        cluster+="${cluster:+,}getty-c$((i + 1))=http://127.0.0.1:${ETCD_CLUSTER_PEER_PORTS[$i]}"
    done
    mkdir -p "$d"
    local pidfile="$DIR/etcd-c$((n + 1)).pid"
    pid_alive "$pidfile" && return 0
    wait_port_closed "${ETCD_CLUSTER_PORTS[$n]}"
    local state=new
    [[ -d "$d/data" ]] && state=existing
    setsid etcd --name "getty-c$((n + 1))" --data-dir "$d/data" \
        --listen-client-urls "http://127.0.0.1:${ETCD_CLUSTER_PORTS[$n]}" \
        --advertise-client-urls "http://127.0.0.1:${ETCD_CLUSTER_PORTS[$n]}" \
        --listen-peer-urls "http://127.0.0.1:${ETCD_CLUSTER_PEER_PORTS[$n]}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${ETCD_CLUSTER_PEER_PORTS[$n]}" \
        --initial-cluster "$cluster" --initial-cluster-state "$state" \
        --initial-cluster-token getty-test-cluster \
        </dev/null >>"$d/etcd.log" 2>&1 &
    echo $! >"$pidfile"
}

start_etcd_cluster() {
    local i
    for i in 0 1 2; do start_etcd_member "$i"; done
    for i in 0 1 2; do
        wait_member etcd_member_healthy "$i" "$DIR/etcd-cluster/m$((i + 1))/etcd.log" "etcd member $((i + 1))" 20
    done
    log "etcd cluster up on 127.0.0.1:${ETCD_CLUSTER_PORTS[0]},${ETCD_CLUSTER_PORTS[1]},${ETCD_CLUSTER_PORTS[2]}"
}


etcd_leader() {
    local i fields
    for i in 0 1 2; do
        # A member is the leader when its member id is the leader id it reports.
        fields=$(ETCDCTL_API=3 etcdctl --endpoints="http://127.0.0.1:${ETCD_CLUSTER_PORTS[$i]}" \
            --dial-timeout=1s --command-timeout=2s endpoint status -w fields 2>/dev/null) || continue
        if [[ -n "$fields" ]] && [[ "$(grep '"MemberID"' <<<"$fields" | grep -o '[0-9]*$')" == \
            "$(grep '"Leader"' <<<"$fields" | grep -o '[0-9]*$')" ]]; then
            echo $((i + 1))
            return 0
        fi
    done
    die "no etcd leader"
}

# ---------------------------------------------------------------------------------------------
# 3-server ZooKeeper ensemble
# ---------------------------------------------------------------------------------------------
zk_port_says() { # port command -> reply
    {
        exec 3<>"/dev/tcp/127.0.0.1/$1" && printf '%s' "$2" >&3 && timeout 2 cat <&3
    } 2>/dev/null || true
}

zk_member_serving() { # index 0..2: part of a quorum (leader or follower)
    zk_port_says "${ZK_ENSEMBLE_PORTS[$1]}" srvr | grep -qE 'Mode: (leader|follower)'
}

start_zk_member() { # index 0..2
    local n=$1 d="$DIR/zk-ensemble/s$(($1 + 1))" i
    mkdir -p "$d/data"
    local pidfile="$DIR/zk-s$((n + 1)).pid"
    pid_alive "$pidfile" && return 0
    wait_port_closed "${ZK_ENSEMBLE_PORTS[$n]}"
    echo $((n + 1)) >"$d/data/myid"
    {
        printf '%s\n' "tickTime=500" "initLimit=20" "syncLimit=10" \
            "minSessionTimeout=1000" "maxSessionTimeout=60000" "dataDir=$d/data" \
            "clientPort=${ZK_ENSEMBLE_PORTS[$n]}" "clientPortAddress=127.0.0.1" \
            "admin.enableServer=false" "4lw.commands.whitelist=ruok,srvr,stat,mntr,cons"
        for i in 0 1 2; do
            echo "server.$((i + 1))=127.0.0.1:$((28881 + i)):$((38881 + i))"
        done
    } >"$d/zoo.cfg"
    setsid java -Xmx128m -Dzookeeper.log.dir="$d" -Dznode.container.checkIntervalMs=1000 \
        -cp "$ZK_JAR" org.apache.zookeeper.server.quorum.QuorumPeerMain "$d/zoo.cfg" \
        </dev/null >>"$d/zk.log" 2>&1 &
    echo $! >"$pidfile"
}

start_zk_ensemble() {
    local i
    for i in 0 1 2; do start_zk_member "$i"; done
    for i in 0 1 2; do
        wait_member zk_member_serving "$i" "$DIR/zk-ensemble/s$((i + 1))/zk.log" "zookeeper server $((i + 1))" 30
    done
    log "zookeeper ensemble up on 127.0.0.1:${ZK_ENSEMBLE_PORTS[0]},${ZK_ENSEMBLE_PORTS[1]},${ZK_ENSEMBLE_PORTS[2]}"
}


zk_leader() {
    local i
    for i in 0 1 2; do
        if zk_port_says "${ZK_ENSEMBLE_PORTS[$i]}" srvr | grep -q 'Mode: leader'; then
            echo $((i + 1))
            return 0
        fi
    done
    die "no zookeeper leader"
}

kill_pidfile() { # pidfile: SIGKILL, no chance to shut down cleanly
    local pid i
    [[ -f "$1" ]] || return 0
    pid=$(cat "$1")
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    rm -f "$1"
}

member_index() { # N (1..3) -> 0..2
    [[ "${1:-}" =~ ^[123]$ ]] || die "member number must be 1, 2 or 3"
    echo $(($1 - 1))
}

# ---------------------------------------------------------------------------------------------
cmd="${1:-}"
case "$cmd" in
up)
    mkdir -p "$DIR"
    install_packages
    start_etcd
    start_zk
    start_etcd_secure
    start_etcd_cluster
    start_zk_ensemble
    ;;
down)
    stop_etcd
    stop_zk
    stop_pidfile "$DIR/etcd-secure.pid" etcd-secure
    stop_members etcd-c "etcd member"
    stop_members zk-s "zookeeper server"
    rm -rf "$DIR"
    ;;
status)
    if etcd_healthy; then echo "etcd: up (127.0.0.1:$ETCD_PORT)"; else echo "etcd: down"; fi
    if zk_healthy; then echo "zookeeper: up (127.0.0.1:$ZK_PORT)"; else echo "zookeeper: down"; fi
    if etcd_secure_healthy; then echo "secured etcd: up (127.0.0.1:$ETCD_SECURE_PORT)"; else echo "secured etcd: down"; fi
    for i in 0 1 2; do
        if etcd_member_healthy "$i"; then echo "etcd member $((i + 1)): up"; else echo "etcd member $((i + 1)): down"; fi
    done
    for i in 0 1 2; do
        if zk_member_serving "$i"; then echo "zookeeper server $((i + 1)): serving"; else echo "zookeeper server $((i + 1)): down"; fi
    done
    ;;
stop-etcd-member) stop_pidfile "$DIR/etcd-c$(($(member_index "${2:-}") + 1)).pid" "etcd member ${2:-}" ;;
start-etcd-member) start_etcd_member "$(member_index "${2:-}")" ;;
kill-etcd-member) kill_pidfile "$DIR/etcd-c$(($(member_index "${2:-}") + 1)).pid" ;;
etcd-leader) etcd_leader ;;
stop-zk-member) stop_pidfile "$DIR/zk-s$(($(member_index "${2:-}") + 1)).pid" "zookeeper server ${2:-}" ;;
start-zk-member) start_zk_member "$(member_index "${2:-}")" ;;
kill-zk-member) kill_pidfile "$DIR/zk-s$(($(member_index "${2:-}") + 1)).pid" ;;
zk-leader) zk_leader ;;
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
    echo "usage: $0 up|down|status|start-etcd|stop-etcd|restart-etcd|wipe-etcd|start-zk|stop-zk|restart-zk|zkcli ARGS...|stop-etcd-member N|kill-etcd-member N|start-etcd-member N|etcd-leader|stop-zk-member N|kill-zk-member N|start-zk-member N|zk-leader" >&2
    exit 2
    ;;
esac
