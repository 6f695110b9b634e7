/* The hostile-events world of integration tests 0080 and 0081
 * (thostile.c says what it runs and checks). One world per process. */
#ifndef TIDINGS_TEST_THOSTILE_H
#define TIDINGS_TEST_THOSTILE_H

#include <stdbool.h>

/* Starts every consuming service on one embedded broker and a buyer
 * thread; strict: also the contract cases known to fail. */
void ht_world_start(bool strict);
void ht_world_stop(void);
/* Writes every hostile record, then accounts for each (cmocka failures). */
void ht_run(void);

#endif
