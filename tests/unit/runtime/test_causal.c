/* Causal chains (tidings/causal.h): which events belong to an id, how they
 * hang under their causes, hop delays, duplicates and dead-letter copies
 * collapsing into one node, correlation groups kept together, and a
 * causation cycle still printing every event once. Events are built by
 * hand: the module only reads their fields. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tidings/causal.h"

#define ORDER "0b9d3a52-7c1e-4f8a-9d2b-3e4f5a6b7c8d"
#define USER  "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"

/* An event with id, type, subject, correlation, cause, at base + ms. */
static td_event_t *mk(const char *id, const char *type, const char *topic, const char *subject,
                      const char *corr, const char *cause, int ms)
{
    td_event_t *ev = calloc(1, sizeof(*ev));
    snprintf(ev->id, sizeof(ev->id), "%s", id);
    ev->type = strdup(type);
    ev->source = strdup("/tidings/test");
    ev->subject = strdup(subject);
    ev->correlationid = strdup(corr);
    ev->causationid = cause ? strdup(cause) : NULL;
    ev->topic = strdup(topic);
    ev->partition = 0;
    ev->offset = ms;
    snprintf(ev->time, sizeof(ev->time), "2026-01-01T00:00:%02u.%03uZ", (unsigned)(ms / 1000) % 60u,
             (unsigned)ms % 1000u);
    return ev;
}

static void unmk(td_event_t *ev)
{
    free(ev->type);
    free(ev->source);
    free(ev->subject);
    free(ev->correlationid);
    free(ev->causationid);
    free(ev->topic);
    free(ev);
}

/* The order saga, shuffled, with a duplicate, a DLT copy, and noise. */
static td_event_t *saga[10];
static size_t saga_cnt;

static int setup(void **state)
{
    (void)state;
    size_t n = 0;
    saga[n++] = mk("e5", "OrderApprovedEvent", "t.orders", ORDER, ORDER, "e4", 900);
    saga[n++] = mk("e1", "OrderCreatedEvent", "t.orders", ORDER, ORDER, NULL, 100);
    saga[n++] = mk("e3", "PaymentProcessedEvent", "t.payments", ORDER, ORDER, "e2", 500);
    saga[n++] = mk("e2", "ProductReservedEvent", "t.reservations", ORDER, ORDER, "e1", 250);
    saga[n++] = mk("e4", "PaymentProcessedEvent", "t.payments", ORDER, ORDER, "e3", 600);
    saga[n++] = mk("n1", "NotificationCreatedEvent", "t.notifications", USER, ORDER, "e1", 300);
    saga[n++] = mk("e2", "ProductReservedEvent", "t.reservations", ORDER, ORDER, "e1", 250);
    saga[n++] = mk("e3", "PaymentProcessedEvent", "t.payments.DLT", ORDER, ORDER, "e2", 500);
    saga[n++] = mk("u1", "UserRegisteredEvent", "t.users", USER, "req-1", NULL, 50);
    saga[n++] = mk("x1", "ProductCreatedEvent", "t.products", "p1", "req-2", NULL, 10);
    saga_cnt = n;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < saga_cnt; i++) unmk(saga[i]);
    return 0;
}

static const char *type_at(const td_causal_t *c, size_t i)
{
    return c->nodes[i].ev->type;
}

static void test_order_chain(void **state)
{
    (void)state;
    td_causal_t c;
    assert_int_equal(td_causal_build((const td_event_t *const *)saga, saga_cnt, ORDER, &c), 6);
    /* e1 -> {n1 (300), e2 (250)} sorted by time: e2 first, then n1. */
    assert_string_equal(c.nodes[0].ev->id, "e1");
    assert_int_equal(c.nodes[0].parent, -1);
    assert_int_equal(c.nodes[0].delay_ms, -1);
    assert_string_equal(c.nodes[1].ev->id, "e2");
    assert_int_equal(c.nodes[1].parent, 0);
    assert_int_equal(c.nodes[1].depth, 1);
    assert_int_equal(c.nodes[1].delay_ms, 150);
    assert_false(c.nodes[1].dead_lettered);
    assert_string_equal(c.nodes[2].ev->id, "e3");
    assert_int_equal(c.nodes[2].depth, 2);
    assert_true(c.nodes[2].dead_lettered);
    assert_string_equal(c.nodes[2].ev->topic, "t.payments"); /* the original, not the copy */
    assert_string_equal(c.nodes[3].ev->id, "e4");
    assert_string_equal(c.nodes[4].ev->id, "e5");
    assert_int_equal(c.nodes[4].depth, 4);
    assert_int_equal(c.nodes[4].delay_ms, 300);
    assert_string_equal(type_at(&c, 5), "NotificationCreatedEvent");
    assert_int_equal(c.nodes[5].parent, 0);
    for (size_t i = 0; i < c.cnt; i++) {
        assert_string_equal(c.nodes[i].group, ORDER);
        assert_ptr_equal(saga[c.nodes[i].index], c.nodes[i].ev);
    }
    td_causal_free(&c);
}

