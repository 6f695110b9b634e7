/* The one `tidings` binary: every part of the system is a subcommand, so a
 * deployment ships one file and `tidings run` can start each service as a
 * child process of itself. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

typedef struct command {
    const char *name;
    int (*main)(int argc, char **argv);
    const char *usage;
} command_t;

static const command_t commands[] = {
    {"run", cli_run_main, "run [--brokers LIST] [--data DIR]   all services + web UI"},
    {"broker", cli_broker_main, "broker [--count N]                  the embedded broker alone"},
    {"users", users_main, "users                               the users service (8081)"},
    {"products", products_main, "products                            the products service (8082)"},
    {"orders", orders_main, "orders                              the orders service (8083)"},
    {"payments", payments_main, "payments                            the payments service (8084)"},
    {"notifications", notifications_main,
     "notifications                       the notifications service (8085)"},
    {"web", web_main, "web                                 the web UI (8080)"},
    {"events", cli_events_main,
     "events [--topic T] [--from-beginning] [--follow] [--json]\n"
     "                                              decoded events from the topics"},
    {"trace", cli_trace_main,
     "trace ID                            the causal chain of an order, "
     "user or event"},
    {"dlt", cli_dlt_main,
     "dlt list [--topic T] [--json]        the dead letters: reason, original place, type, key\n"
     "  tidings dlt show DLT-REF                    one dead letter whole\n"
     "  tidings dlt redrive (DLT-REF... | --topic T --all) [--dry-run]\n"
     "                                              republish dead letters, once each"},
    {"asyncapi", cli_asyncapi_main,
     "asyncapi                            the AsyncAPI 3.1 document of every topic and event"},
};

static void usage(FILE *out)
{
    fprintf(out, "tidings %s: an event-driven shop on Apache Kafka\n\n", TIDINGS_VERSION);
    fprintf(out, "usage: tidings <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(out, "  tidings %s\n", commands[i].usage);
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
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (!strcmp(name, commands[i].name)) return commands[i].main(argc - 1, argv + 1);
    fprintf(stderr, "tidings: unknown command '%s'; 'tidings help' lists the commands\n", name);
    return 2;
}
