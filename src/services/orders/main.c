/* `tidings orders`: the orders service as a process. Wiring only. */
#include "../../cli/cli.h"
#include "orders/orders_service.h"
#include "tidings/service.h"

static void *start(const td_config_t *cfg, char *errstr, size_t errlen)
{
    return orders_service_start(cfg, errstr, errlen);
}

static void stop(void *svc)
{
    orders_service_stop(svc);
}

int orders_main(int argc, char **argv)
{
    return td_service_main("orders", argc, argv, start, stop);
}