static void test_event_id_means_its_group(void **state)
{
    (void)state;
    td_causal_t c;
    /* n1's correlation is the order: the whole saga comes with it. */
    assert_int_equal(td_causal_build((const td_event_t *const *)saga, saga_cnt, "n1", &c), 6);
    td_causal_free(&c);
    assert_int_equal(td_causal_build((const td_event_t *const *)saga, saga_cnt, "x1", &c), 1);
    assert_string_equal(type_at(&c, 0), "ProductCreatedEvent");
    td_causal_free(&c);
}

static void test_user_id_groups(void **state)
{
    (void)state;
    td_causal_t c;
    /* By key: the registration (its own group, earlier) and the
     * notification whose cause is not among the chosen: a root. */
    assert_int_equal(td_causal_build((const td_event_t *const *)saga, saga_cnt, USER, &c), 2);
    assert_string_equal(c.nodes[0].ev->id, "u1");
    assert_string_equal(c.nodes[0].group, "req-1");
    assert_string_equal(c.nodes[1].ev->id, "n1");
    assert_int_equal(c.nodes[1].parent, -1);
    assert_string_equal(c.nodes[1].group, ORDER);
    td_causal_free(&c);
}

static void test_no_match(void **state)
{
    (void)state;
    td_causal_t c;
    assert_int_equal(td_causal_build((const td_event_t *const *)saga, saga_cnt, "nope", &c), 0);
    assert_null(c.nodes);
    assert_int_equal(td_causal_build((const td_event_t *const *)saga, saga_cnt, "", &c), 0);
    td_causal_free(&c);
}

static void test_cycle_and_groups_interleaved(void **state)
{
    (void)state;
    td_event_t *evs[5];
    evs[0] = mk("a", "A", "t.x", "k", "g1", "b", 100);
    evs[1] = mk("b", "B", "t.x", "k", "g1", "a", 200);
    evs[2] = mk("c", "C", "t.x", "k", "g2", NULL, 150);
    evs[3] = mk("d", "D", "t.x", "k", "g2", "c", 400);
    evs[4] = mk("e", "E", "t.x", "k", "g1", "b", 300);
    td_causal_t c;
    assert_int_equal(td_causal_tree((const td_event_t *const *)evs, 5, &c), 5);
    /* Roots: c (150) is a true root; the a<->b cycle is broken at a (100)
     * but walked after the true roots. Groups: g2 first (c is emitted
     * first), then g1. */
    assert_string_equal(c.nodes[0].ev->id, "c");
    assert_string_equal(c.nodes[1].ev->id, "d");
    assert_int_equal(c.nodes[1].parent, 0);
    assert_string_equal(c.nodes[2].ev->id, "a");
    assert_int_equal(c.nodes[2].parent, -1);
    assert_string_equal(c.nodes[3].ev->id, "b");
    assert_int_equal(c.nodes[3].parent, 2);
    assert_string_equal(c.nodes[4].ev->id, "e");
    assert_int_equal(c.nodes[4].parent, 3);
    assert_int_equal(c.nodes[4].depth, 2);
    td_causal_free(&c);
    for (int i = 0; i < 5; i++) unmk(evs[i]);
}

static void test_long_chain_no_recursion(void **state)
{
    (void)state;
    enum { N = 50000 };
    td_event_t **evs = calloc(N, sizeof(*evs));
    for (int i = 0; i < N; i++) {
        char id[32], cause[32];
        snprintf(id, sizeof(id), "ev-%06d", i);
        snprintf(cause, sizeof(cause), "ev-%06d", i - 1);
        evs[i] = mk(id, "T", "t.x", "k", "g", i ? cause : NULL, i % 60000);
    }
    td_causal_t c;
    assert_int_equal(td_causal_build((const td_event_t *const *)evs, N, "g", &c), N);
    assert_int_equal(c.nodes[N - 1].depth, N - 1);
    td_causal_free(&c);
    for (int i = 0; i < N; i++) unmk(evs[i]);
    free(evs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_chain),
        cmocka_unit_test(test_event_id_means_its_group),
        cmocka_unit_test(test_user_id_groups),
        cmocka_unit_test(test_no_match),
        cmocka_unit_test(test_cycle_and_groups_interleaved),
        cmocka_unit_test(test_long_chain_no_recursion),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
