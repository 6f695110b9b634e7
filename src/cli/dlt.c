/* `tidings dlt list | show | redrive`: the dead letters of SPEC section 1,
 * through tidings/dlt.h (the same code behind the web service's admin
 * endpoint). Configuration as for `tidings events`: --brokers, else
 * TIDINGS_BROKERS, else <data dir>/brokers; TIDINGS_KAFKA_* and
 * TIDINGS_KAFKA_CONFIG for every client. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"
#include "kread.h"
#include "tidings/config.h"
#include "tidings/dlt.h"
#include "tidings/log.h"

#define DLT_KEY_MAX    40
#define DLT_REASON_MAX 60

typedef struct dlt_opts {
    bool as_json, dry_run, all;
    const char *topic;
} dlt_opts_t;

#define AT(field) offsetof(dlt_opts_t, field)
static const td_flag_t dlt_flags[] = {
    {"--topic", "-t", "T", TD_FLAG_STR, AT(topic),
     "only the dead letters of topic T (short name: orders)"},
    {"--all", NULL, NULL, TD_FLAG_SWITCH, AT(all),
     "with redrive --topic: every dead letter of that topic"},
    {"--dry-run", NULL, NULL, TD_FLAG_SWITCH, AT(dry_run),
     "check and show what would be redriven; publish nothing"},
    {"--json", NULL, NULL, TD_FLAG_SWITCH, AT(as_json),
     "list: a JSON array; show: one object; redrive: one\n"
     "object per DLT-REF with its result"},
};
#undef AT

static const td_command_t dlt_cmd = {
    .name = "dlt",
    .flags = dlt_flags,
    .flag_cnt = TD_ARRAY_SIZE(dlt_flags),
    .operands = true,
    .usage = "usage: tidings dlt list [--topic T] [--json]\n"
             "       tidings dlt show DLT-REF [--json]\n"
             "       tidings dlt redrive (DLT-REF... | --topic T --all) [--dry-run] [--json]\n"
             "       (each also takes --brokers LIST, --data DIR)\n\n"
             "The dead letters: records a consumer could not process, kept in <topic>.DLT\n"
             "with the reason. A DLT-REF is <dlt topic>:<partition>:<offset>, as `list`\n"
             "shows it (tidings.orders.DLT:0:3; the short orders.DLT:0:3 works too).\n\n"
             "  list              one line per dead letter: DLT-REF, time, original\n"
             "                    topic/partition/offset, event type, key and reason\n"
             "  show DLT-REF      one dead letter whole: headers, key and value\n"
             "  redrive DLT-REF   republish the original record (key, value, headers\n"
             "                    without tidings_dlt_*) to its original topic and\n"
             "                    partition with tidings_redriven_from = DLT-REF. The\n"
             "                    consumer that dead-lettered it processes it again; one\n"
             "                    that had processed it ignores it. A DLT-REF is redriven\n"
             "                    once: the original topic is scanned for a record with\n"
             "                    that tidings_redriven_from first, and a second redrive is\n"
             "                    refused with the time of the first.\n",
    .more = "\n"
            "Exit status: 0 done, 1 an error or a refused redrive (each is reported),\n"
            "2 usage error.\n",
};

static void print_table(const td_config_t *cfg, const td_dlt_t *list, size_t cnt)
{
    printf("%-32s %-24s %-28s %-34s %-38s %s\n", "DLT-REF", "TIME", "ORIGINAL", "TYPE", "KEY",
           "REASON");
    for (size_t i = 0; i < cnt; i++) {
        const td_dlt_t *d = &list[i];
        char when[TD_TIME_LEN + 1] = "-";
        if (d->rec->timestamp >= 0) td_time_format(d->rec->timestamp, when);
        char orig[300];
        snprintf(orig, sizeof(orig), "%s:%d:%lld", td_topic_short(cfg, d->orig_topic),
                 (int)d->orig_partition, (long long)d->orig_offset);
        char *key = d->rec->key ? kread_printable(d->rec->key, d->rec->key_len, DLT_KEY_MAX)
                                : td_strdup("-");
        char *type = kread_printable(d->type ? d->type : "-", strlen(d->type ? d->type : "-"), 34);
        char *reason = kread_printable(d->reason, strlen(d->reason), DLT_REASON_MAX);
        printf("%-32s %-24s %-28s %-34s %-38s %s\n", d->ref, when, orig, type, key, reason);
        free(key);
        free(type);
        free(reason);
    }
    printf("%zu dead letter%s\n", cnt, cnt == 1 ? "" : "s");
}

static void print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    printf("%s\n", s);
    free(s);
    json_decref(j);
}

/* Redrives one; prints its result. 0 when it was (or would be) redriven. */
static int redrive_one(const td_config_t *cfg, const td_dlt_t *d, bool dry_run, bool as_json)
{
    char err[600];
    td_dlt_redrive_t r;
    int rc = td_dlt_redrive(cfg, d, dry_run, &r, err, sizeof(err));
    if (as_json) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:i}", "ref", d->ref, "result",
                              rc == 0           ? (dry_run ? "would_redrive" : "redriven")
                              : rc == TD_EEXIST ? "refused"
                                                : "error",
                              "topic", r.topic, "partition", (int)r.partition);
        if (rc == 0 && !dry_run) json_object_set_new(o, "offset", json_integer(r.offset));
        if (rc == TD_EEXIST) {
            char when[TD_TIME_LEN + 1];
            td_time_format(r.prior_ms, when);
            json_object_set_new(o, "redrivenAt", json_string(when));
            json_object_set_new(o, "redrivenOffset", json_integer(r.prior_offset));
        }
        if (rc) json_object_set_new(o, "message", json_string(err));
        print_json(o);
    } else if (rc) {
        fprintf(stderr, "tidings dlt: %s\n", err);
    } else if (dry_run) {
        printf("%s: would redrive %s %s to %s [%d] (dry run: nothing published)\n", d->ref,
               d->type ? d->type : "record", d->id ? d->id : "", r.topic, (int)r.partition);
    } else {
        printf("%s: redriven %s %s to %s [%d] @ %lld\n", d->ref, d->type ? d->type : "record",
               d->id ? d->id : "", r.topic, (int)r.partition, (long long)r.offset);
    }
    return rc;
}

