/* Entry points of the `tidings` subcommands. Each gets argv with argv[0] =
 * the subcommand name and returns the process exit code. */
#ifndef TIDINGS_CLI_H
#define TIDINGS_CLI_H

int cli_run_main(int argc, char **argv);      /* run.c: supervisor of all services */
int cli_broker_main(int argc, char **argv);   /* broker.c: embedded broker */
int cli_events_main(int argc, char **argv);   /* events.c: decoded events */
int cli_trace_main(int argc, char **argv);    /* trace.c: causal chain */
int cli_asyncapi_main(int argc, char **argv); /* asyncapi.c: the catalogue as AsyncAPI */
int cli_dlt_main(int argc, char **argv);      /* dlt.c: dead letters */

#endif
