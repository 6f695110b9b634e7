/* Configuration of SPEC section 1: environment variables with the SPEC
 * defaults, overridden by command-line flags. A bad value is a startup
 * error that names the variable or flag. */
#ifndef TIDINGS_CONFIG_H
#define TIDINGS_CONFIG_H

#include <stdio.h>

#include "tidings/catalog.h"
#include "tidings/common.h"

/* The services, in start order. */
typedef enum td_service {
    TD_SVC_USERS,
    TD_SVC_PRODUCTS,
    TD_SVC_ORDERS,
    TD_SVC_PAYMENTS,
    TD_SVC_NOTIFICATIONS,
    TD_SVC_WEB,
    TD_SVC__COUNT
} td_service_t;

/* "users", ... "web"; and back (-1 when unknown). */
const char *td_service_name(td_service_t svc);
int td_service_from_name(const char *name);

enum { TD_LOG_DEBUG = 0, TD_LOG_INFO, TD_LOG_WARN, TD_LOG_ERROR };

typedef struct td_config {
    char *service;         /* short name of the running role, e.g. "orders" */
    char *brokers;         /* bootstrap list; NULL = not given (embedded) */
    bool brokers_embedded; /* brokers came from <data>/brokers (tidings run/broker) */
    char *data_dir;        /* TIDINGS_DATA_DIR, default ./data */
    unsigned char *secret; /* HS256 key bytes (loaded by td_config_load_secret) */
    size_t secret_len;
    char *topic_prefix;         /* TIDINGS_TOPIC_PREFIX, default "tidings." */
    int partitions;             /* TIDINGS_PARTITIONS, default 6 */
    int replication;            /* TIDINGS_REPLICATION, default 3 (0 = not set: min(3, brokers)) */
    int64_t retention_ms;       /* TIDINGS_RETENTION_MS, default 7 days */
    int64_t inbox_retention_ms; /* TIDINGS_INBOX_RETENTION_MS, default twice retention_ms */
    int notification_retention_days; /* TIDINGS_NOTIFICATION_RETENTION_DAYS, 90; 0 = forever */
    int64_t payment_limit;           /* TIDINGS_PAYMENT_LIMIT in cents, default 500000 */
    int log_level;                   /* TIDINGS_LOG_LEVEL, default info */
    bool log_json;                   /* TIDINGS_LOG_FORMAT=json|text, default json */
    char *admin_password;            /* TIDINGS_ADMIN_PASSWORD or NULL */
    bool allow_http_endpoints;       /* TIDINGS_ALLOW_HTTP_ENDPOINTS */
    int delivery_max_attempts;       /* TIDINGS_DELIVERY_MAX_ATTEMPTS, default 8 */
    int64_t delivery_backoff_ms;     /* TIDINGS_DELIVERY_BACKOFF_MS, default 1000 */
    int fetch_wait_ms;   /* TIDINGS_FETCH_WAIT_MS; default 1 on the embedded broker, else 100 */
    bool fetch_wait_set; /* TIDINGS_FETCH_WAIT_MS was given */
    char *listen_addr;   /* TIDINGS_LISTEN_ADDR, default 127.0.0.1 */
    int ports[TD_SVC__COUNT]; /* TIDINGS_<SERVICE>_PORT, defaults 8080.. */
    char *vapid_subject;      /* TIDINGS_VAPID_SUBJECT, default mailto:admin@tidings.local */
    bool db_sync_normal;      /* TIDINGS_DB_SYNC=normal; default full */
    /* TIDINGS_CORS_ORIGINS: comma-separated origins ("*" = any); default
     * the web service's own, http://127.0.0.1:<web port> and
     * http://localhost:<web port> (and the listen address's, when it is a
     * specific one). */
    char *cors_origins;
    int max_streams_per_user; /* TIDINGS_MAX_STREAMS_PER_USER, default 32 */
    char *smtp_url;           /* TIDINGS_SMTP_URL, or NULL: the email channel is off */
    char *smtp_user;          /* TIDINGS_SMTP_USER, or NULL */
    char *smtp_password;      /* TIDINGS_SMTP_PASSWORD, or NULL */
    char *smtp_from;          /* TIDINGS_SMTP_FROM, or NULL: tidings <no-reply@tidings.local> */
    /* TIDINGS_PUBLIC_NOTIFICATIONS_URL: the notifications service as
     * users' mail clients reach it (the unsubscribe links), or NULL:
     * http://<listen address>:<notifications port>. */
    char *public_notifications_url;
} td_config_t;