int cli_dlt_main(int argc, char **argv)
{
    td_config_t cfg;
    char err[600];
    int rc = 2;
    dlt_opts_t o = {0};
    td_strv_t args = {0}; /* the verb, then the DLT-REFs */
    td_dlt_t *list = NULL;
    size_t cnt = 0;
    memset(&cfg, 0, sizeof(cfg));

    if (td_config_wants_help(argc, argv)) {
        td_config_usage_cmd(stdout, &dlt_cmd);
        rc = 0;
        goto out;
    }
    if (td_config_load_cmd(&cfg, &dlt_cmd, &o, argc, argv, &args, err, sizeof(err))) {
        fprintf(stderr, "tidings dlt: %s\n", err);
        goto out;
    }
    const char *verb = args.cnt ? args.v[0] : NULL;
    const char *const *refs = args.cnt ? args.v + 1 : NULL;
    size_t ref_cnt = args.cnt ? args.cnt - 1 : 0;
    const char *topic = o.topic;
    bool as_json = o.as_json, dry_run = o.dry_run;
    if (!verb || (strcmp(verb, "list") && strcmp(verb, "show") && strcmp(verb, "redrive"))) {
        fprintf(stderr, "tidings dlt: say list, show or redrive; 'tidings dlt --help' shows how\n");
        goto out;
    }
    if (!strcmp(verb, "list") && ref_cnt) {
        fprintf(stderr, "tidings dlt list: takes no DLT-REF (use show)\n");
        goto out;
    }
    if (!strcmp(verb, "show") && ref_cnt != 1) {
        fprintf(stderr, "tidings dlt show: needs exactly one DLT-REF\n");
        goto out;
    }
    if (!strcmp(verb, "redrive") && !(ref_cnt > 0) == !(topic && o.all)) {
        fprintf(stderr, "tidings dlt redrive: give DLT-REFs, or --topic T --all\n");
        goto out;
    }
    td_log_init("dlt", cfg.log_level, cfg.log_json);
    rc = 1;

    if (!strcmp(verb, "list")) {
        if (td_dlt_list(&cfg, topic, &list, &cnt, err, sizeof(err))) {
            fprintf(stderr, "tidings dlt: %s\n", err);
            goto out;
        }
        if (as_json) {
            json_t *arr = json_array();
            for (size_t i = 0; i < cnt; i++)
                json_array_append_new(arr, td_dlt_json(&list[i], false));
            print_json(arr);
        } else {
            print_table(&cfg, list, cnt);
        }
        rc = 0;
    } else if (!strcmp(verb, "show")) {
        td_dlt_t d;
        if (td_dlt_get(&cfg, refs[0], &d, err, sizeof(err))) {
            fprintf(stderr, "tidings dlt: %s\n", err);
            goto out;
        }
        json_t *j = td_dlt_json(&d, true);
        if (as_json) {
            print_json(j);
        } else {
            char *s = json_dumps(j, JSON_INDENT(2));
            printf("%s\n", s);
            free(s);
            json_decref(j);
        }
        td_dlt_clear(&d);
        rc = 0;
    } else {
        int failed = 0;
        if (ref_cnt == 0) {
            if (td_dlt_list(&cfg, topic, &list, &cnt, err, sizeof(err))) {
                fprintf(stderr, "tidings dlt: %s\n", err);
                goto out;
            }
            for (size_t i = 0; i < cnt; i++)
                failed |= redrive_one(&cfg, &list[i], dry_run, as_json) != 0;
        }
        for (size_t i = 0; i < ref_cnt; i++) {
            td_dlt_t d;
            if (td_dlt_get(&cfg, refs[i], &d, err, sizeof(err))) {
                if (as_json)
                    print_json(json_pack("{s:s, s:s, s:s}", "ref", refs[i], "result", "error",
                                         "message", err));
                else
                    fprintf(stderr, "tidings dlt: %s\n", err);
                failed = 1;
                continue;
            }
            failed |= redrive_one(&cfg, &d, dry_run, as_json) != 0;
            td_dlt_clear(&d);
        }
        rc = failed ? 1 : 0;
    }

out:
    fflush(stdout);
    td_dlt_list_free(list, cnt);
    td_config_free(&cfg);
    td_command_free(&dlt_cmd, &o, &args);
    return rc;
}
