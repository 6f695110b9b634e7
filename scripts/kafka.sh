#!/usr/bin/env bash
# A real Apache Kafka cluster on loopback, for trying tidings on the real
# engine and for the `kafka` test tier: 3 KRaft nodes in combined mode (each
# broker and controller), small heaps, two client listeners per node:
#   PLAINTEXT                 no TLS, no authentication
#   SASL_SSL, SCRAM-SHA-512   a CA and broker certificates made here with
#                             openssl, one user (tidings) with a random
#                             password, created by `kafka-storage format
#                             --add-scram`
# Brokers talk to each other and to the controllers over PLAINTEXT.
#
# usage: scripts/kafka.sh fetch | start [--fresh] | stop | status | env | clean
#
#   fetch   resolves the broker (org.apache.kafka:kafka_2.13, scripts/kafka/pom.xml)
#           and its run-time dependencies from Maven Central into $KAFKA_DIR/lib,
#           with the Maven repository in $KAFKA_DIR/m2; a second run fetches nothing
#   start   fetch; then, the first time, makes the certificates, formats the
#           storage and starts the 3 JVMs; later it starts whichever node is not
#           running (on the data it had) and leaves the others alone. Waits until
#           every broker is in the metadata of both listeners; prints the bootstrap
#           lists and client settings and writes them to
#           $KAFKA_DIR/cluster/cluster.env (sourceable). --fresh stops the cluster
#           and deletes its data first.
#   stop    stops exactly the JVMs start started (pid files), SIGTERM then SIGKILL
#   status  which nodes run; exit 0 if all of them do
#   env     prints cluster.env (for `eval "$(scripts/kafka.sh env)"`)
#   clean   stop, then delete the cluster's data (keeps the fetched jars)
#
# Environment:
#   KAFKA_DIR        where everything lives (default: <repo>/build/kafka)
#   KAFKA_PORT_BASE  first port (default 19092); node N (1..3) listens on
#                    base+N-1 (PLAINTEXT), base+10+N-1 (SASL_SSL) and
#                    base+20+N-1 (controller). If one of them is taken when a
#                    new cluster starts, the next base 100 higher is tried.
#   KAFKA_HEAP       JVM heap options per node (default -Xmx384m -Xms128m)
#   KAFKA_START_TIMEOUT  seconds start waits for the cluster (default 120)
# (Not TIDINGS_KAFKA_*: those are librdkafka properties for tidings' clients.)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KAFKA_DIR=${KAFKA_DIR:-$ROOT/build/kafka}
LIB=$KAFKA_DIR/lib
M2=$KAFKA_DIR/m2
CLUSTER=$KAFKA_DIR/cluster
POM=$ROOT/scripts/kafka/pom.xml
NODES=3
HEAP=${KAFKA_HEAP:--Xmx384m -Xms128m}
START_TIMEOUT=${KAFKA_START_TIMEOUT:-120}
SASL_USER=tidings

say() { echo "kafka.sh: $*" >&2; }
die() {
    say "$*"
    exit 1
}
now_ms() { date +%s%3N; }
since() { awk -v a="$1" -v b="$(now_ms)" 'BEGIN { printf "%.1f s", (b - a) / 1000 }'; }

need() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || die "$c is missing (scripts/deps.sh installs it)"
    done
}

# ---- fetch -----------------------------------------------------------------

fetch() {
    local stamp want t0
    want=$(sha256sum "$POM" | cut -d' ' -f1)
    stamp=$LIB/.pom.sha256
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        say "broker jars cached in $LIB"
        return 0
    fi
    need java mvn
    t0=$(now_ms)
    say "fetching the Kafka broker (scripts/kafka/pom.xml) into $LIB ..."
    rm -rf "$LIB.tmp"
    mkdir -p "$M2"
    # -B: no progress bars; the Maven repository under the build folder, so
    # nothing outside it is touched and a second fetch downloads nothing.
    if ! mvn -B -q -f "$POM" -Dmaven.repo.local="$M2" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$LIB.tmp" >"$KAFKA_DIR/fetch.log" 2>&1; then
        cat "$KAFKA_DIR/fetch.log" >&2
        die "mvn could not resolve the broker (log: $KAFKA_DIR/fetch.log)"
    fi
    ls "$LIB.tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || die "mvn copied no kafka_2.13 jar into $LIB.tmp"
    rm -rf "$LIB"
    mv "$LIB.tmp" "$LIB"
    echo "$want" >"$stamp"
    say "fetched $(ls "$LIB"/*.jar | wc -l) jars ($(du -sh "$LIB" | cut -f1)) in $(since "$t0")"
}

