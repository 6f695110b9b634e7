"""Shared harness of the e2e Python tests: timestamped logging, free TCP
ports, the JSON-over-HTTP helpers, wait_for, an SMTP sink (SmtpHandler,
start_smtp) and System, the processes of a run. Not a test itself (the
e2e glob takes only files starting with digits); tests import it after
sys.path.insert(0, os.path.dirname(__file__)).

A System runs on the embedded broker (`tidings broker`) unless
TIDINGS_TEST_KAFKA names a listener of a real cluster, as the kafka tier
sets it: "plaintext", or "sasl_ssl" (the services then reach Kafka over TLS
and SASL configured with nothing but TIDINGS_KAFKA_* variables). The
cluster is the one scripts/kafka.sh describes in its cluster.env
(TIDINGS_TEST_KAFKA_ENV, default <build>/kafka/cluster/cluster.env), and
each System gets topics of its own (a fresh TIDINGS_TOPIC_PREFIX)."""
import ctypes
import json
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def free_port():
    """A free port below the kernel's ephemeral range (32768 and up), so
    that a broker or client started later cannot be given it by bind(0)
    or connect() before the service that was promised it listens."""
    import random
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(method, url, token, data, ctype, retry_s):
    """(status, raw body bytes). Connection errors are retried for retry_s
    seconds (a service being restarted), then raised."""
    deadline = time.time() + retry_s
    while True:
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", ctype or "application/json")
        if token:
            req.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except (urllib.error.URLError, ConnectionError, OSError):
            if time.time() >= deadline:
                raise
            time.sleep(0.1)


def http(method, url, token=None, body=None, retry_s=0):
    """(status, parsed JSON or None): body is sent as JSON. Connection
    errors are retried for retry_s seconds (a service being restarted),
    then raised. A success whose body is not JSON raises ValueError."""
    data = json.dumps(body).encode() if body is not None else None
    status, raw = _request(method, url, token, data, None, retry_s)
    if status < 400:
        return status, json.loads(raw) if raw else None
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


def http_text(method, url, token=None, body=None, raw_body=None, ctype=None, retry_s=0):
    """(status, parsed JSON or None, the body as text), for answers that
    need not be JSON (pages, forms) and for error messages that quote the
    body: body is sent as JSON, or raw_body as it is with Content-Type
    ctype."""
    data = json.dumps(body).encode() if body is not None else raw_body
    status, raw = _request(method, url, token, data, ctype, retry_s)
    text = raw.decode("utf-8", "replace")
    try:
        return status, json.loads(raw) if raw else None, text
    except ValueError:
        return status, None, text


def wait_for(what, fn, timeout=30, interval=0.1):
    """fn()'s first true value, asked every interval seconds;
    AssertionError naming what after timeout seconds."""
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(interval)


class SmtpMail:
    """One message an SmtpHandler accepted: when (time.time()), the
    envelope's mail_from and rcpt_tos, the raw content (bytes), and
    message(), the content parsed by Python's email package."""

    def __init__(self, at, mail_from, rcpt_tos, content):
        self.at, self.mail_from, self.rcpt_tos, self.content = at, mail_from, rcpt_tos, content

    def message(self):
        import email
        import email.policy
        return email.message_from_bytes(self.content, policy=email.policy.default)


class SmtpHandler:
    """An aiosmtpd handler (python3-aiosmtpd; see start_smtp) that puts
    each message it accepts on the queue got as an SmtpMail. answer: None
    accepts; else the reply to every DATA, counted in refused.
    require_auth: a session that has not authenticated gets 530."""

    def __init__(self, require_auth=False):
        import queue
        self.got = queue.Queue()
        self.answer = None
        self.refused = 0
        self.require_auth = require_auth

    async def handle_DATA(self, server, session, envelope):
        if self.require_auth and not session.authenticated:
            return "530 5.7.0 Authentication required"
        if self.answer:
            self.refused += 1
            return self.answer
        self.got.put(SmtpMail(time.time(), envelope.mail_from, list(envelope.rcpt_tos),
                              envelope.content))
        return "250 OK"


def start_smtp(handler, **kw):
    """An aiosmtpd server on a free loopback port, started: (controller,
    port); kw goes to aiosmtpd's Controller (authenticator=...). Stop it
    with controller.stop()."""
    from aiosmtpd.controller import Controller
    port = free_port()
    ctl = Controller(handler, hostname="127.0.0.1", port=port, **kw)
    ctl.start()
    return ctl, port


def expect(status, want, what, body):
    if status != want:
        raise AssertionError("%s: HTTP %s, expected %s: %s" % (what, status, want, body))


BIN = os.environ.get("TIDINGS_BIN", "tidings")
TMP = os.environ.get("TIDINGS_TEST_TMP") or "/tmp"


