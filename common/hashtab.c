/* SPDX-License-Identifier: MIT */
/* common/hashtab.c: see hashtab.h. */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "hashtab.h"
#include "util.h"

#define BUCKETS_MIN 16U

static size_t bucket_of(const HashTable *t, uint64_t hash) {
        return (size_t) (hash & (t->n_buckets - 1));
}

/* Rehashes into n buckets. Node order within a chain is not kept (it carries no meaning). */
static int hashtab_resize(HashTable *t, size_t n) {
        HashNode **b = calloc(n, sizeof *b);
        if (!b)
                return -ENOMEM;
        for (size_t i = 0; i < t->n_buckets; i++)
                for (HashNode *node = t->buckets[i], *next; node; node = next) {
                        next = node->next;
                        size_t j = (size_t) (node->hash & (n - 1));
                        node->next = b[j];
                        b[j] = node;
                }
        free(t->buckets);
        t->buckets = b;
        t->n_buckets = n;
        return 0;
}

int hashtab_insert(HashTable *t, HashNode *node, uint64_t hash) {
        /* Load factor at most 1: one pointer per item, short chains. */
        if (t->n + 1 > t->n_buckets) {
                size_t n = t->n_buckets ? t->n_buckets * 2 : BUCKETS_MIN;
                if (n < t->n_buckets)
                        return -ENOMEM;
                int r = hashtab_resize(t, n);
                if (r < 0)
                        return r;
        }
        size_t i = bucket_of(t, hash);
        node->hash = hash;
        node->next = t->buckets[i];
        t->buckets[i] = node;
        t->n++;
        return 0;
}

void hashtab_remove(HashTable *t, HashNode *node) {
        for (HashNode **p = &t->buckets[bucket_of(t, node->hash)]; *p; p = &(*p)->next)
                if (*p == node) {
                        *p = node->next;
                        node->next = NULL;
                        t->n--;
                        break;
                }
        /* Shrink when mostly empty, so a burst does not pin its bucket array. */
        if (t->n_buckets > BUCKETS_MIN && t->n < t->n_buckets / 8)
                (void) hashtab_resize(t, t->n_buckets / 4 > BUCKETS_MIN ? t->n_buckets / 4 : BUCKETS_MIN);
}

static HashNode *chain_find(HashNode *n, uint64_t hash) {
        while (n && n->hash != hash)
                n = n->next;
        return n;
}

HashNode *hashtab_first(const HashTable *t, uint64_t hash) {
        if (t->n == 0)
                return NULL;
        return chain_find(t->buckets[bucket_of(t, hash)], hash);
}

HashNode *hashtab_next(const HashNode *n) {
        return chain_find(n->next, n->hash);
}

void hashtab_done(HashTable *t) {
        t->buckets = mfree(t->buckets);
        t->n_buckets = t->n = 0;
}

int hash_key_new(HashKey *ret) {
        return random_bytes(ret->k, sizeof ret->k);
}

/* ---- SipHash-2-4 (Aumasson, Bernstein: "SipHash: a fast short-input PRF", 2012) ---- */

#define ROTL(x, b) (uint64_t) (((x) << (b)) | ((x) >> (64 - (b))))

static uint64_t load_le64(const uint8_t *p) {
        uint64_t v = 0;
        for (int i = 7; i >= 0; i--)
                v = (v << 8) | p[i];
        return v;
}

static void sip_round(SipHash *s) {
        s->v0 += s->v1;
        s->v1 = ROTL(s->v1, 13);
        s->v1 ^= s->v0;
        s->v0 = ROTL(s->v0, 32);
        s->v2 += s->v3;
        s->v3 = ROTL(s->v3, 16);
        s->v3 ^= s->v2;
        s->v0 += s->v3;
        s->v3 = ROTL(s->v3, 21);
        s->v3 ^= s->v0;
        s->v2 += s->v1;
        s->v1 = ROTL(s->v1, 17);
        s->v1 ^= s->v2;
        s->v2 = ROTL(s->v2, 32);
}

static void sip_compress(SipHash *s, uint64_t m) {
        s->v3 ^= m;
        sip_round(s);
        sip_round(s);
        s->v0 ^= m;
}

void siphash24_init(SipHash *s, const HashKey *key) {
        uint64_t k0 = load_le64(key->k), k1 = load_le64(key->k + 8);
        *s = (SipHash) {
                .v0 = 0x736f6d6570736575ULL ^ k0,
                .v1 = 0x646f72616e646f6dULL ^ k1,
                .v2 = 0x6c7967656e657261ULL ^ k0,
                .v3 = 0x7465646279746573ULL ^ k1,
        };
}

void siphash24_feed(SipHash *s, const void *data, size_t len) {
        const uint8_t *p = data;
        size_t fill = s->len % 8;
        s->len += len;
        /* The word begun by an earlier feed, then whole words, then the rest
         * (little-endian, as the reference reads them). */
        if (fill > 0) {
                for (; fill < 8 && len > 0; fill++, len--)
                        s->tail |= (uint64_t) *p++ << (8 * fill);
                if (fill < 8)
                        return;
                sip_compress(s, s->tail);
                s->tail = 0;
        }
        for (; len >= 8; p += 8, len -= 8) {
                uint64_t w;
                memcpy(&w, p, 8);
                sip_compress(s, le64toh(w));
        }
        for (size_t i = 0; i < len; i++)
                s->tail |= (uint64_t) p[i] << (8 * i);
}

uint64_t siphash24_end(SipHash *s) {
        sip_compress(s, s->tail | ((uint64_t) (s->len & 0xff) << 56));
        s->v2 ^= 0xff;
        for (int i = 0; i < 4; i++)
                sip_round(s);
        return s->v0 ^ s->v1 ^ s->v2 ^ s->v3;
}

uint64_t siphash24(const void *data, size_t len, const HashKey *key) {
        SipHash s;
        siphash24_init(&s, key);
        siphash24_feed(&s, data, len);
        return siphash24_end(&s);
}

void siphash24_feed_string(SipHash *s, const char *str) {
        if (!str) {
                uint8_t none = 0xff;
                siphash24_feed(s, &none, 1);
                return;
        }
        siphash24_feed(s, str, strlen(str) + 1);
}
