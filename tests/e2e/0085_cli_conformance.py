#!/usr/bin/python3
"""The `tidings` command line against SPEC section 1, from the outside.

- `tidings help` names every command of the SPEC synopsis.
- Every command's --help exits 0 and names each environment variable the
  command reads: run (no --port, which it refuses; --json-logs;
  TIDINGS_WEB_DIR, read by its web child), web (TIDINGS_WEB_DIR),
  notifications (the VAPID key and its format).
- `tidings run` refuses to start when one of its ports is already taken
  (as by an earlier `tidings run`), exit 1 naming the port, the service
  and the variable to change, instead of probing the other program's
  service as its own and printing a summary of a shop that is not its;
  two services given one port are refused the same way. Nothing is
  started and nothing is written to the data dir.
"""
import os
import shutil
import socket
import subprocess
import sys

BIN = os.environ["TIDINGS_BIN"]
TMP = os.path.join(os.environ.get("TIDINGS_TEST_TMP", "/tmp"), "0085_cli_conformance")
SERVICES = ["users", "products", "orders", "payments", "notifications", "web"]
COMMON_VARS = [
    "TIDINGS_BROKERS", "TIDINGS_DATA_DIR", "TIDINGS_SECRET", "TIDINGS_TOPIC_PREFIX",
    "TIDINGS_PARTITIONS", "TIDINGS_REPLICATION", "TIDINGS_RETENTION_MS",
    "TIDINGS_PAYMENT_LIMIT", "TIDINGS_LOG_LEVEL", "TIDINGS_ADMIN_PASSWORD",
    "TIDINGS_ALLOW_HTTP_ENDPOINTS", "TIDINGS_DELIVERY_MAX_ATTEMPTS",
    "TIDINGS_DELIVERY_BACKOFF_MS",
] + ["TIDINGS_%s_PORT" % s.upper() for s in SERVICES]

failures = []


def check(cond, what, detail=""):
    if cond:
        print("ok - %s" % what)
    else:
        print("not ok - %s %s" % (what, detail))
        failures.append(what)


def run(args, env=None, timeout=30):
    e = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_") or k == "TIDINGS_BIN"}
    e.update(env or {})
    p = subprocess.run([BIN] + args, capture_output=True, text=True, env=e, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def help_text(cmd):
    rc, out, err = run([cmd, "--help"])
    check(rc == 0, "tidings %s --help exits 0" % cmd, (rc, err))
    return out


def main():
    shutil.rmtree(TMP, ignore_errors=True)
    os.makedirs(TMP)

    rc, out, _ = run(["help"])
    check(rc == 0, "tidings help exits 0")
    for cmd in ["run", "broker", "events", "trace", "version", "help"] + SERVICES:
        check("tidings %s" % cmd in out, "tidings help names `tidings %s`" % cmd)

    text = help_text("run")
    check("--port" not in text, "run --help offers no --port (run refuses it)")
    rc, _, err = run(["run", "--port", "9999", "--data", os.path.join(TMP, "never")])
    check(rc == 2 and "--port" in err, "run --port is a usage error", (rc, err))
    for flag in ["--brokers", "--data", "--json-logs", "--log-level", "--listen"]:
        check(flag in text, "run --help names %s" % flag)
    for var in COMMON_VARS + ["TIDINGS_WEB_DIR", "TIDINGS_VAPID_PRIVATE_KEY"]:
        check(var in text, "run --help names %s" % var)

    for svc in SERVICES:
        text = help_text(svc)
        for var in COMMON_VARS:
            check(var in text, "%s --help names %s" % (svc, var))
    check("TIDINGS_WEB_DIR" in help_text("web"), "web --help names TIDINGS_WEB_DIR")
    text = help_text("notifications")
    check("TIDINGS_VAPID_PRIVATE_KEY" in text and "43 base64url" in text,
          "notifications --help says what TIDINGS_VAPID_PRIVATE_KEY holds", text[-600:])

    # A port held by someone else: refused before anything starts.
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    taken = holder.getsockname()[1]
    socks = [socket.socket() for _ in range(5)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    env = {"TIDINGS_%s_PORT" % s.upper(): str(p) for s, p in zip(SERVICES, ports + [taken])}
    data = os.path.join(TMP, "data")
    try:
        rc, out, err = run(["run", "--data", data], env=env, timeout=60)
    finally:
        holder.close()
    check(rc == 1, "run with a taken port exits 1", (rc, out[-400:], err[-400:]))
    check("port %d (web) is already in use" % taken in err and "TIDINGS_WEB_PORT" in err,
          "run names the taken port, its service and its variable", err)
    check("tidings is running" not in out, "run prints no summary when a port is taken")
    check(not os.path.exists(os.path.join(data, "brokers")),
          "run started no broker when a port is taken")

    env["TIDINGS_ORDERS_PORT"] = env["TIDINGS_USERS_PORT"]
    rc, out, err = run(["run", "--data", data], env=env, timeout=60)
    check(rc == 1 and "users and orders are both given port" in err,
          "run refuses two services on one port", (rc, err))

    if failures:
        print("FAILED: %d check(s): %s" % (len(failures), "; ".join(failures)))
        return 1
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
