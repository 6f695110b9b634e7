#!/usr/bin/env bash
# compare_kafka.sh — ../shared/perf/compare.sh's notification workload, side
# by side with the Node.js peer, on a real Kafka cluster instead of a mock
# broker: compare.sh always starts its own mock cluster and has no
# --brokers, so this wrapper runs the same rig (notifybench, node-notify,
# built and installed in compare.sh's cache folder) against --brokers /
# TIDINGS_BROKERS. Each side and run gets topics of its own (a fresh
# TIDINGS_TOPIC_PREFIX, created with 6 partitions and replication
# min(3, brokers) through kafka-python, deleted afterwards), so no side
# reads another's records. The result lines of both sides and the ratios
# are printed at the end, as compare.sh prints them.
#
# usage: bench/compare_kafka.sh [--brokers LIST] [--tidings PATH] [--rig DIR]
#            [--users U] [--events N] [--streams-per-user S] [--timeout T]
#            [--repeat N] [--only node|tidings]
#   --brokers  PLAINTEXT bootstrap list (default TIDINGS_BROKERS, else the
#              cluster of scripts/kafka.sh in build/kafka)
#   --rig      the folder of compare.sh (default ../shared/perf beside the repo)
#
# Only processes this script started are stopped, by their pid.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rig=$root/../shared/perf
[ -d "$rig" ] || rig=/work/shared/perf
brokers=${TIDINGS_BROKERS:-}
tidings=$root/build/tidings
users=1000 spu=1 events=20000 timeout=60 repeat=1 only=""
while [ $# -gt 0 ]; do
    case "$1" in
        --brokers) brokers=$2; shift 2 ;;
        --tidings) tidings=$2; shift 2 ;;
        --rig) rig=$2; shift 2 ;;
        --users) users=$2; shift 2 ;;
        --events) events=$2; shift 2 ;;
        --streams-per-user) spu=$2; shift 2 ;;
        --timeout) timeout=$2; shift 2 ;;
        --repeat) repeat=$2; shift 2 ;;
        --only) only=$2; shift 2 ;;
        -h | --help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "compare_kafka.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
if [ -z "$brokers" ] && [ -f "$root/build/kafka/cluster/cluster.env" ]; then
    # shellcheck disable=SC1091
    brokers=$(. "$root/build/kafka/cluster/cluster.env" && echo "$KAFKA_BOOTSTRAP_PLAINTEXT")
fi
[ -n "$brokers" ] || { echo "compare_kafka.sh: no brokers (--brokers, TIDINGS_BROKERS or make kafka)" >&2; exit 2; }
[ -x "$tidings" ] || { echo "compare_kafka.sh: $tidings is not an executable" >&2; exit 2; }

# The rig as compare.sh caches it.
here="${TIDINGS_PERF_CACHE:-${TMPDIR:-/tmp}/tidings-perf-rig}"
mkdir -p "$here"
cp -f --no-preserve=mode "$rig/notifybench.c" "$rig/mockbroker.c" "$rig/Makefile" "$here/"
peer="$here/node-notify"
mkdir -p "$peer"
cp -rf --no-preserve=mode "$rig/node-notify/src" "$rig/node-notify/package.json" \
    "$rig/node-notify/package-lock.json" "$peer/"
make -s -C "$here" notifybench
[ -d "$peer/node_modules/kafkajs" ] || (cd "$peer" && npm ci --no-audit --no-fund --loglevel=error)
ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d "${TMPDIR:-/tmp}/notifybench-kafka.XXXXXX")
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
started=()
stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local pid
    for pid in "${started[@]}"; do stop_pid "$pid"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
    local p=$1
    while ! port_free "$p"; do p=$((p + 1)); done
    echo "$p"
}

# topics create|delete PREFIX: the SPEC topics under PREFIX.
topics() {
    /usr/bin/python3 - "$brokers" "$1" "$2" <<'PY'
import sys, time
from kafka.admin import KafkaAdminClient, NewTopic
brokers, what, prefix = sys.argv[1].split(","), sys.argv[2], sys.argv[3]
names = [prefix + t for t in ("users", "products", "reservations", "orders", "payments",
                              "notifications")]
a = KafkaAdminClient(bootstrap_servers=brokers)
try:
    if what == "create":
        n = len(a.describe_cluster()["brokers"]) if hasattr(a, "describe_cluster") else 3
        r = min(3, n)
        a.create_topics([NewTopic(t, 6, r, topic_configs={"min.insync.replicas": "2"} if r >= 3 else {})
                         for t in names], timeout_ms=30000)
        from kafka import KafkaConsumer
        c = KafkaConsumer(bootstrap_servers=brokers)
        deadline = time.time() + 30
        while not set(names) <= c.topics() and time.time() < deadline:
            time.sleep(0.2)
        c.close()
    else:
        a.delete_topics(names + [t + ".DLT" for t in names if t + ".DLT" in a.list_topics()],
                        timeout_ms=30000)
finally:
    a.close()
PY
}

