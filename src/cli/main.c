/* The one `tidings` binary: every part of the system is a subcommand, so a
 * deployment ships one file and `tidings run` can start each service as a
 * child process of itself. A command is a tool of src/cli or a service,
 * which its declaration (tidings/service.h) describes. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "notifications/notifications_service.h"
#include "orders/orders_service.h"
#include "payments/payments_service.h"
#include "products/products_service.h"
#include "tidings/service.h"
#include "users/users_service.h"
#include "web/web_service.h"

typedef struct command {
    const char *name;
    int (*main)(int argc, char **argv);
    const char *usage;
    const td_service_decl_t *svc; /* a service: name, main and usage come from it */
} command_t;

static const command_t commands[] = {
    {"run", cli_run_main, "run [--brokers LIST] [--data DIR]   all services + web UI", NULL},
    {"broker", cli_broker_main, "broker [--count N]                  the embedded broker alone",
     NULL},
    {.svc = &users_service_decl},
    {.svc = &products_service_decl},
    {.svc = &orders_service_decl},
    {.svc = &payments_service_decl},
    {.svc = &notifications_service_decl},
    {.svc = &web_service_decl},
    {"events", cli_events_main,
     "events [--topic T] [--from-beginning] [--follow] [--json]\n"
     "                                              decoded events from the topics",
     NULL},
    {"trace", cli_trace_main,
     "trace ID                            the causal chain of an order, "
     "user or event",
     NULL},
    {"dlt", cli_dlt_main,
     "dlt list [--topic T] [--json]        the dead letters: reason, original place, type, key\n"
     "  tidings dlt show DLT-REF                    one dead letter whole\n"
     "  tidings dlt redrive (DLT-REF... | --topic T --all) [--dry-run]\n"
     "                                              republish dead letters, once each",
     NULL},
    {"asyncapi", cli_asyncapi_main,
     "asyncapi                            the AsyncAPI 3.1 document of every topic and event",
     NULL},
};

static const char *command_name(const command_t *c)
{
    return c->svc ? td_service_name(c->svc->id) : c->name;
}

static void usage(FILE *out)
{
    td_config_t defaults;
    td_config_defaults(&defaults); /* the services' ports */
    fprintf(out, "tidings %s: an event-driven shop on Apache Kafka\n\n", TIDINGS_VERSION);
    fprintf(out, "usage: tidings <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < TD_ARRAY_SIZE(commands); i++) {
        const command_t *c = &commands[i];
        if (c->svc)
            fprintf(out, "  tidings %-35s %s (%d)\n", command_name(c), c->svc->summary,
                    td_config_port(&defaults, c->svc->id));
        else
            fprintf(out, "  tidings %s\n", c->usage);
    }
    td_config_free(&defaults);
    fprintf(out, "  tidings version                             print the version\n"
                 "  tidings help                                this text\n\n"
                 "Each command takes --help. Configuration comes from TIDINGS_* environment\n"
                 "variables and flags (flags win); see README.md.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *name = argv[1];
    if (!strcmp(name, "help") || !strcmp(name, "--help") || !strcmp(name, "-h")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(name, "version") || !strcmp(name, "--version")) {
        printf("tidings %s\n", TIDINGS_VERSION);
        return 0;
    }
    for (size_t i = 0; i < TD_ARRAY_SIZE(commands); i++) {
        const command_t *c = &commands[i];
        if (strcmp(name, command_name(c))) continue;
        return c->svc ? td_service_main(c->svc, argc - 1, argv + 1) : c->main(argc - 1, argv + 1);
    }
    fprintf(stderr, "tidings: unknown command '%s'; 'tidings help' lists the commands\n", name);
    return 2;
}