# ---- cluster layout ----------------------------------------------------------

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

ports_free() { # ports_free BASE
    local n
    for n in $(seq 0 $((NODES - 1))); do
        port_free $(($1 + n)) && port_free $(($1 + 10 + n)) && port_free $(($1 + 20 + n)) || return 1
    done
}

plain_port() { echo $((BASE + $1 - 1)); }
sasl_port() { echo $((BASE + 10 + $1 - 1)); }
ctrl_port() { echo $((BASE + 20 + $1 - 1)); }

bootstrap() { # bootstrap plain|sasl
    local n out=""
    for n in $(seq 1 $NODES); do
        out+="${out:+,}127.0.0.1:$("$1"_port "$n")"
    done
    echo "$out"
}

# The JVM of node N if it runs: its pid, checked against /proc so that a
# recycled pid is never taken for ours.
node_pid() {
    local f=$CLUSTER/node-$1.pid pid
    [ -f "$f" ] || return 1
    pid=$(cat "$f")
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "kafka.Kafka $CLUSTER/node-$1.properties" || return 1
    echo "$pid"
}

running_count() {
    local n c=0
    for n in $(seq 1 $NODES); do node_pid "$n" >/dev/null && c=$((c + 1)); done
    echo "$c"
}

make_certs() {
    local d=$CLUSTER/tls n
    [ -f "$d/ca.pem" ] && [ -f "$d/node-$NODES.keystore.pem" ] && return 0
    need openssl
    rm -rf "$d"
    mkdir -p "$d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
        -subj "/CN=tidings local Kafka CA" -keyout "$d/ca.key" -out "$d/ca.pem" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$d/ext.cnf"
    for n in $(seq 1 $NODES); do
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/node-$n.key" 2>/dev/null
        openssl req -new -key "$d/node-$n.key" -subj "/CN=localhost/OU=node-$n" -out "$d/node-$n.csr"
        openssl x509 -req -in "$d/node-$n.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
            -days 3650 -extfile "$d/ext.cnf" -out "$d/node-$n.pem" 2>/dev/null
        # A PEM keystore: the PKCS#8 key, then the chain.
        cat "$d/node-$n.key" "$d/node-$n.pem" "$d/ca.pem" >"$d/node-$n.keystore.pem"
        chmod 600 "$d/node-$n.key" "$d/node-$n.keystore.pem"
    done
    chmod 600 "$d/ca.key"
}

write_node_config() { # write_node_config N PASSWORD
    local n=$1 voters="" k
    for k in $(seq 1 $NODES); do voters+="${voters:+,}$k@127.0.0.1:$(ctrl_port "$k")"; done
    touch "$CLUSTER/node-$n.properties"
    chmod 600 "$CLUSTER/node-$n.properties"
    cat >"$CLUSTER/node-$n.properties" <<EOF
# Node $n of the tidings local Kafka cluster (written by scripts/kafka.sh).
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$(plain_port "$n"),SASL_SSL://127.0.0.1:$(sasl_port "$n"),CONTROLLER://127.0.0.1:$(ctrl_port "$n")
advertised.listeners=PLAINTEXT://127.0.0.1:$(plain_port "$n"),SASL_SSL://127.0.0.1:$(sasl_port "$n")
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
# SCRAM-SHA-512 with the credential \`kafka-storage format --add-scram\` made,
# and PLAIN (over TLS) for the same user and password: librdkafka before
# 2.6.1 (Debian 12 has 2.0.2) sends a SCRAM nonce that Kafka 4 rejects.
sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$SASL_USER="$2";
ssl.keystore.type=PEM
ssl.keystore.location=$CLUSTER/tls/node-$n.keystore.pem
ssl.client.auth=none
log.dirs=$CLUSTER/node-$n/data
# Clients create their topics (tidings does, with its own settings); a
# typo'd topic name must not quietly become a 1-partition topic.
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=3
offsets.topic.replication.factor=3
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
transaction.state.log.num.partitions=6
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
# A new consumer group gets its partitions at once (the default waits 3 s).
group.initial.rebalance.delay.ms=0
# A broker that dies (kill -9) is fenced, and its partitions get new
# leaders, after 4 s without heartbeats instead of 9.
broker.session.timeout.ms=4000
broker.heartbeat.interval.ms=1000
# Few threads: three nodes share two cores with the tests.
num.network.threads=2
num.io.threads=2
background.threads=2
num.recovery.threads.per.data.dir=1
num.replica.fetchers=1
log.cleaner.threads=1
EOF
}