def librdkafka_version():
    """The version of the librdkafka the tidings binary loads, as a tuple."""
    v = ctypes.CDLL("librdkafka.so.1").rd_kafka_version()
    return (v >> 24 & 0xff, v >> 16 & 0xff, v >> 8 & 0xff)


class KafkaCluster:
    """The real cluster of scripts/kafka.sh, read from its cluster.env.
    plaintext: its PLAINTEXT bootstrap list (what test code reads with);
    brokers and client_env: what the services get for the listener asked
    for."""

    def __init__(self, listener, env_file=None):
        env_file = env_file or os.environ.get("TIDINGS_TEST_KAFKA_ENV") or os.path.join(
            os.path.dirname(os.path.abspath(BIN)), "kafka", "cluster", "cluster.env")
        self.env_file = env_file
        self.vals = {}
        with open(env_file) as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    k, _, v = line.partition("=")
                    self.vals[k] = v
        self.dir = self.vals["KAFKA_CLUSTER_DIR"]
        self.plaintext = self.vals["KAFKA_BOOTSTRAP_PLAINTEXT"]
        self.sasl_ssl = self.vals["KAFKA_BOOTSTRAP_SASL_SSL"]
        self.password = self.vals["KAFKA_SASL_PASSWORD"]
        self.listener = listener
        if listener == "plaintext":
            self.brokers, self.client_env = self.plaintext, {}
        elif listener == "sasl_ssl":
            self.brokers = self.sasl_ssl
            self.client_env = self.sasl_env(self.password)
        else:
            raise ValueError("TIDINGS_TEST_KAFKA=%r: not plaintext or sasl_ssl" % listener)

    @staticmethod
    def sasl_mechanism():
        """SCRAM-SHA-512, unless the librdkafka here has the SCRAM nonce bug
        Kafka 4 rejects (before 2.6.1): then PLAIN, over the same TLS."""
        forced = os.environ.get("TIDINGS_TEST_SASL_MECHANISM")
        if forced:
            return forced
        return "SCRAM-SHA-512" if librdkafka_version() >= (2, 6, 1) else "PLAIN"

    def sasl_env(self, password, mechanism=None):
        return {
            "TIDINGS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "TIDINGS_KAFKA_SASL_MECHANISM": mechanism or self.sasl_mechanism(),
            "TIDINGS_KAFKA_SASL_USERNAME": self.vals["KAFKA_SASL_USERNAME"],
            "TIDINGS_KAFKA_SASL_PASSWORD": password,
            "TIDINGS_KAFKA_SSL_CA_LOCATION": self.vals["KAFKA_CA"],
        }

    def node_pid(self, node):
        """The pid of the JVM of node N (1..3), or None when it is down."""
        try:
            pid = int(open(os.path.join(self.dir, "node-%d.pid" % node)).read())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def node_of_port(self, port):
        """The node whose PLAINTEXT or SASL_SSL listener is port."""
        base = int(self.vals["KAFKA_PORT_BASE"])
        return (port - base) % 10 + 1


def kafka_cluster():
    """The KafkaCluster TIDINGS_TEST_KAFKA asks for, or None (embedded)."""
    listener = os.environ.get("TIDINGS_TEST_KAFKA")
    return KafkaCluster(listener) if listener else None


