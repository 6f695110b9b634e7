/* The insides of a td_db_t, shared by db.c (connections, units, reads,
 * statements), db_schema.c (migrations) and db_background.c (the
 * checkpoint thread and the retention jobs it runs). Not for use outside
 * those files. */
#ifndef TIDINGS_DB_INTERNAL_H
#define TIDINGS_DB_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "tidings/db.h"
#include "tidings/worker.h"

#define STMT_CACHE         64 /* statements cached per connection */
#define MAX_HOOKS          16
#define GROUP_MAX_UNITS    64 /* units sharing one COMMIT at most */
#define GROUP_MAX_MS       5  /* and at most this long after its first began */
#define BUSY_TIMEOUT_MS    5000
#define CHECKPOINT_PAGES   1000 /* WAL pages that make a checkpoint due */
#define CHECKPOINT_IDLE_MS 1000
#define CACHE_IDLE_MS      1000 /* no row changed for this long: caches are freed */
#define NEST_MAX           8    /* units begun inside one held unit at once */
#define MAX_PRUNES         8

typedef struct slot {
    const char *key; /* the sql pointer it was prepared from */
    sqlite3_stmt *st;
    bool busy;
} slot_t;

/* The transaction statements, prepared once per connection: sqlite3_exec
 * would parse them again at every unit and every read. */
static const char *const fixed_sql[] = {
    "BEGIN",          "BEGIN IMMEDIATE",  "COMMIT",           "ROLLBACK",     "SAVEPOINT unit",
    "RELEASE unit",   "ROLLBACK TO unit", "SAVEPOINT part",   "RELEASE part", "ROLLBACK TO part",
    "SAVEPOINT nest", "RELEASE nest",     "ROLLBACK TO nest",
};
#define FIXED_CNT (sizeof(fixed_sql) / sizeof(fixed_sql[0]))

typedef struct conn {
    sqlite3 *sq;
    slot_t cache[STMT_CACHE];
    size_t cache_cnt;
    sqlite3_stmt *fixed[FIXED_CNT];
    struct conn *next_free;
} conn_t;

typedef struct after {
    td_db_after_fn fn;
    void *arg;
} after_t;

/* A unit that ended inside an open group waits on one of these. */
typedef struct ticket {
    struct ticket *next;
    int rc;
    bool done;
} ticket_t;

typedef struct hook {
    td_db_commit_hook_fn fn;
    void *arg;
} hook_t;

struct td_db {
    char *path;
    bool memory; /* no readers, no groups */

    conn_t w;           /* the writer */
    pthread_mutex_t mu; /* the writer and everything below to the readers */
    pthread_cond_t cv;  /* a group committed */
    atomic_int waiting; /* threads blocked in td_db_begin */
    bool tx_open;
    bool group_broken; /* SQLite ended the transaction under us */
    int64_t group_start;
    int64_t group_changes; /* sqlite3_total_changes64 of the writer when it began */
    int group_units;
    uint32_t group_marks;
    ticket_t *tickets;
    /* The unit running now (its thread holds mu). */
    uint32_t unit_marks;
    int sp_depth;
    size_t sp_after[16]; /* after_cnt when each open savepoint began */
    /* Units begun inside the unit of the writer's thread (td__db_hold):
     * depth 1 is the unit itself, each level above a SAVEPOINT nest;
     * nest_after[d] is after_cnt when level d began. 0 outside units. */
    int depth;
    size_t nest_after[NEST_MAX + 1];
    int read_nest; /* td_db_lock calls inside the unit of its thread */
    after_t *afters;
    size_t after_cnt, after_cap;

    pthread_mutex_t hook_mu; /* held while hooks run: see td_db_hook_remove */
    hook_t hooks[MAX_HOOKS];
    int legacy_hook; /* td_db_set_commit_hook's id, -1 when none */

    pthread_mutex_t rmu; /* readers */
    conn_t *free_readers;
    conn_t **readers;
    size_t reader_cnt;

    pthread_key_t cur; /* conn_t *: this thread's connection now */

    /* The checkpointer: copies the WAL back into the database file on a
     * connection of its own, so that no commit waits for it. */
    conn_t ck;
    td_worker_t *ck_worker;
    /* Idle caches (release_idle_caches; under mu): the writer's total
     * changes when last looked at, since when, and whether released. */
    int64_t ck_changes, ck_changed_at;
    bool ck_released;
    /* Durability (tidings/db.h, "group commit"): with sync_full and a WAL
     * file, the writer commits with synchronous=NORMAL (the COMMIT writes
     * the WAL, under mu, without waiting for the disk) and a unit's commit
     * returns once an fdatasync of the WAL that began after its COMMIT has
     * ended: one sync, outside mu, serves every COMMIT made before it
     * began, while the next units already run. */
    bool sync_full;
    int wal_fd;                   /* -1: no WAL of our own to sync (FULL) */
    _Atomic int64_t commit_epoch; /* COMMITs done on the writer */
    pthread_mutex_t sync_mu;      /* the fields below */
    pthread_cond_t sync_cv;
    int64_t synced_epoch; /* every COMMIT up to it is on disk */
    bool syncing;         /* a thread is in fdatasync */
    bool sync_failed;     /* fdatasync failed once: nothing is durable any more */

    /* Retention jobs, run by the checkpoint thread (prune_mu: the list,
     * and a run in progress). */
    pthread_mutex_t prune_mu;
    struct prune_job {
        char table[48];
        td_prune_fn fn;
        int64_t max_age_ms, interval_ms, next_ms; /* next: td_mono_ms */
    } prunes[MAX_PRUNES];
    size_t prune_cnt;
};

/* db.c */
int td__db_exec_err(sqlite3 *sq, const char *sql, char *errstr, size_t errlen);
int td__db_conn_exec(conn_t *c, const char *sql);
int td__db_conn_open(conn_t *c, const char *path, bool reader, char *errstr, size_t errlen);
void td__db_conn_close(conn_t *c);
/* db_schema.c */
int td__db_user_version(sqlite3 *sq, int *out);
int td__db_migrate_conn(sqlite3 *sq, const char *what, int have, const td_migration_t *migs,
                        size_t mig_cnt, const char *component, char *errstr, size_t errlen);
extern const td_migration_t td__db_runtime_migrations[];
extern const size_t td__db_runtime_migration_cnt;
/* db_hooks.c */
/* Runs the hooks marked in marks. Outside db->mu. */
void td__db_run_hooks(td_db_t *db, uint32_t marks);

/* db_background.c */
int td__db_checkpointer_start(td_db_t *db, char *errstr, size_t errlen);
void td__db_checkpointer_stop(td_db_t *db);

#endif