write_log_config() {
    cat >"$CLUSTER/log4j2.properties" <<'EOF'
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = WARN
EOF
}

write_env() {
    local pw=$1 ca=$CLUSTER/tls/ca.pem mech
    # librdkafka properties in kcat's -F format, each also a TIDINGS_KAFKA_CONFIG file.
    for mech in SCRAM-SHA-512 PLAIN; do
        cat >"$CLUSTER/sasl-$mech.properties" <<EOF
# The SASL_SSL listener of the local cluster, $mech (kcat -F, TIDINGS_KAFKA_CONFIG).
security.protocol=SASL_SSL
sasl.mechanism=$mech
sasl.username=$SASL_USER
sasl.password=$pw
ssl.ca.location=$ca
EOF
        chmod 600 "$CLUSTER/sasl-$mech.properties"
    done
    cat >"$CLUSTER/cluster.env.tmp" <<EOF
# The local Kafka cluster of scripts/kafka.sh (source this file).
KAFKA_PORT_BASE=$BASE
KAFKA_BOOTSTRAP_PLAINTEXT=$(bootstrap plain)
KAFKA_BOOTSTRAP_SASL_SSL=$(bootstrap sasl)
KAFKA_SASL_USERNAME=$SASL_USER
KAFKA_SASL_PASSWORD=$pw
KAFKA_CA=$ca
KAFKA_SCRAM_CONFIG=$CLUSTER/sasl-SCRAM-SHA-512.properties
KAFKA_PLAIN_CONFIG=$CLUSTER/sasl-PLAIN.properties
KAFKA_CLUSTER_DIR=$CLUSTER
EOF
    chmod 600 "$CLUSTER/cluster.env.tmp"
    mv "$CLUSTER/cluster.env.tmp" "$CLUSTER/cluster.env"
}

# The librdkafka version kcat (and so, on Debian, tidings) uses, e.g. 2.0.2.
librdkafka_version() { kcat -V 2>/dev/null | sed -n 's/.*librdkafka \([0-9][0-9.]*\).*/\1/p' | head -n1; }
# True when that librdkafka can do SCRAM with Kafka 4 (the nonce fix of 2.6.1).
scram_ok() {
    local v
    v=$(librdkafka_version)
    [ -n "$v" ] && [ "$(printf '%s\n2.6.1\n' "$v" | sort -V | head -n1)" = 2.6.1 ]
}

print_env() {
    local mech=SCRAM-SHA-512 note=""
    # shellcheck disable=SC1091
    . "$CLUSTER/cluster.env"
    if ! scram_ok; then
        mech=PLAIN
        note=" (librdkafka $(librdkafka_version) here; its SCRAM needs 2.6.1 or later with Kafka 4, hence PLAIN)"
    fi
    cat <<EOF
Kafka $(kafka_version) on loopback, $NODES KRaft nodes (broker+controller), data in $CLUSTER
  PLAINTEXT  $KAFKA_BOOTSTRAP_PLAINTEXT
  SASL_SSL   $KAFKA_BOOTSTRAP_SASL_SSL   (SCRAM-SHA-512 or PLAIN, user $KAFKA_SASL_USERNAME)
Plaintext:
  build/tidings run --brokers $KAFKA_BOOTSTRAP_PLAINTEXT
SASL_SSL$note:
  TIDINGS_BROKERS=$KAFKA_BOOTSTRAP_SASL_SSL \\
  TIDINGS_KAFKA_SECURITY_PROTOCOL=SASL_SSL TIDINGS_KAFKA_SASL_MECHANISM=$mech \\
  TIDINGS_KAFKA_SASL_USERNAME=$KAFKA_SASL_USERNAME TIDINGS_KAFKA_SASL_PASSWORD=$KAFKA_SASL_PASSWORD \\
  TIDINGS_KAFKA_SSL_CA_LOCATION=$KAFKA_CA build/tidings run
  (the same settings: TIDINGS_KAFKA_CONFIG=$CLUSTER/sasl-$mech.properties)
All of it, sourceable: $CLUSTER/cluster.env
EOF
}

