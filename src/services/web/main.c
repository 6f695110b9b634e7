/* `tidings web`: the web service as a process. Wiring only. */
#include <stdio.h>

#include "../../cli/cli.h"
#include "tidings/service.h"
#include "web/web_service.h"

#ifdef TIDINGS_WEB_DIR
#define WEB_DIR_DEFAULT TIDINGS_WEB_DIR
#else
#define WEB_DIR_DEFAULT "none compiled in"
#endif

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
    if (td_config_wants_help(argc, argv)) {
        td_config_usage(stdout, "web");
        printf("  TIDINGS_WEB_DIR               the pages to serve (default " WEB_DIR_DEFAULT
               ")\n");
        return 0;
    }
    return td_service_main("web", argc, argv, start, stop);
}
