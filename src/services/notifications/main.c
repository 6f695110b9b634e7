/* `tidings notifications`: the notifications service as a process. Wiring
 * only. */
#include "../../cli/cli.h"
#include "notifications/notifications_service.h"
#include "tidings/service.h"

static void *start(const td_config_t *cfg, char *errstr, size_t errlen)
{
    return notifications_service_start(cfg, errstr, errlen);
}

static void stop(void *svc)
{
    notifications_service_stop(svc);
}

int notifications_main(int argc, char **argv)
{
    return td_service_main("notifications", argc, argv, start, stop);
}
