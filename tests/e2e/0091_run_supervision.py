#!/usr/bin/python3
"""`tidings run` as a supervisor, from the outside.

- It starts the six services as its children, each ready, and prints the
  summary; the first start seeds the admin and the sample catalogue.
- kill -9 of a child (orders): it is restarted (logged), comes back ready,
  and the shop keeps working: a new order is still APPROVED.
- SIGTERM to `tidings run`: every child stops, it exits 0, no child is left.
- A second start on the same data dir does not seed again, and SIGKILL of
  `tidings run` itself still leaves no child behind (PR_SET_PDEATHSIG).
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

BIN = os.environ["TIDINGS_BIN"]
TMP = os.path.join(os.environ.get("TIDINGS_TEST_TMP", "/tmp"), "0091_run_supervision")
SERVICES = ["users", "products", "orders", "payments", "notifications", "web"]
ADMIN_PASSWORD = "supervision-admin-pw"


def free_ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def wait_until(what, cond, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("timed out after %d s waiting for %s" % (timeout, what))


def http(method, url, body=None, token=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, None
    except (urllib.error.URLError, ConnectionError, socket.timeout):
        return 0, None


def children(pid):
    """{service: pid} of the live children of pid, by their argv[1]."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            state = stat.rsplit(")", 1)[1].split()[0]
            if ppid != pid or state == "Z":
                continue
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                argv = f.read().split(b"\0")
            if len(argv) > 1:
                out[argv[1].decode()] = int(entry)
        except (OSError, ValueError, IndexError):
            continue
    return out


def alive(pid):
    """True while pid is a live (not zombie) tidings process."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return b"tidings" in f.read()
    except OSError:
        return False


class Run:
    def __init__(self, data, env):
        self.out_path = os.path.join(TMP, "run-%d.out" % int(time.time() * 1000))
        self.out = open(self.out_path, "wb")
        self.proc = subprocess.Popen([BIN, "run", "--data", data], stdout=self.out,
                                     stderr=subprocess.STDOUT, env=env)

    def text(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_summary(self):
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("tidings run exited (%s) before its summary:\n%s"
                                     % (self.proc.returncode, self.text()))
            return "Ctrl-C to stop" in self.text()
        wait_until("the summary of tidings run", ready, 120)

    def kill_all(self):
        pids = list(children(self.proc.pid).values())
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        self.out.close()


def place_order(urls, product_title, quantity):
    email = "sup.%d@example.com" % int(time.time() * 1000)
    st, body = http("POST", urls["users"] + "/users",
                    {"email": email, "password": "supervised!", "name": "Sup"})
    assert st == 201, (st, body)
    st, body = http("POST", urls["users"] + "/login", {"email": email, "password": "supervised!"})
    assert st == 200, (st, body)
    token = body["token"]
    st, body = http("GET", urls["products"] + "/products?limit=500")
    assert st == 200, (st, body)
    product = [p for p in body["products"] if p["title"] == product_title]
    assert product, "no %s in %s" % (product_title, body)
    st, body = http("POST", urls["orders"] + "/orders",
                    {"productId": product[0]["productId"], "quantity": quantity}, token)
    assert st == 202, (st, body)
    order_id = body["orderId"]

    def decided():
        s, o = http("GET", urls["orders"] + "/orders/" + order_id, token=token)
        return o if s == 200 and o["status"] != "PENDING" else None
    # A consumer restarted after kill -9 may wait out its old session first.
    return wait_until("order %s to be decided" % order_id, decided, 100)


def main():
    shutil.rmtree(TMP, ignore_errors=True)
    os.makedirs(TMP)
    data = os.path.join(TMP, "data")
    ports = dict(zip(SERVICES, free_ports(len(SERVICES))))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TIDINGS_") or k in ("TIDINGS_BIN", "TIDINGS_SRC",
                                                    "TIDINGS_TEST_TMP", "TIDINGS_WEB_DIR")}
    for svc, port in ports.items():
        env["TIDINGS_%s_PORT" % svc.upper()] = str(port)
    env["TIDINGS_ADMIN_PASSWORD"] = ADMIN_PASSWORD
    urls = {svc: "http://127.0.0.1:%d" % port for svc, port in ports.items()}

    run = Run(data, env)
    try:
        run.wait_summary()
        text = run.text()
        assert "http://127.0.0.1:%d/" % ports["web"] in text, text
        kids = children(run.proc.pid)
        assert sorted(kids) == sorted(SERVICES), kids
        for svc in SERVICES:
            st, _ = http("GET", urls[svc] + "/readyz")
            assert st == 200, "%s not ready: %s" % (svc, st)
        st, body = http("GET", urls["products"] + "/products?limit=500")
        assert st == 200 and len(body["products"]) >= 6, body
        assert os.path.exists(os.path.join(data, "brokers"))
        for svc in SERVICES:
            log = os.path.join(data, "logs", svc + ".log")
            with open(log) as f:
                first = f.readline()
            assert json.loads(first)["service"] == svc, (log, first)
        print("ok 1 - run started all six services, seeded the catalogue, wrote the logs")

        old = kids["orders"]
        os.kill(old, signal.SIGKILL)
        new = wait_until("orders to be restarted",
                         lambda: (children(run.proc.pid).get("orders") or 0) not in (0, old)
                         and children(run.proc.pid)["orders"], 30)
        wait_until("orders to be ready again",
                   lambda: http("GET", urls["orders"] + "/readyz")[0] == 200, 30)
        wait_until("the restart in the log",
                   lambda: "orders was killed by signal 9" in run.text()
                   and "orders restarted" in run.text(), 10)
        assert not alive(old)
        print("ok 2 - kill -9 orders (pid %d): restarted as pid %d and ready" % (old, new))

        order = place_order(urls, "iPhone 15", 1)
        assert order["status"] == "APPROVED", order
        print("ok 3 - after the restart an order is still APPROVED")

        kids = children(run.proc.pid)
        assert sorted(kids) == sorted(SERVICES), kids
        t0 = time.monotonic()
        run.proc.send_signal(signal.SIGTERM)
        rc = run.proc.wait(timeout=90)
        took = time.monotonic() - t0
        assert rc == 0, (rc, run.text()[-3000:])
        left = [p for p in kids.values() if alive(p)]
        assert not left, "children left behind: %s" % left
        assert "all stopped" in run.text()
        print("ok 4 - SIGTERM stopped run and every child in %.1f s, exit 0" % took)

        run2 = Run(data, env)
        run = run2
        run.wait_summary()
        assert "sample catalogue" not in run.text(), "seeded twice"
        st, body = http("GET", urls["products"] + "/products?limit=500")
        assert st == 200 and len(body["products"]) == 8, body
        kids = children(run.proc.pid)
        assert sorted(kids) == sorted(SERVICES), kids
        run.proc.kill()
        run.proc.wait()
        wait_until("the children to follow their killed parent",
                   lambda: not [p for p in kids.values() if alive(p)], 30)
        print("ok 5 - a second start does not seed again; SIGKILL of run leaves no child")
    except Exception:
        sys.stdout.write("--- tidings run output (tail) ---\n" + run.text()[-6000:] + "\n")
        raise
    finally:
        run.kill_all()
    print("5 passed, 0 failed")


if __name__ == "__main__":
    main()
