/* SPDX-License-Identifier: MIT */
/* common/hashtab.h: an intrusive hash table with separate chaining, and the
 * keyed hash (SipHash-2-4) its users hash their keys with.
 *
 * An item embeds a HashNode; the table stores pointers to nodes and never
 * allocates per item, so an insert of an item can fail only when the bucket
 * array has to grow (and then the item is not inserted). The table does not
 * know keys: a lookup walks the nodes of one hash value and the caller
 * compares its key (hashtab_first()/hashtab_next()). Keys under the control
 * of callers of the daemon must be hashed with a secret key (hash_key_new()),
 * so that nobody can aim a flood of entries at one bucket. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct HashNode HashNode;
struct HashNode {
        HashNode *next;
        uint64_t hash;
};

/* The item that embeds node as member. */
#define HASHTAB_ITEM(node, type, member) ((type *) (void *) ((char *) (node) - offsetof(type, member)))

typedef struct HashTable {
        HashNode **buckets; /* n_buckets, a power of two; NULL while empty and never grown */
        size_t n_buckets;
        size_t n;
} HashTable;

/* Inserts the node under hash. The node must not be in a table. -ENOMEM
 * (nothing changed) when the bucket array cannot grow. */
int hashtab_insert(HashTable *t, HashNode *node, uint64_t hash);
/* Removes a node that is in the table. */
void hashtab_remove(HashTable *t, HashNode *node);
/* The first node stored under hash, and the one after n under the same hash
 * (other hash values sharing the bucket are skipped). */
HashNode *hashtab_first(const HashTable *t, uint64_t hash);
HashNode *hashtab_next(const HashNode *n);
/* Frees the bucket array; the items are the caller's. */
void hashtab_done(HashTable *t);

#define HASH_KEY_SIZE 16
typedef struct HashKey {
        uint8_t k[HASH_KEY_SIZE];
} HashKey;

/* A random key (getrandom()). */
int hash_key_new(HashKey *ret);

/* SipHash-2-4 over a stream of chunks: init, feed any number of times, end. */
typedef struct SipHash {
        uint64_t v0, v1, v2, v3;
        uint64_t tail; /* bytes not yet compressed, little-endian */
        size_t len;    /* bytes fed in all */
} SipHash;

void siphash24_init(SipHash *s, const HashKey *key);
void siphash24_feed(SipHash *s, const void *data, size_t len);
uint64_t siphash24_end(SipHash *s);
uint64_t siphash24(const void *data, size_t len, const HashKey *key);
/* A string with its NUL (so "a","b" and "ab" hash apart); NULL as one 0xff byte. */
void siphash24_feed_string(SipHash *s, const char *str);
