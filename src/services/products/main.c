/* `tidings products`: the products service as a process. Wiring only. */
#include "../../cli/cli.h"
#include "products/products_service.h"
#include "tidings/service.h"

static void *start(const td_config_t *cfg, char *errstr, size_t errlen)
{
    return products_service_start(cfg, errstr, errlen);
}

static void stop(void *svc)
{
    products_service_stop(svc);
}

int products_main(int argc, char **argv)
{
    return td_service_main("products", argc, argv, start, stop);
}
