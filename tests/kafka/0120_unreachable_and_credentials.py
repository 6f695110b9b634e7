"""A service and a Kafka it cannot use (SPEC sections 1 and 5, issue 15).

- A bad client setting (an unknown TIDINGS_KAFKA_ property, a bad value)
  stops the service at start with a message naming the variable.
- Wrong SASL credentials: the service still runs its HTTP server, /healthz
  200 and /readyz 503, says in its log that Kafka refused the credentials,
  does not crash, does not spin (its CPU time stays a fraction of the wall
  time), and neither the wrong nor the right password is in its log, even
  with TIDINGS_LOG_LEVEL=debug and librdkafka's security debug on.
- Kafka unreachable at start (nothing listens at the bootstrap address):
  /healthz 200, /readyz 503 and a log line that says so; once the address
  leads to the cluster (a TCP relay to a node starts listening there) the
  service becomes ready without a restart, having created its topics, and
  its consumers, subscribed before the topics existed, consume them."""
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ktier  # noqa: E402
from tdharness import BIN, Relay, System, free_port, http, log, expect  # noqa: E402


def status(sysm, name, path):
    try:
        with urllib.request.urlopen(sysm.url(name, path), timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, ConnectionError, OSError):
        return None


def wait_status(sysm, name, path, want, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert sysm.procs[name].poll() is None, "%s exited: %s" % (name, sysm.tail(name))
        if status(sysm, name, path) == want:
            return
        time.sleep(0.1)
    raise AssertionError("%s %s never answered %d: %s" % (name, path, want, sysm.tail(name)))


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bad_settings():
    env = dict(os.environ, TIDINGS_BROKERS="127.0.0.1:9", TIDINGS_SECRET="x" * 40)
    for var, value in (("TIDINGS_KAFKA_NO_SUCH_PROPERTY", "1"),
                       ("TIDINGS_KAFKA_SECURITY_PROTOCOL", "carrier-pigeon")):
        e = dict(env, **{var: value})
        data = os.path.join(os.environ.get("TIDINGS_TEST_TMP", "/tmp"), "k-0120-bad")
        p = subprocess.run([BIN, "users", "--data", data, "--port", str(free_port())], env=e,
                           capture_output=True, timeout=60)
        out = (p.stdout + p.stderr).decode("utf-8", "replace")
        assert p.returncode != 0, "%s=%s: the service did not stop: %s" % (var, value, out)
        assert var in out, "%s=%s: the message does not name it: %s" % (var, value, out)
        shutil.rmtree(data, ignore_errors=True)
        log("ok   %s=%s stops the service: %s" % (var, value, out.strip().splitlines()[-1][:160]))


def wrong_password(kc):
    wrong = "wrong-" + kc.password[::-1]
    sysm = System("k-0120-cred", ["users"], dict(kc.sasl_env(wrong), **{
        "TIDINGS_LOG_LEVEL": "debug", "TIDINGS_KAFKA_DEBUG": "security,broker,conf"}))
    try:
        sysm.start_broker()
        sysm.start("users", brokers=kc.sasl_ssl)
        wait_status(sysm, "users", "/healthz", 200)
        log("ok   /healthz 200 with a wrong SASL password")
        # Some seconds of refusals: never ready, never dead, never spinning.
        pid = sysm.procs["users"].pid
        time.sleep(2)
        c0, t0 = cpu_seconds(pid), time.time()
        for _ in range(8):
            assert status(sysm, "users", "/readyz") == 503, "ready with a wrong password"
            assert sysm.procs["users"].poll() is None, "exited: " + sysm.tail("users")
            time.sleep(1)
        used, wall = cpu_seconds(pid) - c0, time.time() - t0
        assert used < 0.5 * wall, "%.1f s CPU in %.1f s: a busy loop" % (used, wall)
        log("ok   /readyz 503 for %.0f s, %.2f s of CPU meanwhile" % (wall, used))
        text = open(os.path.join(sysm.dir, "users.log")).read()
        assert "refused the credentials" in text, "no clear log line: " + sysm.tail("users")
        assert wrong not in text, "the wrong password is in the log"
        assert kc.password not in text, "the password is in the log"
        line = [x for x in text.splitlines() if "refused the credentials" in x][0]
        log("ok   log says: %s" % line[:220])
        log("ok   no password in %d log lines at debug level" % len(text.splitlines()))
    finally:
        codes = sysm.stop()
    assert codes["users"] == 0, "users did not stop cleanly: %s" % sysm.tail("users")
    shutil.rmtree(sysm.dir, ignore_errors=True)


def unreachable_then_ready(kc):
    """The notifications service, whose /readyz also needs its live
    consumer to hold partitions: its consumers subscribe to topics that do
    not exist yet, and must find them once the service created them."""
    port = free_port()
    relay = Relay(port, int(kc.plaintext.split(",")[0].rsplit(":", 1)[1]))
    sysm = System("k-0120-late", ["users", "notifications"])
    ok = False
    try:
        sysm.start_broker()
        sysm.start("notifications", brokers="127.0.0.1:%d" % port)
        wait_status(sysm, "notifications", "/healthz", 200)
        for _ in range(3):
            assert status(sysm, "notifications", "/readyz") == 503, "ready without Kafka"
            time.sleep(1)
        text = open(os.path.join(sysm.dir, "notifications.log")).read()
        assert "cannot reach Kafka" in text and "starting anyway" in text, \
            sysm.tail("notifications")
        log("ok   Kafka unreachable: /healthz 200, /readyz 503, log says so")

        relay.start()
        t0 = time.time()
        wait_status(sysm, "notifications", "/readyz", 200, timeout=120)
        log("ok   ready %.1f s after Kafka became reachable, no restart" % (time.time() - t0))
        topics = {t["topic"] for t in ktier.metadata(kc)["topics"]}
        assert sysm.prefix + "notifications" in topics, "the topics were not created"
        # Its rule consumer consumes the topics made late: a registration
        # becomes a welcome notification.
        sysm.start("users")
        sysm.wait_ready("users")
        st, body = http("POST", sysm.url("users", "/users"),
                        body={"email": "late@example.com", "password": "late late late",
                              "name": "Late"})
        expect(st, 201, "POST /users", body)
        st, body = http("POST", sysm.url("users", "/login"),
                        body={"email": "late@example.com", "password": "late late late"})
        expect(st, 200, "POST /login", body)
        token = body["token"]
        deadline = time.time() + 60
        while True:
            st, body = http("GET", sysm.url("notifications", "/notifications"), token=token)
            expect(st, 200, "GET /notifications", body)
            if any(n["type"] == "UserRegisteredEvent" for n in body["notifications"]):
                break
            assert time.time() < deadline, "no welcome notification: %s" % body
            time.sleep(0.5)
        log("ok   the late service's consumers consume: the welcome notification arrived")
        ok = True
    finally:
        codes = sysm.stop()
        relay.stop()
        if not ok:
            for n in sysm.procs:
                sys.stderr.write("---- %s log:%s\n" % (n, sysm.tail(n, 40)))
    assert not any(codes.values()), "a service did not stop cleanly: %s" % codes
    shutil.rmtree(sysm.dir, ignore_errors=True)


def main():
    os.environ["TIDINGS_TEST_KAFKA"] = "plaintext"
    kc = ktier.cluster()
    bad_settings()
    wrong_password(ktier.cluster("sasl_ssl"))
    unreachable_then_ready(kc)
    log("PASS")


if __name__ == "__main__":
    main()
