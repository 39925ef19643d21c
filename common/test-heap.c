/* SPDX-License-Identifier: MIT */
/* common/test-heap.c: the deadline heap, against a brute-force model. */
#include <errno.h>

#include "common/heap.h"
#include "common/test.h"
#include "common/util.h"

typedef struct Item {
        HeapNode node;
        bool in;
} Item;

/* The heap property, and every item's index pointing back at it. */
static void check(const Heap *h, const Item *items, size_t n_items) {
        size_t in = 0;
        for (size_t i = 0; i < h->n; i++) {
                ASSERT_EQ(h->items[i]->idx, i);
                if (i > 0)
                        ASSERT_TRUE(h->items[(i - 1) / 2]->key <= h->items[i]->key);
        }
        for (size_t i = 0; i < n_items; i++) {
                ASSERT_EQ(heap_contains(&items[i].node), items[i].in);
                in += items[i].in;
        }
        ASSERT_EQ(in, h->n);
}

static uint64_t model_min(const Item *items, size_t n) {
        uint64_t m = UINT64_MAX;
        for (size_t i = 0; i < n; i++)
                if (items[i].in && items[i].node.key < m)
                        m = items[i].node.key;
        return m;
}

TEST(empty) {
        Heap h = {};
        HeapNode n = HEAP_NODE_INIT;
        ASSERT_TRUE(heap_top(&h) == NULL);
        heap_remove(&h, &n); /* in no heap: nothing happens */
        ASSERT_EQ(h.n, 0);
        heap_done(&h);
}

/* Random inserts, moves (earlier and later) and removals, checked against a
 * model after each step. */
TEST(random_operations) {
        enum { N = 300, STEPS = 20000 };
        Item items[N];
        Heap h = {};
        for (size_t i = 0; i < N; i++)
                items[i] = (Item) { .node = HEAP_NODE_INIT };
        for (unsigned step = 0; step < STEPS; step++) {
                Item *it = &items[random_below(N)];
                if (random_below(4) == 0) {
                        heap_remove(&h, &it->node);
                        it->in = false;
                } else {
                        ASSERT_OK(heap_set(&h, &it->node, random_below(1000)));
                        it->in = true;
                }
                if (step % 97 == 0)
                        check(&h, items, N);
                HeapNode *top = heap_top(&h);
                ASSERT_EQ(top ? top->key : UINT64_MAX, model_min(items, N));
        }
        check(&h, items, N);
        heap_done(&h);
}

/* Popping everything yields the keys in order. */
TEST(drain_in_order) {
        enum { N = 5000 };
        Item *items = calloc(N, sizeof *items);
        Heap h = {};
        ASSERT_TRUE(items);
        for (size_t i = 0; i < N; i++) {
                items[i].node = HEAP_NODE_INIT;
                ASSERT_OK(heap_set(&h, &items[i].node, random_below(UINT64_MAX)));
        }
        uint64_t last = 0;
        for (size_t i = 0; i < N; i++) {
                HeapNode *top = heap_top(&h);
                ASSERT_TRUE(top);
                ASSERT_TRUE(top->key >= last);
                last = top->key;
                heap_remove(&h, top);
                ASSERT_FALSE(heap_contains(top));
        }
        ASSERT_TRUE(heap_top(&h) == NULL);
        heap_done(&h);
        free(items);
}

int main(void) {
        RUN(empty);
        RUN(random_operations);
        RUN(drain_in_order);
        return 0;
}
