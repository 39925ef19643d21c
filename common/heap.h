/* SPDX-License-Identifier: MIT */
/* common/heap.h: an intrusive binary min-heap over 64-bit keys (deadlines):
 * an item embeds a HeapNode, which knows its place, so that moving or
 * removing any item is O(log n) and the earliest is O(1). The heap only
 * allocates its array of pointers; inserting can fail (-ENOMEM) only when
 * that array has to grow, and then nothing changed. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define HEAP_NONE UINT32_MAX

typedef struct HeapNode {
        uint64_t key;
        uint32_t idx; /* its place in the heap, HEAP_NONE when in none */
} HeapNode;

#define HEAP_NODE_INIT ((HeapNode) { .idx = HEAP_NONE })

typedef struct Heap {
        HeapNode **items;
        size_t n, size;
} Heap;

/* Puts the node in the heap under key, or moves it there if it is in already. */
int heap_set(Heap *h, HeapNode *node, uint64_t key);
/* Takes the node out; a node in no heap is left alone. */
void heap_remove(Heap *h, HeapNode *node);
/* The node with the smallest key, or NULL. */
HeapNode *heap_top(const Heap *h);
static inline int heap_contains(const HeapNode *node) {
        return node->idx != HEAP_NONE;
}
/* Frees the array; the items are the caller's (and keep stale indexes). */
void heap_done(Heap *h);
