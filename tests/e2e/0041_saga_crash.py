#!/usr/bin/python3
"""The order saga surviving crashes: the run of 0040_saga.py (200 orders from
several users over HTTP, real processes), but in the middle of placing them
the products service is killed with kill -9 and started again, and later
the orders service too (clients retry while it is down). The same
invariants must hold afterwards: every order final within a bounded wait,
stock = initial - approved quantities, each order's events on Kafka one
causal chain with one correlation id and one event per fact (an outbox may
publish an event again after a crash, with the same ce_id, which the
consumers make a no-op).
"""
import importlib.util
import os

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("saga", os.path.join(HERE, "0040_saga.py"))
saga = importlib.util.module_from_spec(spec)
spec.loader.exec_module(saga)

if __name__ == "__main__":
    saga.run("0041_saga_crash", crash=[(60, "products"), (130, "orders")])
    saga.log("PASS")
