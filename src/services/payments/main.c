/* `tidings payments`: the payments service as a process. Wiring only. */
#include "../../cli/cli.h"
#include "payments/payments_service.h"
#include "tidings/service.h"

static void *start(const td_config_t *cfg, char *errstr, size_t errlen)
{
    return payments_service_start(cfg, errstr, errlen);
}

static void stop(void *svc)
{
    payments_service_stop(svc);
}

int payments_main(int argc, char **argv)
{
    return td_service_main("payments", argc, argv, start, stop);
}