/* Fills cfg with defaults, then the environment, then flags from argv
 * (argv[0] is skipped). Common flags: --brokers LIST, --data DIR,
 * --port N, --log-level L, --listen ADDR. Unknown flags and bad values are
 * errors (TD_EINVAL, message in errstr naming the variable or flag).
 * Positional arguments are left: *argi gets the index of the first one
 * (NULL to forbid them). If brokers were not given and <data>/brokers
 * exists, it is read and brokers_embedded set. service may be NULL. */
int td_config_load(td_config_t *cfg, const char *service, int argc, char **argv, int *argi,
                   char *errstr, size_t errlen);
/* True when argv (argv[0] skipped) holds --help or -h before any "--". */
bool td_config_wants_help(int argc, char **argv);
/* Prints the common flags and the TIDINGS_* variables with their defaults,
 * for `tidings <command> --help`. command is the subcommand name. */
void td_config_usage(FILE *out, const char *command);
/* ---- a command's own flags ----
 * A command other than a service (events, trace, dlt, run), or a
 * service's pre_main (users' --create-admin), declares its own flags in a
 * table like the settings table: td_config_load_cmd parses them among the
 * common ones and td_config_usage_cmd lists both in --help, so no command
 * filters argv by hand. */
typedef enum td_flag_kind {
    TD_FLAG_SWITCH, /* takes no value: sets a bool */
    TD_FLAG_STR,    /* takes a value: a const char * into argv, the last one given */
    TD_FLAG_LIST,   /* takes a value, repeatable: each appended to a td_strv_t */
} td_flag_kind_t;

/* Strings borrowed from argv, in argv order; v (NULL when cnt is 0) is the
 * holder's to free. */
typedef struct td_strv {
    const char **v;
    size_t cnt;
} td_strv_t;

typedef struct td_flag {
    const char *flag;    /* "--topic"; also given as --topic=value */
    const char *alias;   /* a short form ("-t"), or NULL */
    const char *metavar; /* its value in --help ("T"); NULL for a switch */
    td_flag_kind_t kind;
    size_t off;       /* of its bool, const char * or td_strv_t in the command's options */
    const char *help; /* its --help text; each "\n" starts an indented line */
} td_flag_t;

typedef struct td_command {
    const char *name; /* "events": td_config_t.service, and the name --help gives */
    const td_flag_t *flags;
    size_t flag_cnt;
    /* Operands (trace's ID, dlt's verb and DLT-REFs) may stand anywhere
     * among the flags, and everything after "--" is one; false: an
     * operand is an error. */
    bool operands;
    const char *usage; /* --help before the options: usage lines and what it does */
    const char *more;  /* --help after the options, or NULL */
    bool env_help;     /* --help also lists the environment with its defaults */
} td_command_t;

/* td_config_load for cmd (cfg->service = cmd->name): its own flags set
 * their fields in opts (zeroed by the caller), the common ones cfg; the
 * operands go to *operands (NULL when cmd takes none). Errors as
 * td_config_load's ("unknown option", "--topic needs a value"). On success
 * and on failure the caller frees the lists with td_command_free. */
int td_config_load_cmd(td_config_t *cfg, const td_command_t *cmd, void *opts, int argc, char **argv,
                       td_strv_t *operands, char *errstr, size_t errlen);
/* True when argv (argv[0] skipped) gives f (its flag or short form, alone
 * or with =value) before any "--": for a hook that runs instead of the
 * command (users' --create-admin). */
bool td_config_has_flag(int argc, char **argv, const td_flag_t *f);
/* Frees the td_strv_t lists of opts that cmd's TD_FLAG_LIST rows filled,
 * and operands (either may be NULL); leaves them empty. */
void td_command_free(const td_command_t *cmd, void *opts, td_strv_t *operands);
/* `tidings <cmd> --help`: cmd->usage, then the options: cmd's own, the
 * common ones (--port only for a service), --help; the environment with
 * its defaults when cmd->env_help; then cmd->more. */
void td_config_usage_cmd(FILE *out, const td_command_t *cmd);

/* Defaults only (tests). */
void td_config_defaults(td_config_t *cfg);
/* Loads the token key: TIDINGS_SECRET if set (at least 32 bytes, else an
 * error), else <data>/secret, created once with 48 random url-safe
 * characters (mode 0600, safe when several services race to create it). */
int td_config_load_secret(td_config_t *cfg, char *errstr, size_t errlen);
void td_config_free(td_config_t *cfg);

/* The port of svc. */
int td_config_port(const td_config_t *cfg, td_service_t svc);
/* The full topic name: prefix + short ("orders" -> "tidings.orders").
 * Caller frees. */
char *td_topic_name(const td_config_t *cfg, const char *short_name);
/* Path of a file in the data dir. Caller frees. */
char *td_data_path(const td_config_t *cfg, const char *file);

#endif
