#!/usr/bin/python3
"""Reads N records from a topic with an independent Kafka client
(kafka-python) and checks each against the CloudEvents binary-mode
contract of SPEC section 3. Exit 0 when all N are there and valid, 1 with
one line per problem otherwise.

usage: check_cloudevents.py BROKERS TOPIC N
"""
import json
import re
import sys
import time
from datetime import datetime

from kafka import KafkaConsumer, TopicPartition

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
SOURCE = re.compile(r"^/tidings/(users|products|orders|payments|notifications|web)$")
TYPE = re.compile(r"^[A-Z][A-Za-z]*Event$")


def read(brokers, topic, want, timeout_s=30.0):
    consumer = KafkaConsumer(
        bootstrap_servers=brokers.split(","),
        enable_auto_commit=False,
        api_version=(2, 5, 0),
        consumer_timeout_ms=500,
    )
    deadline = time.time() + timeout_s
    parts = None
    while parts is None and time.time() < deadline:
        parts = consumer.partitions_for_topic(topic)
        if parts is None:
            time.sleep(0.1)
    if parts is None:
        raise SystemExit(f"no partitions for {topic}")
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    records = []
    while len(records) < want and time.time() < deadline:
        for batch in consumer.poll(timeout_ms=200).values():
            records.extend(batch)
    # A little longer, to see records beyond N (duplicates would show).
    end = time.time() + 0.5
    while time.time() < end:
        for batch in consumer.poll(timeout_ms=100).values():
            records.extend(batch)
    consumer.close()
    return records


def check(rec):
    problems = []
    where = f"{rec.topic}/{rec.partition}@{rec.offset}"
    headers = {}
    for name, value in rec.headers or []:
        if name in headers:
            problems.append(f"{where}: header {name} appears twice")
        headers[name] = value.decode("utf-8") if value is not None else None

    def need(name):
        v = headers.get(name)
        if v is None or v == "":
            problems.append(f"{where}: header {name} is missing")
            return None
        return v

    if need("ce_specversion") not in (None, "1.0"):
        problems.append(f"{where}: ce_specversion is {headers['ce_specversion']!r}, not '1.0'")
    ce_id = need("ce_id")
    if ce_id is not None and not UUID.match(ce_id):
        problems.append(f"{where}: ce_id {ce_id!r} is not a lowercase UUID")
    source = need("ce_source")
    if source is not None and not SOURCE.match(source):
        problems.append(f"{where}: ce_source {source!r} is not /tidings/<service>")
    ce_type = need("ce_type")
    if ce_type is not None and not TYPE.match(ce_type):
        problems.append(f"{where}: ce_type {ce_type!r} is not an event type name")
    ce_time = need("ce_time")
    if ce_time is not None:
        if not TIME.match(ce_time):
            problems.append(f"{where}: ce_time {ce_time!r} is not RFC 3339 UTC with ms")
        else:
            try:
                datetime.strptime(ce_time, "%Y-%m-%dT%H:%M:%S.%fZ")
            except ValueError:
                problems.append(f"{where}: ce_time {ce_time!r} is not a valid time")
    subject = need("ce_subject")
    key = rec.key.decode("utf-8") if rec.key is not None else None
    if subject is not None and subject != key:
        problems.append(f"{where}: ce_subject {subject!r} differs from the key {key!r}")
    if need("content-type") not in (None, "application/json"):
        problems.append(f"{where}: content-type is {headers['content-type']!r}")
    need("ce_correlationid")
    if "ce_causationid" in headers and not UUID.match(headers["ce_causationid"] or ""):
        problems.append(f"{where}: ce_causationid {headers['ce_causationid']!r} is not a UUID")
    tp = need("traceparent")
    if tp is not None:
        m = TRACEPARENT.match(tp)
        if not m or set(m.group(1)) == {"0"} or set(m.group(2)) == {"0"}:
            problems.append(f"{where}: traceparent {tp!r} is not W3C version 00")
    try:
        data = json.loads(rec.value.decode("utf-8"))
        if not isinstance(data, dict):
            problems.append(f"{where}: value is JSON but not an object")
    except (ValueError, AttributeError, UnicodeDecodeError) as e:
        problems.append(f"{where}: value is not JSON: {e}")
    return problems, ce_id


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    brokers, topic, want = sys.argv[1], sys.argv[2], int(sys.argv[3])
    records = read(brokers, topic, want)
    problems = []
    ids = set()
    for rec in records:
        p, ce_id = check(rec)
        problems.extend(p)
        if ce_id in ids:
            problems.append(f"ce_id {ce_id} appears twice")
        ids.add(ce_id)
    if len(records) != want:
        problems.append(f"read {len(records)} records from {topic}, expected {want}")
    for p in problems:
        print(p, file=sys.stderr)
    if not problems:
        print(f"{len(records)} records on {topic}: all valid CloudEvents")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
