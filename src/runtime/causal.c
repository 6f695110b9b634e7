/* Causal chains (tidings/causal.h): choosing the events of an order, user or
 * event id and arranging them as a forest by ce_causationid. Inputs can be
 * large (the web service keeps tens of thousands of events), so lookups go
 * through sorted index arrays instead of nested scans, and the tree walk
 * uses an explicit stack: a crafted chain of causation ids must neither
 * recurse deeply nor loop. */
#include "tidings/causal.h"

#include <stdlib.h>
#include <string.h>

typedef struct item {
    const td_event_t *ev;
    size_t index; /* in the caller's array */
    bool dlt;     /* ev itself is a .DLT copy */
    bool any_dlt; /* some copy is */
    int64_t time_ms;
    long parent; /* in the time-sorted items, -1 = none */
    long first_child, last_child, next_sib;
    long out; /* position in the output, -1 = not yet */
} item_t;

static bool str_eq(const char *a, const char *b)
{
    return a && b && !strcmp(a, b);
}

static bool is_dlt(const td_event_t *ev)
{
    size_t n = ev->topic ? strlen(ev->topic) : 0;
    return n > 4 && !strcmp(ev->topic + n - 4, ".DLT");
}

bool td_causal_matches(const td_event_t *ev, const char *id)
{
    return ev && id &&
           (str_eq(ev->id, id) || str_eq(ev->correlationid, id) || str_eq(ev->subject, id));
}

/* Originals before .DLT copies, then input order: the first of a run of
 * equal ids is the representative. */
static int cmp_id(const void *a, const void *b)
{
    const item_t *x = a, *y = b;
    int c = strcmp(x->ev->id, y->ev->id);
    if (c) return c;
    if (x->dlt != y->dlt) return x->dlt ? 1 : -1;
    return x->index < y->index ? -1 : x->index > y->index;
}

static int cmp_time(const void *a, const void *b)
{
    const item_t *x = a, *y = b;
    if (x->time_ms != y->time_ms) return x->time_ms < y->time_ms ? -1 : 1;
    int c = strcmp(x->ev->topic ? x->ev->topic : "", y->ev->topic ? y->ev->topic : "");
    if (c) return c;
    if (x->ev->partition != y->ev->partition) return x->ev->partition < y->ev->partition ? -1 : 1;
    if (x->ev->offset != y->ev->offset) return x->ev->offset < y->ev->offset ? -1 : 1;
    return strcmp(x->ev->id, y->ev->id);
}

typedef struct by_id {
    const char *id;
    long item;
} by_id_t;

static int cmp_by_id(const void *a, const void *b)
{
    return strcmp(((const by_id_t *)a)->id, ((const by_id_t *)b)->id);
}

static long find_item(const by_id_t *ids, size_t n, const char *id)
{
    by_id_t key = {.id = id};
    const by_id_t *hit = bsearch(&key, ids, n, sizeof(*ids), cmp_by_id);
    return hit ? hit->item : -1;
}

typedef struct grp {
    const char *group;
    size_t pos; /* output position */
    size_t rank;
} grp_t;