class System:
    """The processes of one test run, each with its log file: a `tidings
    broker` (or a real cluster, see kafka_cluster) and the services, each on
    a free port, sharing one scratch data dir. env adds settings; admin=True
    makes admin@tidings.local with a random password (self.admin_password).
    Settings that would point the run elsewhere are dropped from the
    inherited environment. self.prefix is the topic prefix, and
    self.reader_brokers what test code reads the topics with (the PLAINTEXT
    listener of a real cluster)."""

    def __init__(self, name, services, env=None, admin=True):
        os.makedirs(TMP, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix=name + ".", dir=TMP)
        self.procs = {}
        self.logs = {}
        self.ports = {s: free_port() for s in services}
        self.admin_password = "admin-" + secrets.token_hex(8) if admin else None
        self.env = dict(os.environ)
        for k in ("TIDINGS_BROKERS", "TIDINGS_DATA_DIR", "TIDINGS_TOPIC_PREFIX",
                  "TIDINGS_VAPID_PRIVATE_KEY"):
            self.env.pop(k, None)
        for k in [k for k in self.env if k.startswith("TIDINGS_KAFKA_")]:
            self.env.pop(k)
        self.env.update({
            "TIDINGS_SECRET": secrets.token_urlsafe(36),
            "TIDINGS_LOG_LEVEL": "info",
        })
        if admin:
            self.env["TIDINGS_ADMIN_PASSWORD"] = self.admin_password
        self.kafka = kafka_cluster()
        self.prefix = "tidings."
        if self.kafka:
            self.prefix = "%s-%s." % (name.replace("_", "-")[:40], secrets.token_hex(4))
            self.env["TIDINGS_TOPIC_PREFIX"] = self.prefix
            self.env.update(self.kafka.client_env)
        self.env.update(env or {})
        self.brokers = None
        self.reader_brokers = None

    def _spawn(self, name, args, env=None):
        logf = open(os.path.join(self.dir, name + ".log"), "ab")
        self.logs[name] = logf
        penv = dict(self.env, **(env or {}))
        return subprocess.Popen([BIN] + args, env=penv, stdout=logf, stderr=logf,
                                stdin=subprocess.DEVNULL)

    def start_broker(self):
        if self.kafka:
            self.brokers = self.kafka.brokers
            self.reader_brokers = self.kafka.plaintext
            log("real Kafka (%s) at %s, topic prefix %s" % (self.kafka.listener, self.brokers,
                                                            self.prefix))
            return
        path = os.path.join(self.dir, "brokers")
        self.procs["broker"] = self._spawn("broker", ["broker", "--data", self.dir])
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.procs["broker"].poll() is not None:
                raise RuntimeError("tidings broker exited: " + self.tail("broker"))
            if os.path.exists(path):
                text = open(path).read().strip()
                if text:
                    self.brokers = self.reader_brokers = text
                    return
            time.sleep(0.05)
        raise RuntimeError("tidings broker wrote no bootstrap list")

    def start(self, svc, name=None, env=None, brokers=None):
        """Starts service svc as process name (default svc; another name
        runs a second instance on a port of its own), env added to the
        System's, on brokers (default the System's)."""
        name = name or svc
        if name not in self.ports:
            self.ports[name] = free_port()
        self.procs[name] = self._spawn(name, [svc, "--data", self.dir, "--brokers",
                                              brokers or self.brokers, "--port",
                                              str(self.ports[name])], env)

    def start_all(self, services, log_ready=None):
        """The broker, then every service of services, then waits until each
        one is ready (all started before the first wait: they start in
        parallel)."""
        self.start_broker()
        for svc in services:
            self.start(svc)
        for svc in services:
            self.wait_ready(svc)
        if log_ready:
            log(log_ready)

    def admin_login(self):
        """The token of the administrator (System(admin=True))."""
        st, body = http("POST", self.url("users", "/login"),
                        body={"email": "admin@tidings.local", "password": self.admin_password})
        expect(st, 200, "admin login", body)
        return body["token"]

    def finish(self, ok, extra=(), tail=30):
        """Closes extra (streams, receivers), stops the processes and removes
        the run's directory when the test passed; else logs the last tail
        lines of every process's log and keeps them."""
        import shutil
        for x in extra:
            try:
                x.close()
            except Exception:  # noqa: BLE001
                pass
        self.stop()
        if ok:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            for name in self.procs:
                log("---- %s log:%s" % (name, self.tail(name, tail)))

    def url(self, svc, path):
        return "http://127.0.0.1:%d%s" % (self.ports[svc], path)

    def wait_ready(self, svc, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.procs[svc].poll() is not None:
                raise RuntimeError("%s exited: %s" % (svc, self.tail(svc)))
            try:
                with urllib.request.urlopen(self.url(svc, "/readyz"), timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError("%s not ready after %d s: %s" % (svc, timeout, self.tail(svc)))

    def kill9(self, svc):
        p = self.procs[svc]
        os.kill(p.pid, signal.SIGKILL)
        p.wait()

    def tail(self, name, n=20):
        try:
            with open(os.path.join(self.dir, name + ".log"), "rb") as f:
                return "\n" + "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self):
        # The services first (a consumer leaves its group and a relay
        # flushes on the way out, which needs the broker), then the broker.
        for group in ([n for n in self.procs if n != "broker"],
                      [n for n in self.procs if n == "broker"]):
            for name in group:
                if self.procs[name].poll() is None:
                    self.procs[name].send_signal(signal.SIGTERM)
            for name in group:
                p = self.procs[name]
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    log("%s did not stop within 20 s of SIGTERM: killed" % name)
                    p.kill()
                    p.wait()
        for f in self.logs.values():
            f.close()
        self.delete_topics()
        return {name: p.returncode for name, p in self.procs.items()}

    def delete_topics(self):
        """Deletes this run's topics on a real cluster (best effort), so a
        long-lived cluster does not collect the topics of every test."""
        if not self.kafka:
            return
        try:
            from kafka.admin import KafkaAdminClient
            admin = KafkaAdminClient(bootstrap_servers=self.reader_brokers.split(","))
            try:
                mine = [t for t in admin.list_topics() if t.startswith(self.prefix)]
                if mine:
                    admin.delete_topics(mine, timeout_ms=30000)
            finally:
                admin.close()
        except Exception as e:  # noqa: BLE001 - cleanup must not fail a test
            log("could not delete the topics %s*: %s" % (self.prefix, e))


class Relay:
    """A TCP relay from a loopback port to another, started on demand."""

    def __init__(self, port, target):
        self.port, self.target = port, target
        self.sock = None

    def start(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self):
        if self.sock:
            self.sock.close()
