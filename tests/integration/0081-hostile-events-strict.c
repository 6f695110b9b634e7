/* The hostile-event cases of SPEC section 4 that the services do not honour
 * yet, each with the contract's expectation: a missing or mistyped field
 * of any SPEC event field (not only the ones a consumer uses: createdAt,
 * registeredAt, loggedInAt, userAgent, ip, paymentId, a PaymentFailedEvent's
 * amount, quantities of 0 in order events, 100 KiB strings) sends the event
 * to <topic>.DLT from every consumer of its type, aimed at an approved
 * order so no "unknown order" answer can stand in for the field check; an
 * event type on a topic it does not belong to is not acted on; and a
 * record the notifications live consumer cannot parse is dead-lettered
 * for real, not only counted. It fails until those are fixed; the list of
 * problems it prints is the bug list. The machinery is in
 * tests/support/thostile.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "thostile.h"

static int world_start(void **state)
{
    (void)state;
    ht_world_start(true);
    return 0;
}

static int world_stop(void **state)
{
    (void)state;
    ht_world_stop();
    return 0;
}

static void test_hostile_events_strict(void **state)
{
    (void)state;
    ht_run();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostile_events_strict),
    };
    return cmocka_run_group_tests(tests, world_start, world_stop);
}
