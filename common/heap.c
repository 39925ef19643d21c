/* SPDX-License-Identifier: MIT */
/* common/heap.c: see heap.h. */
#include <errno.h>
#include <stdlib.h>

#include "heap.h"

static void heap_place(Heap *h, size_t i, HeapNode *n) {
        h->items[i] = n;
        n->idx = (uint32_t) i;
}

static void heap_up(Heap *h, size_t i) {
        HeapNode *n = h->items[i];
        while (i > 0) {
                size_t parent = (i - 1) / 2;
                if (h->items[parent]->key <= n->key)
                        break;
                heap_place(h, i, h->items[parent]);
                i = parent;
        }
        heap_place(h, i, n);
}

static void heap_down(Heap *h, size_t i) {
        HeapNode *n = h->items[i];
        for (;;) {
                size_t c = 2 * i + 1;
                if (c >= h->n)
                        break;
                if (c + 1 < h->n && h->items[c + 1]->key < h->items[c]->key)
                        c++;
                if (n->key <= h->items[c]->key)
                        break;
                heap_place(h, i, h->items[c]);
                i = c;
        }
        heap_place(h, i, n);
}

int heap_set(Heap *h, HeapNode *node, uint64_t key) {
        if (node->idx != HEAP_NONE) {
                node->key = key;
                heap_up(h, node->idx);
                heap_down(h, node->idx);
                return 0;
        }
        if (h->n == h->size) {
                size_t n = h->size ? h->size * 2 : 64;
                if (n >= HEAP_NONE)
                        return -ENOMEM;
                HeapNode **items = reallocarray(h->items, n, sizeof *items);
                if (!items)
                        return -ENOMEM;
                h->items = items;
                h->size = n;
        }
        node->key = key;
        heap_place(h, h->n++, node);
        heap_up(h, node->idx);
        return 0;
}

void heap_remove(Heap *h, HeapNode *node) {
        if (node->idx == HEAP_NONE)
                return;
        size_t i = node->idx;
        node->idx = HEAP_NONE;
        HeapNode *last = h->items[--h->n];
        if (last == node)
                return;
        heap_place(h, i, last);
        heap_up(h, i);
        heap_down(h, last->idx);
}

HeapNode *heap_top(const Heap *h) {
        return h->n > 0 ? h->items[0] : NULL;
}

void heap_done(Heap *h) {
        free(h->items);
        *h = (Heap) {};
}
