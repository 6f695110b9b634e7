/* Digest grouping (notifications/digest.h): the first of a burst is sent
 * at once and opens a window, what comes inside the window is held, the
 * next one after the window opens a new one; the combined text counts and
 * lists the titles in order, cut after NOTIF_DIGEST_LIST_MAX. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "notifications/digest.h"

#define MIN 60000

static void test_window(void **state)
{
    (void)state;
    int64_t end = -1;
    /* Off: never held. */
    assert_false(notif_digest_hold(1000, 0, 0, MIN, &end));
    assert_int_equal(end, 0);
    assert_false(notif_digest_hold(1000, 999999, 0, MIN, &end));
    /* The first opens a window of N minutes. */
    assert_false(notif_digest_hold(1000, 0, 5, MIN, &end));
    assert_int_equal(end, 1000 + 5 * MIN);
    int64_t open = end;
    /* Inside it: held, the window does not move. */
    assert_true(notif_digest_hold(2000, open, 5, MIN, &end));
    assert_int_equal(end, open);
    assert_true(notif_digest_hold(open - 1, open, 5, MIN, &end));
    assert_int_equal(end, open);
    /* At or after its end: sent at once, a new window. */
    assert_false(notif_digest_hold(open, open, 5, MIN, &end));
    assert_int_equal(end, open + 5 * MIN);
    assert_false(notif_digest_hold(open + 7, open, 1, MIN, &end));
    assert_int_equal(end, open + 7 + MIN);
}

/* A burst of n at the given times: how many go out at once. */
static void test_burst(void **state)
{
    (void)state;
    int64_t times[] = {0, 10, 20000, 59999, 60000, 60001, 200000};
    bool want_hold[] = {false, true, true, true, false, true, false};
    int64_t open = 0;
    for (size_t i = 0; i < sizeof(times) / sizeof(times[0]); i++) {
        int64_t end;
        bool hold = notif_digest_hold(times[i], open, 1, MIN, &end);
        assert_int_equal(hold, want_hold[i]);
        open = end;
    }
}

static void test_text(void **state)
{
    (void)state;
    const char *titles[] = {"Order confirmed", "Price drop: Kettle", "Back in stock: Mug"};
    char *title, *body;
    notif_digest_text(titles, 3, &title, &body);
    assert_string_equal(title, "3 new notifications");
    assert_string_equal(body, "Order confirmed, Price drop: Kettle, Back in stock: Mug");
    free(title);
    free(body);
    notif_digest_text(titles, 1, &title, &body);
    assert_string_equal(title, "1 new notification");
    assert_string_equal(body, "Order confirmed");
    free(title);
    free(body);

    const char *many[13];
    char buf[13][8];
    for (int i = 0; i < 13; i++) {
        snprintf(buf[i], sizeof(buf[i]), "t%d", i);
        many[i] = buf[i];
    }
    notif_digest_text(many, 13, &title, &body);
    assert_string_equal(title, "13 new notifications");
    assert_string_equal(body, "t0, t1, t2, t3, t4, t5, t6, t7, t8, t9 and 3 more");
    free(title);
    free(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window),
        cmocka_unit_test(test_burst),
        cmocka_unit_test(test_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
