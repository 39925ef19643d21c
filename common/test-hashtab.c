/* SPDX-License-Identifier: MIT */
/* common/test-hashtab.c: the hash table and SipHash-2-4. */
#include <errno.h>

#include "common/hashtab.h"
#include "common/test.h"
#include "common/util.h"

typedef struct Item {
        HashNode node;
        unsigned key;
        bool in;
} Item;

static const HashKey key_0_15 = { { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 } };

/* The reference vectors of the SipHash paper and its reference code:
 * key 00..0f, message 00..len-1. */
TEST(siphash_vectors) {
        static const struct {
                size_t len;
                uint64_t want;
        } v[] = {
                { 0, 0x726fdb47dd0e0e31ULL },
                { 1, 0x74f839c593dc67fdULL },
                { 15, 0xa129ca6149be45e5ULL },
        };
        uint8_t msg[64];
        for (size_t i = 0; i < sizeof msg; i++)
                msg[i] = (uint8_t) i;
        for (size_t i = 0; i < ELEMENTSOF(v); i++)
                ASSERT_TRUE(siphash24(msg, v[i].len, &key_0_15) == v[i].want);
}

/* Fed in pieces, the same as in one go. */
TEST(siphash_streaming) {
        uint8_t msg[40];
        for (size_t i = 0; i < sizeof msg; i++)
                msg[i] = (uint8_t) (i * 7);
        for (size_t cut = 0; cut <= sizeof msg; cut++) {
                SipHash s;
                siphash24_init(&s, &key_0_15);
                siphash24_feed(&s, msg, cut);
                siphash24_feed(&s, msg + cut, sizeof msg - cut);
                ASSERT_TRUE(siphash24_end(&s) == siphash24(msg, sizeof msg, &key_0_15));
        }
}

/* Strings carry their terminator: ("a","b") and ("ab") hash apart, NULL and "" too. */
TEST(siphash_strings) {
        SipHash a, b, c, d;
        siphash24_init(&a, &key_0_15);
        siphash24_feed_string(&a, "a");
        siphash24_feed_string(&a, "b");
        siphash24_init(&b, &key_0_15);
        siphash24_feed_string(&b, "ab");
        ASSERT_TRUE(siphash24_end(&a) != siphash24_end(&b));
        siphash24_init(&c, &key_0_15);
        siphash24_feed_string(&c, NULL);
        siphash24_init(&d, &key_0_15);
        siphash24_feed_string(&d, "");
        ASSERT_TRUE(siphash24_end(&c) != siphash24_end(&d));
}

static uint64_t item_hash(unsigned key, uint64_t mod) {
        uint64_t h = siphash24(&key, sizeof key, &key_0_15);
        return mod ? h % mod : h; /* mod: force collisions */
}

static Item *find(HashTable *t, unsigned key, uint64_t mod) {
        uint64_t h = item_hash(key, mod);
        for (HashNode *n = hashtab_first(t, h); n; n = hashtab_next(n)) {
                Item *it = (Item *) n;
                if (it->key == key)
                        return it;
        }
        return NULL;
}

/* Insert, find, remove, across growth and shrinking, with and without
 * colliding hash values. */
static void table_roundtrip(unsigned count, uint64_t mod) {
        HashTable t = {};
        Item *items = calloc(count, sizeof *items);
        ASSERT_TRUE(items);
        ASSERT_TRUE(hashtab_first(&t, 1) == NULL);
        for (unsigned i = 0; i < count; i++) {
                items[i].key = i;
                ASSERT_OK(hashtab_insert(&t, &items[i].node, item_hash(i, mod)));
                items[i].in = true;
        }
        ASSERT_EQ(t.n, count);
        ASSERT_TRUE(t.n_buckets >= count);
        for (unsigned i = 0; i < count; i++)
                ASSERT_TRUE(find(&t, i, mod) == &items[i]);
        ASSERT_TRUE(find(&t, count, mod) == NULL);
        /* Remove every other one, then check all. */
        for (unsigned i = 0; i < count; i += 2) {
                hashtab_remove(&t, &items[i].node);
                items[i].in = false;
        }
        for (unsigned i = 0; i < count; i++)
                ASSERT_TRUE(find(&t, i, mod) == (items[i].in ? &items[i] : NULL));
        /* Remove the rest: the bucket array shrinks as it goes, nothing is lost. */
        for (unsigned i = 1; i < count; i += 2) {
                hashtab_remove(&t, &items[i].node);
                for (unsigned j = i + 2; j < count; j += 2)
                        if (j % 97 == 1)
                                ASSERT_TRUE(find(&t, j, mod) == &items[j]);
        }
        ASSERT_EQ(t.n, 0);
        ASSERT_TRUE(t.n_buckets <= 16);
        hashtab_done(&t);
        ASSERT_TRUE(t.buckets == NULL);
        free(items);
}

TEST(table_many) {
        table_roundtrip(100000, 0);
}

TEST(table_collisions) {
        table_roundtrip(500, 3); /* three hash values in all */
}

/* Equal hash values, different keys: hashtab_next() visits each. */
TEST(table_same_hash) {
        HashTable t = {};
        Item it[5] = {}, other = { .key = 9 };
        for (unsigned i = 0; i < ELEMENTSOF(it); i++) {
                it[i].key = i;
                ASSERT_OK(hashtab_insert(&t, &it[i].node, 42));
        }
        ASSERT_OK(hashtab_insert(&t, &other.node, 42 + 16)); /* same bucket, other hash */
        unsigned seen = 0;
        for (HashNode *n = hashtab_first(&t, 42); n; n = hashtab_next(n))
                seen |= 1U << ((Item *) n)->key;
        ASSERT_EQ(seen, 0x1f);
        hashtab_done(&t);
}

TEST(key_random) {
        HashKey a, b;
        ASSERT_OK(hash_key_new(&a));
        ASSERT_OK(hash_key_new(&b));
        ASSERT_TRUE(memcmp(&a, &b, sizeof a) != 0);
}

int main(void) {
        RUN(siphash_vectors);
        RUN(siphash_streaming);
        RUN(siphash_strings);
        RUN(table_many);
        RUN(table_collisions);
        RUN(table_same_hash);
        RUN(key_random);
        return 0;
}