run_side() { # run_side NAME RUN
    local name=$1 run=$2 port svc_pid rc prefix
    prefix="tidings-cmp-$name-$run-$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')."
    topics create "$prefix"
    case "$name" in
        node)
            port=$(free_port 18085)
            env TIDINGS_BROKERS="$brokers" TIDINGS_SECRET="$secret" TIDINGS_TOPIC_PREFIX="$prefix" \
                TIDINGS_NOTIFICATIONS_PORT="$port" node "$peer/src/index.js" >"$work/node.log" 2>&1 &
            svc_pid=$!
            ;;
        tidings)
            port=$(free_port 18185)
            mkdir -p "$work/tidings-data-$run"
            env TIDINGS_BROKERS="$brokers" TIDINGS_SECRET="$secret" TIDINGS_TOPIC_PREFIX="$prefix" \
                TIDINGS_NOTIFICATIONS_PORT="$port" TIDINGS_DATA_DIR="$work/tidings-data-$run" \
                "$tidings" notifications >"$work/tidings.log" 2>&1 &
            svc_pid=$!
            ;;
    esac
    started+=("$svc_pid")
    echo "== $name run $run: pid $svc_pid, port $port, brokers $brokers, prefix $prefix" >&2
    set +e
    timeout $((timeout * 4 + 600)) "$here/notifybench" --brokers "$brokers" \
        --url "http://127.0.0.1:$port" --secret "$secret" --topic-prefix "$prefix" \
        --users "$users" --streams-per-user "$spu" --events "$events" --timeout "$timeout" \
        --pid "$svc_pid" >"$work/$name.$run.result" 2>"$work/$name.$run.bench.err"
    rc=$?
    set -e
    sed 's/^/   /' "$work/$name.$run.bench.err" >&2
    [ $rc -eq 0 ] || echo "   (notifybench exit status $rc: see $work)" >&2
    stop_pid "$svc_pid"
    topics delete "$prefix" || true
}

field() { tr ' ' '\n' <"$1" | sed -n "s/^$2=//p"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'; }
median() {
    awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); k = kv[1];
               if (NR == 1) order[i] = k; v[k, NR] = kv[2] } }
         END { for (i = 1; order[i] != ""; i++) { k = order[i]; n = 0
                   for (r = 1; r <= NR; r++) a[++n] = v[k, r] + 0
                   for (x = 2; x <= n; x++) for (y = x; y > 1 && a[y-1] > a[y]; y--) { t = a[y]; a[y] = a[y-1]; a[y-1] = t }
                   m = (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
                   printf "%s%s=%s", (i > 1 ? " " : ""), k, m }
               print "" }' "$@"
}

sides=()
[ "$only" = "tidings" ] || sides+=(node)
[ "$only" = "node" ] || sides+=(tidings)
for run in $(seq "$repeat"); do
    for side in "${sides[@]}"; do run_side "$side" "$run"; done
done

echo "workload: real Kafka at $brokers users=$users streams_per_user=$spu events=$events repeat=$repeat node=$(node --version) loadavg=$(cut -d' ' -f1-3 /proc/loadavg)"
for side in "${sides[@]}"; do
    label=$([ "$side" = node ] && echo "node-notify" || echo "tidings")
    files=()
    for run in $(seq "$repeat"); do
        f="$work/$side.$run.result"
        [ -s "$f" ] || continue
        files+=("$f")
        [ "$repeat" -eq 1 ] || echo "$label run $run: $(cat "$f")"
    done
    [ ${#files[@]} -gt 0 ] || { echo "$label: no result"; continue; }
    median "${files[@]}" >"$work/$side.result"
    echo "$label: $(cat "$work/$side.result")"
done
if [ -s "$work/node.result" ] && [ -s "$work/tidings.result" ]; then
    n="$work/node.result" t="$work/tidings.result"
    echo "ratios: throughput tidings/node=$(ratio "$(field "$t" throughput)" "$(field "$n" throughput)")" \
        "p50 node/tidings=$(ratio "$(field "$n" p50_ms)" "$(field "$t" p50_ms)")" \
        "p99 node/tidings=$(ratio "$(field "$n" p99_ms)" "$(field "$t" p99_ms)")" \
        "rss_after node/tidings=$(ratio "$(field "$n" rss_after_kib)" "$(field "$t" rss_after_kib)")"
fi
echo "logs: $work"