static int cmp_grp_name(const void *a, const void *b)
{
    const grp_t *x = a, *y = b;
    int c = strcmp(x->group, y->group);
    if (c) return c;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static int cmp_grp_rank(const void *a, const void *b)
{
    const grp_t *x = a, *y = b;
    if (x->rank != y->rank) return x->rank < y->rank ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/* Pre-order walk of the tree at root into out (explicit stack). */
static void walk(item_t *it, long root, long *stack, td_causal_node_t *out, size_t *emitted)
{
    size_t sp = 0;
    stack[sp++] = root;
    bool is_root = true;
    while (sp) {
        long i = stack[--sp];
        if (it[i].out >= 0) continue;
        td_causal_node_t *node = &out[*emitted];
        node->ev = it[i].ev;
        node->index = it[i].index;
        node->time_ms = it[i].time_ms;
        node->dead_lettered = it[i].any_dlt;
        long p = it[i].parent;
        if (is_root || p < 0 || it[p].out < 0) {
            node->parent = -1;
            node->depth = 0;
            node->delay_ms = -1;
            node->group = node->ev->correlationid ? node->ev->correlationid : node->ev->id;
        } else {
            const td_causal_node_t *pn = &out[it[p].out];
            node->parent = (int)it[p].out;
            node->depth = pn->depth + 1;
            node->delay_ms = node->time_ms - pn->time_ms;
            node->group = pn->group;
        }
        is_root = false;
        it[i].out = (long)(*emitted)++;
        /* Children in reverse, so the earliest is visited first. */
        size_t base = sp;
        for (long c = it[i].first_child; c >= 0; c = it[c].next_sib)
            if (it[c].out < 0) stack[sp++] = c;
        for (size_t a = base, b = sp; a + 1 < b; a++, b--) {
            long t = stack[a];
            stack[a] = stack[b - 1];
            stack[b - 1] = t;
        }
    }
}

size_t td_causal_tree(const td_event_t *const *evs, size_t cnt, td_causal_t *out)
{
    out->nodes = NULL;
    out->cnt = 0;
    item_t *it = td_calloc(cnt ? cnt : 1, sizeof(*it));
    size_t n = 0;
    for (size_t i = 0; i < cnt; i++) {
        if (!evs[i] || !evs[i]->id[0]) continue;
        it[n].ev = evs[i];
        it[n].index = i;
        it[n].dlt = is_dlt(evs[i]);
        n++;
    }
    /* One item per ce_id. */
    qsort(it, n, sizeof(*it), cmp_id);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (m && !strcmp(it[m - 1].ev->id, it[i].ev->id)) {
            it[m - 1].any_dlt |= it[i].dlt;
            continue;
        }
        it[m] = it[i];
        it[m].any_dlt = it[i].dlt;
        if (td_time_parse(it[m].ev->time, &it[m].time_ms) < 0) it[m].time_ms = 0;
        it[m].parent = it[m].first_child = it[m].last_child = it[m].next_sib = it[m].out = -1;
        m++;
    }
    if (!m) goto done;

    /* Link by time order, so children lists come out sorted. */
    qsort(it, m, sizeof(*it), cmp_time);
    by_id_t *ids = td_calloc(m, sizeof(*ids));
    for (size_t i = 0; i < m; i++) ids[i] = (by_id_t){.id = it[i].ev->id, .item = (long)i};
    qsort(ids, m, sizeof(*ids), cmp_by_id);
    for (size_t i = 0; i < m; i++) {
        const char *cause = it[i].ev->causationid;
        long p = cause ? find_item(ids, m, cause) : -1;
        if (p < 0 || p == (long)i) continue;
        it[i].parent = p;
        if (it[p].last_child < 0)
            it[p].first_child = (long)i;
        else
            it[it[p].last_child].next_sib = (long)i;
        it[p].last_child = (long)i;
    }
    free(ids);

    td_causal_node_t *pre = td_calloc(m, sizeof(*pre));
    long *stack = td_calloc(m, sizeof(*stack));
    size_t emitted = 0;
    for (size_t i = 0; i < m; i++)
        if (it[i].parent < 0) walk(it, (long)i, stack, pre, &emitted);
    /* Whatever is left sits on a cycle (or below one): start at its
     * earliest event each time. */
    for (size_t i = 0; i < m; i++)
        if (it[i].out < 0) walk(it, (long)i, stack, pre, &emitted);
    free(stack);

    /* Keep each correlation group together, in order of its first node. */
    grp_t *g = td_calloc(m, sizeof(*g));
    for (size_t i = 0; i < m; i++) g[i] = (grp_t){.group = pre[i].group, .pos = i};
    qsort(g, m, sizeof(*g), cmp_grp_name);
    size_t first = 0;
    for (size_t i = 0; i < m; i++) {
        if (i && strcmp(g[i].group, g[i - 1].group)) first = g[i].pos;
        if (!i) first = g[0].pos;
        g[i].rank = first;
    }
    qsort(g, m, sizeof(*g), cmp_grp_rank);
    long *newpos = td_calloc(m, sizeof(*newpos));
    for (size_t i = 0; i < m; i++) newpos[g[i].pos] = (long)i;
    out->nodes = td_calloc(m, sizeof(*out->nodes));
    for (size_t i = 0; i < m; i++) {
        td_causal_node_t node = pre[g[i].pos];
        if (node.parent >= 0) node.parent = (int)newpos[node.parent];
        out->nodes[i] = node;
    }
    out->cnt = m;
    free(newpos);
    free(g);
    free(pre);
done:
    free(it);
    return out->cnt;
}

size_t td_causal_build(const td_event_t *const *evs, size_t cnt, const char *id, td_causal_t *out)
{
    out->nodes = NULL;
    out->cnt = 0;
    if (!id || !*id || !cnt) return 0;
    /* Correlation groups wanted because an event id matched. */
    const char **groups = td_calloc(cnt, sizeof(*groups));
    size_t group_cnt = 0;
    for (size_t i = 0; i < cnt; i++) {
        const td_event_t *ev = evs[i];
        if (!ev || !str_eq(ev->id, id) || !ev->correlationid) continue;
        bool seen = false;
        for (size_t k = 0; k < group_cnt; k++) seen |= !strcmp(groups[k], ev->correlationid);
        if (!seen) groups[group_cnt++] = ev->correlationid;
    }
    const td_event_t **chosen = td_calloc(cnt, sizeof(*chosen));
    size_t n = 0;
    for (size_t i = 0; i < cnt; i++) {
        const td_event_t *ev = evs[i];
        bool in = td_causal_matches(ev, id);
        for (size_t k = 0; ev && !in && k < group_cnt; k++)
            in = str_eq(ev->correlationid, groups[k]);
        chosen[i] = in ? ev : NULL; /* keeps the positions of evs */
        n += in;
    }
    if (n) td_causal_tree(chosen, cnt, out);
    free(chosen);
    free(groups);
    return out->cnt;
}

void td_causal_free(td_causal_t *chain)
{
    if (!chain) return;
    free(chain->nodes);
    chain->nodes = NULL;
    chain->cnt = 0;
}
