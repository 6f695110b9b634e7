"""Helpers of the kafka tier's tests (not a test itself: the glob takes
only files starting with digits): the cluster of scripts/kafka.sh through
tdharness.KafkaCluster, topic metadata and configs with kcat and
kafka-python, killing and restarting a node."""
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from tdharness import KafkaCluster, log  # noqa: E402

SRC = os.environ.get("TIDINGS_SRC") or os.path.join(os.path.dirname(__file__), "..", "..")


def cluster(listener="plaintext"):
    return KafkaCluster(listener)


def metadata(kc, topic=None):
    """kcat's JSON metadata of the cluster (one topic, or all)."""
    args = ["kcat", "-b", kc.plaintext, "-L", "-J", "-m", "10"]
    if topic:
        args += ["-t", topic]
    out = subprocess.run(args, check=True, capture_output=True, timeout=60).stdout
    return json.loads(out)


def topic_configs(kc, topics):
    """{topic: {name: value}} of each topic's configuration, from Kafka
    (DescribeConfigs through kafka-python)."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
    admin = KafkaAdminClient(bootstrap_servers=kc.plaintext.split(","))
    try:
        res = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in topics])
        out = {}
        for r in res:
            for _err, _msg, _type, name, entries in r.resources:
                out[name] = {e[0]: e[1] for e in entries}
        return out
    finally:
        admin.close()


def leaders(kc, topic):
    """{partition: leader node id} of topic."""
    md = metadata(kc, topic)
    t = [x for x in md["topics"] if x["topic"] == topic][0]
    return {p["partition"]: p["leader"] for p in t["partitions"]}


def kill9_node(kc, node):
    pid = kc.node_pid(node)
    assert pid, "node %d is not running" % node
    os.kill(pid, signal.SIGKILL)
    while kc.node_pid(node):
        time.sleep(0.05)
    log("kill -9 Kafka node %d (pid %d)" % (node, pid))


def restart_missing_nodes():
    """scripts/kafka.sh start: starts the nodes that do not run and waits
    until the cluster is whole again."""
    t0 = time.time()
    subprocess.run(["bash", os.path.join(SRC, "scripts", "kafka.sh"), "start"], check=True,
                   stdout=subprocess.DEVNULL, timeout=300)
    log("cluster whole again after %.1f s" % (time.time() - t0))
