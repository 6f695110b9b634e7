#!/usr/bin/python3
"""The event catalogue is said once (issue 11): `tidings asyncapi` prints
it as AsyncAPI, docs/asyncapi.yaml is exactly that output with the default
settings, @asyncapi/parser reads it with no error and no warning, and
docs/events.md agrees with it: every topic row names the producer, key and
types the catalogue has, and every event type has its section under its
topic with the fields the catalogue has (optional ones marked optional)
and a JSON example that holds every required field."""
import json
import os
import re
import subprocess
import sys

BIN = os.environ["TIDINGS_BIN"]
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
NODE_MODULES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node_modules")

VALIDATE = r"""
import { Parser } from '@asyncapi/parser';
import { readFileSync } from 'node:fs';
const { document, diagnostics } = await new Parser().parse(readFileSync(process.argv[2], 'utf8'));
const bad = diagnostics.filter((d) => d.severity <= 1);
for (const d of diagnostics) console.log(d.severity, d.code, d.message, JSON.stringify(d.path));
if (!document || bad.length) process.exit(1);
console.log('ok', document.channels().length, 'channels', document.messages().length, 'messages');
"""


def run(args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    p = subprocess.run([BIN] + args, env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, "%s: %s" % (args, p.stderr)
    return p.stdout


def log(msg):
    print(msg, flush=True)


def ensure_parser():
    """Installs tests/e2e's npm packages when @asyncapi/parser is missing
    (make test on a fresh clone; the browser test does the same)."""
    if os.path.isdir(os.path.join(NODE_MODULES, "@asyncapi", "parser")):
        return
    log("installing @asyncapi/parser into %s" % NODE_MODULES)
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
                   cwd=os.path.dirname(NODE_MODULES), check=True, timeout=600)


def check_asyncapi():
    ensure_parser()
    out = run(["asyncapi"])
    path = os.path.join(ROOT, "docs", "asyncapi.yaml")
    with open(path) as f:
        assert f.read() == out, ("docs/asyncapi.yaml is not the output of `tidings asyncapi`: "
                                 "regenerate it with `tidings asyncapi > docs/asyncapi.yaml`")
    log("ok   docs/asyncapi.yaml is `tidings asyncapi` (%d lines)" % out.count("\n"))
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".validate-asyncapi.mjs")
    with open(script, "w") as f:
        f.write(VALIDATE)
    try:
        p = subprocess.run(["node", script, path], capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, NODE_PATH=NODE_MODULES))
    finally:
        os.unlink(script)
    assert p.returncode == 0, "@asyncapi/parser: %s %s" % (p.stdout, p.stderr)
    log("ok   @asyncapi/parser: no errors or warnings (%s)" % p.stdout.strip().splitlines()[-1])
    # A broken document must fail the same check (the check can fail).
    broken = out.replace("action: \"send\"", "action: \"shout\"", 1)
    assert broken != out
    bad_path = path + ".broken-test"
    with open(bad_path, "w") as f:
        f.write(broken)
    with open(script, "w") as f:
        f.write(VALIDATE)
    try:
        p = subprocess.run(["node", script, bad_path], capture_output=True, text=True,
                           timeout=120, env=dict(os.environ, NODE_PATH=NODE_MODULES))
    finally:
        os.unlink(script)
        os.unlink(bad_path)
    assert p.returncode != 0, "the parser accepted an operation with action 'shout'"
    log("ok   a broken document is refused")


def sections(md):
    """{type: (topic heading, section text)} of docs/events.md."""
    out, topic = {}, None
    parts = re.split(r"^(##+) (.+)$", md, flags=re.M)
    for i in range(1, len(parts) - 2, 3):
        level, title, body = parts[i], parts[i + 1].strip(), parts[i + 2]
        if level == "##":
            topic = title
        elif level == "###":
            out[title] = (topic, body)
    return out


def check_events_md(doc):
    md = open(os.path.join(ROOT, "docs", "events.md")).read()
    rows = {}
    for m in re.finditer(r"^\| `([a-z]+)` \| (\w+) \| (\w+) \| (.+) \|$", md, re.M):
        rows[m.group(1)] = (m.group(2), m.group(3), re.findall(r"`(\w+Event)`", m.group(4)))
    secs = sections(md)
    n_fields = 0
    for name, chan in doc["channels"].items():
        types = list(chan["messages"])
        send = [o for o in doc["operations"].values()
                if o["action"] == "send" and o["channel"]["$ref"] == "#/channels/" + name]
        producer = re.match(r"The (\w+) service", send[0]["summary"]).group(1)
        assert name in rows, "docs/events.md has no topic row for %s" % name
        key = doc["components"]["messages"][types[0]]["bindings"]["kafka"]["key"]["description"]
        key = re.match(r"the (\w+)", key).group(1)
        assert rows[name] == (producer, key, types), \
            "topic %s: docs say %s, the catalogue %s" % (name, rows[name], (producer, key, types))
        for t in types:
            assert t in secs, "docs/events.md has no section for %s" % t
            topic, body = secs[t]
            assert topic == name, "%s is under '%s', its topic is %s" % (t, topic, name)
            payload = doc["components"]["messages"][t]["payload"]
            listed = {}
            for m in re.finditer(r"^\| `(\w+)` \| ([^|]*)(?:\| ([^|]*))?\|?$", body, re.M):
                listed[m.group(1)] = "optional" in (m.group(2) + (m.group(3) or ""))
            want = {f: f not in payload["required"] for f in payload["properties"]}
            assert listed == want, "%s: docs list %s, the catalogue has %s" % (t, listed, want)
            ex = re.search(r"```json\n(.+?)\n```", body, re.S)
            assert ex, "%s has no JSON example" % t
            data = json.loads(ex.group(1))
            missing = [f for f in payload["required"] if f not in data]
            assert not missing, "%s's example lacks %s" % (t, missing)
            n_fields += len(want)
    log("ok   docs/events.md: %d topics and %d types with %d fields as in the catalogue"
        % (len(doc["channels"]), len(doc["components"]["messages"]), n_fields))


def main():
    check_asyncapi()
    check_events_md(json.loads(run(["asyncapi", "--json"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
