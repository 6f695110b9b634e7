/* `tidings users`: the users service as a process, or the one-shot
 * `tidings users --create-admin EMAIL`. Wiring only. */
#include <stdio.h>

#include "../../cli/cli.h"
#include "tidings/service.h"
#include "users/users_service.h"

static void *start(const td_config_t *cfg, char *errstr, size_t errlen)
{
    return users_service_start(cfg, errstr, errlen);
}

static void stop(void *svc)
{
    users_service_stop(svc);
}

int users_main(int argc, char **argv)
{
    if (td_config_wants_help(argc, argv)) {
        td_config_usage(stdout, "users");
        printf("\n  --create-admin EMAIL   create (or promote) an admin account with the password\n"
               "                         from TIDINGS_ADMIN_PASSWORD or one line on stdin,\n"
               "                         print its userId and exit\n");
        return 0;
    }
    if (users_wants_create_admin(argc, argv)) return users_create_admin_main(argc, argv);
    return td_service_main("users", argc, argv, start, stop);
}
