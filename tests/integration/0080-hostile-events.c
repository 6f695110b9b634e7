/* Hostile records on every topic the services consume, while real orders
 * flow: each service dead-letters what it cannot process, with a reason
 * that names the problem, skips what is not its business, stays up and
 * ready, and lets nothing of it change a state, an event or an inbox
 * (SPEC section 4). The cases here are the ones the services honour; the
 * contract cases they do not yet honour are in 0081. The machinery is in
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
    ht_world_start(false);
    return 0;
}

static int world_stop(void **state)
{
    (void)state;
    ht_world_stop();
    return 0;
}

static void test_hostile_events(void **state)
{
    (void)state;
    ht_run();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostile_events),
    };
    return cmocka_run_group_tests(tests, world_start, world_stop);
}
