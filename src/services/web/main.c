/* `tidings web`: the web service as a process. Wiring only. */
#include "../../cli/cli.h"
#include "tidings/service.h"
#include "web/web_service.h"

static void *start(const td_config_t *cfg, char *errstr, size_t errlen)
{
    return web_service_start(cfg, errstr, errlen);
}

static void stop(void *svc)
{
    web_service_stop(svc);
}

int web_main(int argc, char **argv)
{
    return td_service_main("web", argc, argv, start, stop);
}