kafka_version() {
    local j
    j=$(ls "$LIB"/kafka_2.13-*.jar 2>/dev/null | head -n1)
    j=${j##*/kafka_2.13-}
    echo "${j%.jar}"
}

# The number of brokers the metadata of one listener lists (0 if none answer).
brokers_seen() { # brokers_seen plain|sasl
    local out
    if [ "$1" = plain ]; then
        out=$(kcat -b "$(bootstrap plain)" -L -m 2 -t __tidings_probe 2>/dev/null) || true
    else
        out=$(kcat -F "$CLUSTER/sasl-PLAIN.properties" -b "$(bootstrap sasl)" -L -m 2 \
            -t __tidings_probe 2>/dev/null) || true
    fi
    echo "$out" | sed -n 's/^ *\([0-9][0-9]*\) brokers:.*/\1/p' | head -n1 | grep . || echo 0
}

# SCRAM-SHA-512 on the SASL_SSL listener, checked with a client whose SCRAM
# Kafka 4 accepts (kafka-python; librdkafka only from 2.6.1 on).
scram_works() {
    # shellcheck disable=SC1091
    (. "$CLUSTER/cluster.env" && export KAFKA_BOOTSTRAP_SASL_SSL KAFKA_SASL_USERNAME \
        KAFKA_SASL_PASSWORD KAFKA_CA && /usr/bin/python3 -c '
import os
from kafka import KafkaConsumer
c = KafkaConsumer(bootstrap_servers=os.environ["KAFKA_BOOTSTRAP_SASL_SSL"].split(","),
                  security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                  sasl_plain_username=os.environ["KAFKA_SASL_USERNAME"],
                  sasl_plain_password=os.environ["KAFKA_SASL_PASSWORD"],
                  ssl_cafile=os.environ["KAFKA_CA"], request_timeout_ms=10000,
                  api_version_auto_timeout_ms=10000)
c.topics()
c.close()
') >"$CLUSTER/scram-check.log" 2>&1
}

start_node() { # start_node N
    # setsid: the JVM outlives this script and the terminal or test runner
    # that called it; `stop` ends it by its pid.
    # shellcheck disable=SC2086
    setsid java $HEAP -XX:+UseSerialGC -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$CLUSTER/log4j2.properties" -cp "$LIB/*" \
        kafka.Kafka "$CLUSTER/node-$1.properties" >>"$CLUSTER/node-$1.log" 2>&1 </dev/null 9>&- &
    echo $! >"$CLUSTER/node-$1.pid"
}

format_storage() { # format_storage PASSWORD
    local n cid pids=()
    cid=$(openssl rand -base64 16 | tr '+/' '-_' | tr -d '=\n')
    for n in $(seq 1 $NODES); do
        java -Xmx256m -Dlog4j2.configurationFile="$CLUSTER/log4j2.properties" -cp "$LIB/*" \
            kafka.tools.StorageTool format --config "$CLUSTER/node-$n.properties" \
            --cluster-id "$cid" --add-scram "SCRAM-SHA-512=[name=$SASL_USER,password=$1]" \
            >"$CLUSTER/format-$n.log" 2>&1 9>&- &
        pids+=($!)
    done
    for n in $(seq 1 $NODES); do
        wait "${pids[$((n - 1))]}" || {
            cat "$CLUSTER/format-$n.log" >&2
            die "formatting the storage of node $n failed"
        }
    done
}

# Waits until every broker is in the metadata of both listeners and SCRAM
# works; stops the nodes and fails after START_TIMEOUT.
wait_ready() {
    local n deadline=$(($(date +%s) + START_TIMEOUT))
    while :; do
        for n in $(seq 1 $NODES); do
            node_pid "$n" >/dev/null || {
                tail -n 30 "$CLUSTER/node-$n.log" >&2
                stop_nodes
                die "node $n exited while starting (log: $CLUSTER/node-$n.log)"
            }
        done
        if [ "$(brokers_seen plain)" -eq $NODES ] && [ "$(brokers_seen sasl)" -eq $NODES ]; then
            scram_works || {
                cat "$CLUSTER/scram-check.log" >&2
                stop_nodes
                die "SCRAM-SHA-512 on the SASL_SSL listener does not work"
            }
            return 0
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            stop_nodes
            die "the cluster was not ready within $START_TIMEOUT s (logs: $CLUSTER/node-*.log)"
        fi
        sleep 0.5
    done
}

start() {
    local fresh=0 n pw t0 up started=()
    [ "${1:-}" = "--fresh" ] && fresh=1
    need java kcat openssl
    fetch
    mkdir -p "$CLUSTER"
    exec 9>"$CLUSTER/.lock"
    flock 9
    t0=$(now_ms)
    if [ $fresh -eq 1 ]; then
        stop_nodes
        rm -rf "$CLUSTER"/node-* "$CLUSTER"/cluster.env "$CLUSTER"/sasl-*.properties
    fi
    if [ -f "$CLUSTER/cluster.env" ] && [ -f "$CLUSTER/node-1/data/meta.properties" ]; then
        # The data (and ports) of this cluster: start what is not running,
        # e.g. a node a test killed, and leave the others alone.
        # shellcheck disable=SC1091
        BASE=$(. "$CLUSTER/cluster.env" && echo "$KAFKA_PORT_BASE")
        up=$(running_count)
        if [ "$up" -eq $NODES ] && [ "$(brokers_seen plain)" -eq $NODES ]; then
            say "the cluster already runs"
            print_env
            return 0
        fi
        for n in $(seq 1 $NODES); do
            node_pid "$n" >/dev/null && continue
            port_free "$(plain_port "$n")" && port_free "$(sasl_port "$n")" &&
                port_free "$(ctrl_port "$n")" ||
                die "a port of node $n (base $BASE) is taken by another program; use start --fresh"
            start_node "$n"
            started+=("$n")
        done
    else
        stop_nodes
        rm -rf "$CLUSTER"/node-*
        BASE=${KAFKA_PORT_BASE:-19092}
        for n in $(seq 20); do
            ports_free "$BASE" && break
            [ "$n" -lt 20 ] || die "no free ports from ${KAFKA_PORT_BASE:-19092} on (tried 20 bases)"
            BASE=$((BASE + 100))
        done
        pw=$(openssl rand -hex 16)
        make_certs
        for n in $(seq 1 $NODES); do write_node_config "$n" "$pw"; done
        write_log_config
        format_storage "$pw"
        write_env "$pw"
        for n in $(seq 1 $NODES); do
            start_node "$n"
            started+=("$n")
        done
    fi
    say "started node(s) ${started[*]:-none}, waiting for the cluster ..."
    wait_ready
    say "cluster ready in $(since "$t0")"
    print_env
}

# SIGTERM to every node we started, then SIGKILL to what is left after 20 s.
stop_nodes() {
    local n pid pids=() i
    for n in $(seq 1 $NODES); do
        if pid=$(node_pid "$n"); then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
    done
    [ ${#pids[@]} -gt 0 ] || {
        rm -f "$CLUSTER"/node-*.pid
        return 0
    }
    for i in $(seq 200); do
        local alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ $alive -eq 1 ] || break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    rm -f "$CLUSTER"/node-*.pid
    say "stopped ${#pids[@]} node(s)"
}

status() {
    local n pid up=0
    for n in $(seq 1 $NODES); do
        if pid=$(node_pid "$n"); then
            echo "node $n: running (pid $pid)"
            up=$((up + 1))
        else
            echo "node $n: stopped"
        fi
    done
    [ -f "$CLUSTER/cluster.env" ] && grep BOOTSTRAP "$CLUSTER/cluster.env"
    [ $up -eq $NODES ]
}

case "${1:-}" in
    fetch) mkdir -p "$KAFKA_DIR" && fetch ;;
    start)
        mkdir -p "$KAFKA_DIR"
        shift
        start "$@"
        ;;
    stop)
        [ -d "$CLUSTER" ] || exit 0
        exec 9>"$CLUSTER/.lock"
        flock 9
        stop_nodes
        ;;
    status) status ;;
    env)
        [ -f "$CLUSTER/cluster.env" ] || die "no cluster in $CLUSTER (scripts/kafka.sh start)"
        grep -v '^#' "$CLUSTER/cluster.env"
        ;;
    clean)
        if [ -d "$CLUSTER" ]; then
            exec 9>"$CLUSTER/.lock"
            flock 9
            stop_nodes
            rm -rf "$CLUSTER"
        fi
        ;;
    -h | --help | help) sed -n '2,33p' "$0" ;;
    *)
        sed -n '13,14p' "$0" >&2
        exit 2
        ;;
esac
