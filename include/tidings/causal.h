/* Causal chains of events, shared by `tidings trace` and the web service's
 * event-flow view so that both answer "what happened to this order" the
 * same way.
 *
 * Which events belong to an id (td_causal_matches, td_causal_build): those
 * whose ce_id, ce_correlationid or ce_subject (the key) is the id; and when
 * the id is some event's ce_id, every event of that event's correlation
 * group too (the saga it is part of).
 *
 * How they are arranged (td_causal_tree): one node per ce_id (at-least-once
 * delivery may repeat an event; a copy on a .DLT topic marks the event
 * dead_lettered instead of adding a node), each under the event that caused
 * it (ce_causationid), siblings and roots by time; a causation cycle is
 * broken at its earliest event. Nodes come in print order: grouped by the
 * correlation id of their root (groups in order of their first event), each
 * root's tree in pre-order.
 *
 * Pure computation, no I/O, no globals: any thread. */
#ifndef TIDINGS_CAUSAL_H
#define TIDINGS_CAUSAL_H

#include "tidings/envelope.h"

typedef struct td_causal_node {
    const td_event_t *ev; /* borrowed from the caller's array */
    size_t index;         /* position of ev in that array */
    int parent;           /* index in nodes of the cause; -1 for a root (caused by a
                             request, or the cause is not among the events) */
    int depth;            /* 0 for a root */
    int64_t time_ms;      /* ce_time, ms since the epoch (0 if unparsable) */
    int64_t delay_ms;     /* time_ms - the parent's time_ms; -1 for a root */
    const char *group;    /* the root's correlation id (else its ce_id); borrowed */
    bool dead_lettered;   /* a copy of this event was seen on a .DLT topic */
} td_causal_node_t;

typedef struct td_causal {
    td_causal_node_t *nodes; /* print order, each node after its parent */
    size_t cnt;
} td_causal_t;

/* True when ev's ce_id, correlation id or subject is id. */
bool td_causal_matches(const td_event_t *ev, const char *id);

/* The forest of evs[0..cnt) (NULL entries skipped) into *out. Nodes borrow
 * the events: evs must outlive out. Returns out->cnt. Free with
 * td_causal_free. */
size_t td_causal_tree(const td_event_t *const *evs, size_t cnt, td_causal_t *out);

/* The chain of id: the events of evs that belong to id (see above), as a
 * forest (td_causal_tree; node index still refers to evs). Returns the
 * number of nodes: 0 when nothing matches. */
size_t td_causal_build(const td_event_t *const *evs, size_t cnt, const char *id, td_causal_t *out);

void td_causal_free(td_causal_t *chain);

#endif
