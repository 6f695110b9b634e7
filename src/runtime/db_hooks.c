/* Commit hooks of a database (tidings/db.h): up to MAX_HOOKS callbacks a
 * unit marks (td_db_mark) and db.c runs once the unit's group committed
 * (td__db_run_hooks, outside db->mu); the relay and the work queues are
 * woken this way. hook_mu is held while hooks run, so removing one waits
 * for its calls to end. */
#include "tidings/db.h"

#include <assert.h>
#include <pthread.h>

#include "db_internal.h"

int td_db_hook_add(td_db_t *db, td_db_commit_hook_fn fn, void *arg)
{
    pthread_mutex_lock(&db->hook_mu);
    int id = -1;
    for (int i = 0; i < MAX_HOOKS && id < 0; i++)
        if (!db->hooks[i].fn) id = i;
    assert(id >= 0 && "more than 16 commit hooks on one database");
    if (id >= 0) db->hooks[id] = (hook_t){fn, arg};
    pthread_mutex_unlock(&db->hook_mu);
    return id;
}

void td_db_hook_remove(td_db_t *db, int id)
{
    if (id < 0 || id >= MAX_HOOKS) return;
    /* hook_mu is held while hooks run: once we hold it, none of this
     * hook's calls is still running, and none starts after. */
    pthread_mutex_lock(&db->hook_mu);
    db->hooks[id] = (hook_t){NULL, NULL};
    pthread_mutex_unlock(&db->hook_mu);
}

void td_db_mark(td_db_t *db, int id)
{
    assert(td__db_in_unit(db));
    if (id >= 0 && id < MAX_HOOKS) db->unit_marks |= 1u << id;
}

void td_db_set_commit_hook(td_db_t *db, td_db_commit_hook_fn fn, void *arg)
{
    if (db->legacy_hook >= 0) td_db_hook_remove(db, db->legacy_hook);
    db->legacy_hook = fn ? td_db_hook_add(db, fn, arg) : -1;
}

void td__db_mark_dirty(td_db_t *db)
{
    td_db_mark(db, db->legacy_hook);
}

/* Runs the hooks marked in marks. Outside db->mu. */
void td__db_run_hooks(td_db_t *db, uint32_t marks)
{
    pthread_mutex_lock(&db->hook_mu);
    for (int i = 0; i < MAX_HOOKS; i++)
        if ((marks & (1u << i)) && db->hooks[i].fn) db->hooks[i].fn(db->hooks[i].arg);
    pthread_mutex_unlock(&db->hook_mu);
}
