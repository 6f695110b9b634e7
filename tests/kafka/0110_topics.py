"""Topics on a real cluster (SPEC section 1, issue 15): a service creates
every SPEC topic and its .DLT through CreateTopics with TIDINGS_PARTITIONS,
TIDINGS_REPLICATION and TIDINGS_RETENTION_MS, and min.insync.replicas=2 at
replication 3, as Kafka then describes them. Three services starting at
once all create the same topics (TOPIC_ALREADY_EXISTS is fine: all become
ready). A service configured for more partitions and another retention
than the existing topics keeps them and logs a warning naming both
values."""
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ktier  # noqa: E402
from tdharness import System, log  # noqa: E402

CATALOG = ["users", "products", "reservations", "orders", "payments", "notifications"]


def main():
    os.environ["TIDINGS_TEST_KAFKA"] = "plaintext"
    kc = ktier.cluster()
    sysm = System("k-0110", ["users", "products", "orders"], {
        "TIDINGS_PARTITIONS": "4", "TIDINGS_REPLICATION": "3",
        "TIDINGS_RETENTION_MS": "3600000"})
    ok = False
    try:
        sysm.start_broker()
        # Three at once: they race to create the same twelve topics.
        for svc in ("users", "products", "orders"):
            sysm.start(svc)
        for svc in ("users", "products", "orders"):
            sysm.wait_ready(svc)
        log("three services ready, having raced to create the topics")

        md = ktier.metadata(kc)
        mine = {t["topic"]: t for t in md["topics"] if t["topic"].startswith(sysm.prefix)}
        want = [sysm.prefix + s for s in CATALOG] + [sysm.prefix + s + ".DLT" for s in CATALOG]
        assert sorted(mine) == sorted(want), "topics: %s, wanted %s" % (sorted(mine), want)
        for name, t in mine.items():
            assert len(t["partitions"]) == 4, "%s has %d partitions" % (name, len(t["partitions"]))
            for p in t["partitions"]:
                assert len(p["replicas"]) == 3, "%s[%d] replicas %s" % (name, p["partition"],
                                                                         p["replicas"])
        conf = ktier.topic_configs(kc, want)
        for name in want:
            assert conf[name]["retention.ms"] == "3600000", (name, conf[name]["retention.ms"])
            assert conf[name]["min.insync.replicas"] == "2", (name,
                                                              conf[name]["min.insync.replicas"])
        log("ok   12 topics with 4 partitions, replication 3, retention.ms 3600000, "
            "min.insync.replicas 2")

        # Another configuration on the same topics: kept, and said.
        sysm.start("payments", env={"TIDINGS_PARTITIONS": "8", "TIDINGS_RETENTION_MS": "7200000"})
        sysm.wait_ready("payments")
        text = open(os.path.join(sysm.dir, "payments.log")).read()
        warns = [json.loads(line).get("msg", "") if line.startswith("{") else line
                 for line in text.splitlines() if "warn" in line]
        orders = sysm.prefix + "orders"
        part_warn = [w for w in warns if orders + " has 4 partitions" in w and
                     "TIDINGS_PARTITIONS=8" in w]
        ret_warn = [w for w in warns if orders + " has retention.ms=3600000" in w and
                    "TIDINGS_RETENTION_MS=7200000" in w]
        assert part_warn, "no warning naming 4 and 8 partitions of %s: %s" % (orders, warns[:5])
        assert ret_warn, "no warning naming both retentions of %s: %s" % (orders, warns[:5])
        assert len(ktier.metadata(kc, orders)["topics"][0]["partitions"]) == 4
        log("ok   mismatched existing topics kept and warned about: %s" % part_warn[0])
        ok = True
    finally:
        codes = sysm.stop()
        if ok and any(codes.values()):
            ok = False
            log("exit codes: %s" % codes)
        if ok:
            shutil.rmtree(sysm.dir, ignore_errors=True)
        else:
            for n in sysm.procs:
                sys.stderr.write("---- %s log:%s\n" % (n, sysm.tail(n)))
    if not ok:
        sys.exit(1)
    log("PASS")


if __name__ == "__main__":
    main()
