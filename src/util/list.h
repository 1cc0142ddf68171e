/* util/list.h - intrusive circular doubly linked list (header only).
 *
 * Embed a `struct list` in a struct and recover the container with
 * list_entry(). An initialised list head points to itself. Nodes own no
 * memory: removing a node never frees anything.
 */
#ifndef FERRY_UTIL_LIST_H
#define FERRY_UTIL_LIST_H

#include <stddef.h>

struct list {
    struct list *prev;
    struct list *next;
};

#define list_entry(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#define list_foreach(pos, head) for ((pos) = (head)->next; (pos) != (head); (pos) = (pos)->next)
#define list_foreach_safe(pos, tmp, head)                                      \
    for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head); (pos) = (tmp), (tmp) = (pos)->next)

static inline void list_init(struct list *l)
{
    l->prev = l;
    l->next = l;
}
static inline int list_empty(const struct list *l)
{
    return l->next == l;
}
static inline void list_insert_tail(struct list *head, struct list *n)
{
    n->prev = head->prev;
    n->next = head;
    head->prev->next = n;
    head->prev = n;
}
static inline void list_insert_head(struct list *head, struct list *n)
{
    n->next = head->next;
    n->prev = head;
    head->next->prev = n;
    head->next = n;
}
/* Unlink n and re-initialise it, so removing twice is harmless. */
static inline void list_remove(struct list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    list_init(n);
}
static inline int list_linked(const struct list *n)
{
    return n->next != n;
}

#endif
