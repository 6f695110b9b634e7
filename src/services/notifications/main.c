/* `tidings notifications`: the notifications service as a process. Wiring
 * only. */
#include <stdio.h>

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
    if (td_config_wants_help(argc, argv)) {
        td_config_usage(stdout, "notifications");
        printf("\nTIDINGS_VAPID_PRIVATE_KEY is the Web Push (VAPID) key as 43 base64url\n"
               "characters (the P-256 private scalar); without it a key is generated once and\n"
               "kept in <data>/notifications.db. Changing it voids every browser's push\n"
               "subscription. TIDINGS_VAPID_SUBJECT is the contact pushed with it (mailto: or\n"
               "https:). TIDINGS_ALLOW_HTTP_ENDPOINTS=1 accepts http:// push endpoints and\n"
               "webhooks on loopback, for tests.\n");
        return 0;
    }
    return td_service_main("notifications", argc, argv, start, stop);
}
