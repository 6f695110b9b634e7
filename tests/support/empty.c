/* Keeps the support library non-empty. */
typedef int td_testsupport_empty_t;
