/* SPDX-License-Identifier: MIT */
/* protocol/test-varlink-stream.c: NUL-delimited JSON framing, caps, and the
 * wiping of everything that may have carried a secret. */
#include <sys/socket.h>

#include "common/test.h"
#include "common/util.h"
#include "varlink.h"

#define SMALL_MAX 64U

static void socketpair_nb(int sp[2]) {
        ASSERT_OK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sp));
}

/* Feeds a NUL-terminated frame (the terminator included). */
static void feed_frame(VarlinkStream *s, const char *text) {
        ASSERT_OK(varlink_stream_feed(s, text, strlen(text) + 1));
}

static void assert_next_int(VarlinkStream *s, const char *key, int64_t want) {
        json_object *o = NULL, *v;
        ASSERT_EQ(varlink_stream_next(s, &o), 1);
        ASSERT_TRUE(json_object_object_get_ex(o, key, &v));
        ASSERT_TRUE(json_object_is_type(v, json_type_int));
        ASSERT_EQ(json_object_get_int64(v), want);
        json_object_put(o);
}

static bool all_zero(const void *p, size_t n) {
        const unsigned char *b = p;
        for (size_t i = 0; i < n; i++)
                if (b[i] != 0)
                        return false;
        return true;
}

/* A frame of exactly `len` bytes (without the terminator): {"k":"xxx…"} */
static char *make_frame(size_t len) {
        static const char head[] = "{\"k\":\"", tail[] = "\"}";
        size_t fixed = strlen(head) + strlen(tail);
        ASSERT_TRUE(len >= fixed);
        char *b = malloc(len + 1);
        ASSERT_TRUE(b);
        memcpy(b, head, strlen(head));
        memset(b + strlen(head), 'x', len - fixed);
        memcpy(b + len - strlen(tail), tail, strlen(tail));
        b[len] = 0;
        return b;
}

/* A value `depth` levels deep as json-c counts them: every value is a level,
 * scalars included, so {} is 1, {"a":1} is 2 and {"a":[1]} is 3. */
static char *make_nested(int depth) {
        size_t n = 0, size = 16 + 2 * (size_t) depth;
        char *b = malloc(size);
        ASSERT_TRUE(b);
        if (depth <= 1) {
                strcpy(b, "{}");
                return b;
        }
        n += (size_t) sprintf(b, "{\"a\":");
        for (int i = 2; i < depth; i++)
                b[n++] = '[';
        b[n++] = '1';
        for (int i = 2; i < depth; i++)
                b[n++] = ']';
        b[n++] = '}';
        b[n] = 0;
        return b;
}

TEST(single_frame) {
        VarlinkStream s;
        json_object *o = NULL;

        varlink_stream_init(&s, -1, 0, 0);
        ASSERT_EQ(s.message_max, VARLINK_MESSAGE_MAX_DEFAULT);
        ASSERT_EQ(s.depth_max, VARLINK_DEPTH_MAX_DEFAULT);

        ASSERT_EQ(varlink_stream_next(&s, &o), 0); /* empty buffer */
        feed_frame(&s, "{\"a\":42}");
        assert_next_int(&s, "a", 42);
        ASSERT_EQ(s.rlen, 0);
        ASSERT_EQ(varlink_stream_next(&s, &o), 0);
        ASSERT_TRUE(o == NULL);
        varlink_stream_done(&s);
        ASSERT_EQ(s.fd, -1);
        ASSERT_TRUE(s.rbuf == NULL);
}

TEST(split_byte_by_byte) {
        static const char text[] = "{ \"method\" : \"io.tokend.agent.GetToken\", \"parameters\": {\"n\": 7} }";
        VarlinkStream s;
        json_object *o = NULL, *p;

        varlink_stream_init(&s, -1, 0, 0);
        for (size_t i = 0; i < sizeof text - 1; i++) {
                ASSERT_OK(varlink_stream_feed(&s, text + i, 1));
                ASSERT_EQ(varlink_stream_next(&s, &o), 0);
        }
        ASSERT_OK(varlink_stream_feed(&s, "", 1)); /* the terminator */
        ASSERT_EQ(varlink_stream_next(&s, &o), 1);
        ASSERT_TRUE(json_object_object_get_ex(o, "parameters", &p));
        ASSERT_TRUE(json_object_object_get_ex(p, "n", &p));
        ASSERT_EQ(json_object_get_int(p), 7);
        json_object_put(o);
        ASSERT_EQ(s.rlen, 0);
        varlink_stream_done(&s);
}

TEST(pipelined_frames) {
        /* Three frames and the start of a fourth in one buffer. */
        static const char buf[] = "{\"a\":1}\0{\"a\":2}\0\n {\"a\":3} \0{\"a\":";
        VarlinkStream s;
        json_object *o = NULL;

        varlink_stream_init(&s, -1, 0, 0);
        ASSERT_OK(varlink_stream_feed(&s, buf, sizeof buf - 1));
        assert_next_int(&s, "a", 1);
        assert_next_int(&s, "a", 2);
        assert_next_int(&s, "a", 3);
        ASSERT_EQ(varlink_stream_next(&s, &o), 0);
        ASSERT_EQ(s.rlen, strlen("{\"a\":"));
        feed_frame(&s, "4}");
        assert_next_int(&s, "a", 4);
        ASSERT_EQ(varlink_stream_next(&s, &o), 0);
        varlink_stream_done(&s);
}

TEST(message_cap) {
        static const struct {
                size_t len;  /* frame length without the terminator */
                bool nul;    /* terminator sent */
                int want;
        } cases[] = {
                { SMALL_MAX - 1, true, 1 },
                { SMALL_MAX, true, 1 },           /* exactly at the cap: accepted */
                { SMALL_MAX + 1, true, -EMSGSIZE }, /* one over: rejected */
                { SMALL_MAX, false, 0 },          /* at the cap, no NUL yet: wait */
                { SMALL_MAX + 1, false, -EMSGSIZE }, /* no NUL yet but already over: reject */
                { 4 * SMALL_MAX, false, -EMSGSIZE },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                VarlinkStream s;
                json_object *o = NULL;
                _cleanup_free_ char *f = make_frame(cases[i].len);

                fprintf(stderr, "   case %zu: len=%zu nul=%d\n", i, cases[i].len, cases[i].nul);
                varlink_stream_init(&s, -1, SMALL_MAX, 0);
                ASSERT_OK(varlink_stream_feed(&s, f, cases[i].len + cases[i].nul));
                ASSERT_EQ(varlink_stream_next(&s, &o), cases[i].want);
                if (cases[i].want > 0) {
                        ASSERT_TRUE(o);
                        json_object_put(o);
                } else
                        ASSERT_TRUE(o == NULL);
                varlink_stream_done(&s);
        }
}

TEST(feed_beyond_input_cap) {
        VarlinkStream s;
        char chunk[4096];

        /* The input buffer takes at most one frame, its NUL and one read's worth more. */
        memset(chunk, ' ', sizeof chunk);
        varlink_stream_init(&s, -1, SMALL_MAX, 0);
        size_t fed = 0;
        int r;
        while ((r = varlink_stream_feed(&s, chunk, sizeof chunk)) == 0)
                fed += sizeof chunk;
        ASSERT_EQ(r, -ENOBUFS);
        ASSERT_TRUE(fed > SMALL_MAX);
        ASSERT_TRUE(fed < SMALL_MAX + 1 + 16384 + 1);
        varlink_stream_done(&s);
}

TEST(depth_cap) {
        static const struct {
                int depth_max;
                int depth;
                int want;
        } cases[] = {
                { 4, 1, 1 },
                { 4, 2, 1 },
                { 4, 4, 1 },
                { 4, 5, -EBADMSG },
                { 0, VARLINK_DEPTH_MAX_DEFAULT, 1 }, /* 0 selects the default */
                { 0, VARLINK_DEPTH_MAX_DEFAULT + 1, -EBADMSG },
                { 0, 1000, -EBADMSG },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                VarlinkStream s;
                json_object *o = NULL;
                _cleanup_free_ char *f = make_nested(cases[i].depth);

                fprintf(stderr, "   case %zu: depth_max=%d depth=%d\n", i, cases[i].depth_max, cases[i].depth);
                varlink_stream_init(&s, -1, 0, cases[i].depth_max);
                feed_frame(&s, f);
                feed_frame(&s, "{\"a\":9}");
                ASSERT_EQ(varlink_stream_next(&s, &o), cases[i].want);
                if (o)
                        json_object_put(o);
                /* Whatever happened to the first frame, the next one parses. */
                assert_next_int(&s, "a", 9);
                varlink_stream_done(&s);
        }
}

TEST(bad_frames_then_good) {
        static const struct {
                const char *text;
                int want;
        } cases[] = {
                { "", -EBADMSG },                 /* empty frame */
                { "[]", -EBADMSG },               /* not an object */
                { "[{\"a\":1}]", -EBADMSG },
                { "1", -EBADMSG },
                { "\"string\"", -EBADMSG },
                { "null", -EBADMSG },
                { "true", -EBADMSG },
                { "garbage", -EBADMSG },
                { "\x01\xff\xfe", -EBADMSG },
                { "{\"a\":", -EBADMSG },          /* truncated inside the frame */
                { "{\"a\":1", -EBADMSG },
                { "{\"a\":1} x", -EBADMSG },      /* trailing garbage */
                { "{\"a\":1}}", -EBADMSG },
                { "{} {}", -EBADMSG },            /* two values in one frame */
                { "{\"a\":1}[]", -EBADMSG },
                { "{\"a\":1,}", -EBADMSG },       /* json-c's strict mode */
                { "{\"a\":01}", -EBADMSG },
                { "{\"a\":\"\xc3\x28\"}", -EBADMSG },  /* invalid UTF-8 in a string */
                { "{\"a\":\"\xc3\xa9\"}", 1 },   /* valid UTF-8 */
                { "{}", 1 },
                { " \t\n{\"a\":1} \r\n\t", 1 },   /* surrounding whitespace is fine */
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                VarlinkStream s;
                json_object *o = NULL;

                fprintf(stderr, "   case %zu: \"%s\"\n", i, cases[i].text);
                varlink_stream_init(&s, -1, 0, 0);
                feed_frame(&s, cases[i].text);
                feed_frame(&s, "{\"a\":2}");
                ASSERT_EQ(varlink_stream_next(&s, &o), cases[i].want);
                if (cases[i].want > 0) {
                        ASSERT_TRUE(json_object_is_type(o, json_type_object));
                        json_object_put(o);
                } else
                        ASSERT_TRUE(o == NULL);
                assert_next_int(&s, "a", 2);
                ASSERT_EQ(varlink_stream_next(&s, &o), 0);
                varlink_stream_done(&s);
        }
}

TEST(consumed_input_is_wiped) {
        static const char secret[] = "{\"token\":\"SECRETSECRETSECRET\"}";
        VarlinkStream s;
        json_object *o = NULL;

        varlink_stream_init(&s, -1, 0, 0);
        feed_frame(&s, secret);
        ASSERT_OK(varlink_stream_feed(&s, "{", 1));
        ASSERT_EQ(varlink_stream_next(&s, &o), 1);
        json_object_put_erase(o);
        /* The remaining byte moved to the front; the rest of what the frame occupied is zero. */
        ASSERT_EQ(s.rlen, 1);
        ASSERT_EQ(s.rbuf[0], '{');
        ASSERT_TRUE(all_zero(s.rbuf + 1, sizeof secret));
        varlink_stream_done(&s);
}

TEST(round_trip_socketpair) {
        VarlinkStream a, b;
        json_object *o = NULL;
        int sp[2];

        socketpair_nb(sp);
        varlink_stream_init(&a, sp[0], 0, 0);
        varlink_stream_init(&b, sp[1], 0, 0);

        /* Nothing to read: not an error. */
        ASSERT_EQ(varlink_stream_fill(&b), 0);
        ASSERT_EQ(b.rlen, 0);
        ASSERT_FALSE(varlink_stream_has_output(&a));

        static const char *msgs[] = {
                "{\"method\":\"io.tokend.agent.GetToken\",\"parameters\":{\"account\":\"a\"}}",
                "{\"parameters\":{\"list\":[1,2.5,\"x\",null,true,{\"n\":{}}]},\"continues\":true}",
                "{}",
        };
        json_object *sent[ELEMENTSOF(msgs)];
        for (size_t i = 0; i < ELEMENTSOF(msgs); i++) {
                sent[i] = json_tokener_parse(msgs[i]);
                ASSERT_TRUE(sent[i]);
                /* enqueue consumes (and wipes) its argument: hand it a copy */
                json_object *copy = NULL;
                ASSERT_OK(json_object_deep_copy(sent[i], &copy, NULL));
                ASSERT_OK(varlink_stream_enqueue(&a, copy));
        }
        ASSERT_TRUE(varlink_stream_has_output(&a));
        size_t queued = a.wlen;
        ASSERT_EQ(varlink_stream_flush(&a), 0);
        ASSERT_FALSE(varlink_stream_has_output(&a));
        /* Written output does not linger in the buffer. */
        ASSERT_TRUE(all_zero(a.wbuf, queued));

        ASSERT_EQ(varlink_stream_fill(&b), 0);
        ASSERT_EQ(b.rlen, queued);
        for (size_t i = 0; i < ELEMENTSOF(msgs); i++) {
                ASSERT_EQ(varlink_stream_next(&b, &o), 1);
                ASSERT_TRUE(json_object_equal(o, sent[i]));
                json_object_put(o);
                json_object_put(sent[i]);
        }
        ASSERT_EQ(varlink_stream_next(&b, &o), 0);

        /* The peer goes away: EOF is reported as -ECONNRESET. */
        varlink_stream_done(&a);
        ASSERT_EQ(varlink_stream_fill(&b), -ECONNRESET);
        ASSERT_TRUE(b.read_eof);
        varlink_stream_done(&b);
}

/* The output is written by hand, not by json-c: every kind of value, every
 * character that must be escaped and the integer extremes come back equal. */
/* Two streams on the ends of a nonblocking socket pair. */
static void stream_pair(VarlinkStream *a, VarlinkStream *b) {
        int sp[2];
        socketpair_nb(sp);
        varlink_stream_init(a, sp[0], 0, 0);
        varlink_stream_init(b, sp[1], 0, 0);
}

/* Every ASCII byte but NUL, then `tail` (multibyte characters). */
static void all_ascii(char *buf, const char *tail) {
        char *p = buf;
        for (int ch = 1; ch < 0x80; ch++)
                *p++ = (char) ch;
        strcpy(p, tail);
}

/* Sends what a holds as one frame (checking it is plain JSON and its NUL),
 * receives it on b and checks it equals want; returns it. */
static json_object *send_and_check(VarlinkStream *a, VarlinkStream *b, json_object *want) {
        ASSERT_EQ(strlen(a->wbuf + a->wpos) + 1, a->wlen - a->wpos);
        ASSERT_OK(varlink_stream_flush(a));
        json_object *got = NULL;
        for (int i = 0; i < 100 && !got; i++) {
                ASSERT_OK(varlink_stream_fill(b));
                ASSERT_TRUE(varlink_stream_next(b, &got) >= 0);
        }
        ASSERT_TRUE(got);
        if (!json_object_equal(got, want))
                TEST_FAIL("want %s, got %s", json_object_to_json_string(want), json_object_to_json_string(got));
        return got;
}

TEST(serializer_round_trip) {
        VarlinkStream a, b;
        stream_pair(&a, &b);

        char all[200];
        all_ascii(all, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x94\x91"); /* é € and a 4-byte character */
        json_object *o = json_object_new_object();
        json_object_object_add(o, all, json_object_new_string(all)); /* a key needs escaping too */
        json_object_object_add(o, "empty", json_object_new_string(""));
        json_object_object_add(o, "min", json_object_new_int64(INT64_MIN));
        json_object_object_add(o, "max", json_object_new_int64(INT64_MAX));
        json_object_object_add(o, "umax", json_object_new_uint64(UINT64_MAX));
        json_object_object_add(o, "zero", json_object_new_int(0));
        json_object_object_add(o, "neg", json_object_new_int(-42));
        json_object_object_add(o, "dbl", json_object_new_double(-2.5e-7));
        json_object_object_add(o, "t", json_object_new_boolean(true));
        json_object_object_add(o, "f", json_object_new_boolean(false));
        json_object_object_add(o, "null", NULL);
        json_object *arr = json_object_new_array();
        json_object_array_add(arr, json_object_new_array());
        json_object_array_add(arr, json_object_new_object());
        json_object_array_add(arr, json_object_new_string("\"\\/"));
        json_object_array_add(arr, NULL);
        json_object_object_add(o, "arr", arr);
        json_object *want = NULL;
        ASSERT_EQ(json_object_deep_copy(o, &want, NULL), 0);

        ASSERT_OK(varlink_stream_enqueue(&a, o));
        /* The frame is plain JSON, nothing but the NUL at its end. */
        json_object *got = send_and_check(&a, &b, want);
        json_object *u;
        ASSERT_TRUE(json_object_object_get_ex(got, "umax", &u));
        ASSERT_TRUE(json_object_get_uint64(u) == UINT64_MAX);
        json_object_put(got);
        json_object_put(want);
        varlink_stream_done(&a);
        varlink_stream_done(&b);
}

TEST(round_trip_partial_writes) {
        /* A message much larger than the socket buffer needs several flushes. */
        const size_t big = 600 * 1024;
        VarlinkStream a, b;
        json_object *o = NULL;
        int sp[2], sndbuf = 4096;

        socketpair_nb(sp);
        ASSERT_OK(setsockopt(sp[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf));
        varlink_stream_init(&a, sp[0], 0, 0);
        varlink_stream_init(&b, sp[1], 3 * big, 0);

        char *payload = malloc(big + 1), *payload2 = malloc(2 * big);
        ASSERT_TRUE(payload && payload2);
        memset(payload, 'p', big);
        payload[big] = 0;
        memset(payload2, 'q', 2 * big - 100);
        payload2[2 * big - 100] = 0;
        json_object *m = json_object_new_object();
        json_object_object_add(m, "payload", json_object_new_string(payload));
        json_object_object_add(m, "n", json_object_new_int(1));
        ASSERT_OK(varlink_stream_enqueue(&a, m));
        m = json_object_new_object();
        json_object_object_add(m, "n", json_object_new_int(2));
        ASSERT_OK(varlink_stream_enqueue(&a, m));

        int r, rounds = 0;
        while ((r = varlink_stream_flush(&a)) == -EAGAIN) {
                ASSERT_TRUE(varlink_stream_has_output(&a));
                /* A third message queued while output is pending keeps its
                 * place; it is too large for the free tail of the buffer, so
                 * the pending part is moved to a new one. */
                if (rounds == 1) {
                        ASSERT_TRUE(a.wpos > 0);
                        m = json_object_new_object();
                        json_object_object_add(m, "n", json_object_new_int(3));
                        json_object_object_add(m, "payload", json_object_new_string(payload2));
                        ASSERT_OK(varlink_stream_enqueue(&a, m));
                }
                ASSERT_EQ(varlink_stream_fill(&b), 0);
                rounds++;
                ASSERT_TRUE(rounds < 100000);
        }
        ASSERT_EQ(r, 0);
        ASSERT_TRUE(rounds >= 2);
        while ((r = varlink_stream_next(&b, &o)) == 0)
                ASSERT_EQ(varlink_stream_fill(&b), 0);
        ASSERT_EQ(r, 1);
        json_object *v;
        ASSERT_TRUE(json_object_object_get_ex(o, "payload", &v));
        ASSERT_STREQ(json_object_get_string(v), payload);
        json_object_put(o);
        for (int want = 2; want <= 3; want++) {
                while ((r = varlink_stream_next(&b, &o)) == 0)
                        ASSERT_EQ(varlink_stream_fill(&b), 0);
                ASSERT_EQ(r, 1);
                ASSERT_TRUE(json_object_object_get_ex(o, "n", &v));
                ASSERT_EQ(json_object_get_int(v), want);
                if (want == 3) {
                        ASSERT_TRUE(json_object_object_get_ex(o, "payload", &v));
                        ASSERT_STREQ(json_object_get_string(v), payload2);
                }
                json_object_put(o);
        }
        free(payload);
        free(payload2);
        varlink_stream_done(&a);
        varlink_stream_done(&b);
}

TEST(fill_stops_at_cap) {
        /* A peer sending an endless frame without a NUL fills the buffer up to
         * its cap and no further; the frame is then rejected as too large. */
        VarlinkStream a, b;
        json_object *o = NULL;
        char junk[8192];
        int sp[2], r = 0;

        memset(junk, 'j', sizeof junk);
        socketpair_nb(sp);
        varlink_stream_init(&a, sp[0], 0, 0);
        varlink_stream_init(&b, sp[1], SMALL_MAX, 0);
        for (int i = 0; i < 100 && r != -ENOBUFS; i++) {
                (void) send(a.fd, junk, sizeof junk, MSG_DONTWAIT);
                r = varlink_stream_fill(&b);
                ASSERT_TRUE(r == 0 || r == -ENOBUFS);
        }
        ASSERT_EQ(r, -ENOBUFS);
        ASSERT_TRUE(b.rlen <= SMALL_MAX + 1 + 16384);
        ASSERT_EQ(varlink_stream_next(&b, &o), -EMSGSIZE);
        varlink_stream_done(&a);
        varlink_stream_done(&b);
}

TEST(output_cap) {
        VarlinkStream s;
        const size_t chunk = 1024 * 1024;
        char *text = malloc(chunk + 1);
        int r = 0;
        size_t n = 0;

        ASSERT_TRUE(text);
        memset(text, 'o', chunk);
        text[chunk] = 0;
        varlink_stream_init(&s, -1, 0, 0);
        /* Never flushed: the queue grows to VARLINK_OUTPUT_MAX and no further. */
        while (r == 0 && n < 64) {
                json_object *m = json_object_new_object();
                json_object_object_add(m, "s", json_object_new_string(text));
                r = varlink_stream_enqueue(&s, m);
                n++;
        }
        ASSERT_EQ(r, -ENOBUFS);
        ASSERT_EQ(n, VARLINK_OUTPUT_MAX / chunk);
        ASSERT_TRUE(s.wlen - s.wpos <= VARLINK_OUTPUT_MAX);
        free(text);
        varlink_stream_done(&s);
}

/* varlink_stream_enqueue_fields() writes what varlink_stream_enqueue()
 * would for the same message, escapes like it, and keeps nothing of a
 * message that does not fit. */
TEST(enqueue_fields) {
        VarlinkStream a, b;
        stream_pair(&a, &b);

        char all[200];
        all_ascii(all, "\xc3\xa9\xf0\x9f\x94\x91");
        const char *const strv[] = { "read", all, "", "\"q\"" };
        for (int variant = 0; variant < 4; variant++) {
                bool continues = variant & 1;
                size_t n_strv = variant & 2 ? 0 : ELEMENTSOF(strv);
                const VarlinkOutField fields[] = {
                        { .name = "token", .type = VARLINK_OUT_STRING, .string = all, .len = strlen(all) },
                        { .name = "nul", .type = VARLINK_OUT_STRING, .string = "a\0b", .len = 3 },
                        { .name = "min", .type = VARLINK_OUT_INT, .integer = INT64_MIN },
                        { .name = "max", .type = VARLINK_OUT_INT, .integer = INT64_MAX },
                        { .name = "scopes", .type = VARLINK_OUT_STRV, .strv = strv, .len = n_strv },
                };
                json_object *want = json_object_new_object(), *params = json_object_new_object(),
                            *arr = json_object_new_array();
                json_object_object_add(params, "token", json_object_new_string(all));
                json_object_object_add(params, "nul", json_object_new_string_len("a\0b", 3));
                json_object_object_add(params, "min", json_object_new_int64(INT64_MIN));
                json_object_object_add(params, "max", json_object_new_int64(INT64_MAX));
                for (size_t i = 0; i < n_strv; i++)
                        json_object_array_add(arr, json_object_new_string(strv[i]));
                json_object_object_add(params, "scopes", arr);
                json_object_object_add(want, "parameters", params);
                if (continues)
                        json_object_object_add(want, "continues", json_object_new_boolean(true));

                ASSERT_OK(varlink_stream_enqueue_fields(&a, fields, ELEMENTSOF(fields), continues));
                json_object_put(send_and_check(&a, &b, want));
                json_object_put(want);
        }
        /* Fields marked plain (json_plain()) are written as they are: the same JSON. */
        const char *const plain_strv[] = { "read", "write:all", "" };
        const char *plain_token = "eyJ.abc-DEF_0/9+=~ \x7f\xc3\xa9";
        ASSERT_TRUE(json_plain(plain_token, strlen(plain_token)));
        const VarlinkOutField plain[] = {
                { .name = "token", .type = VARLINK_OUT_STRING, .string = plain_token, .len = strlen(plain_token),
                  .plain = true },
                { .name = "scopes", .type = VARLINK_OUT_STRV, .strv = plain_strv, .len = 3, .plain = true },
        };
        json_object *want = json_object_new_object(), *params = json_object_new_object(),
                    *arr = json_object_new_array();
        json_object_object_add(params, "token", json_object_new_string(plain_token));
        for (size_t i = 0; i < ELEMENTSOF(plain_strv); i++)
                json_object_array_add(arr, json_object_new_string(plain_strv[i]));
        json_object_object_add(params, "scopes", arr);
        json_object_object_add(want, "parameters", params);
        ASSERT_OK(varlink_stream_enqueue_fields(&a, plain, ELEMENTSOF(plain), false));
        json_object_put(send_and_check(&a, &b, want));
        json_object_put(want);
        varlink_stream_done(&a);
        varlink_stream_done(&b);

        /* Past the cap: -ENOBUFS, and what was queued before stays, whole. */
        VarlinkStream s;
        const size_t chunk = 1024 * 1024;
        char *text = malloc(chunk);
        ASSERT_TRUE(text);
        memset(text, 'o', chunk);
        varlink_stream_init(&s, -1, 0, 0);
        const VarlinkOutField big[] = { { .name = "s", .type = VARLINK_OUT_STRING, .string = text, .len = chunk } };
        int r = 0;
        size_t n = 0, before = 0;
        while (r == 0 && n < 64) {
                before = s.wlen - s.wpos;
                r = varlink_stream_enqueue_fields(&s, big, 1, false);
                n++;
        }
        ASSERT_EQ(r, -ENOBUFS);
        ASSERT_EQ(n, VARLINK_OUTPUT_MAX / chunk);
        ASSERT_EQ(s.wlen - s.wpos, before);
        ASSERT_EQ(s.wbuf[s.wlen - 1], 0);
        free(text);
        varlink_stream_done(&s);
}

/* ---- wiping ---- */

static void assert_strings_wiped(json_object *o) {
        switch (json_object_get_type(o)) {
        case json_type_string:
                ASSERT_TRUE(json_object_get_string_len(o) > 0);
                ASSERT_TRUE(all_zero(json_object_get_string(o), (size_t) json_object_get_string_len(o)));
                break;
        case json_type_object: {
                json_object_object_foreach(o, key, val) {
                        (void) key;
                        assert_strings_wiped(val);
                }
                break;
        }
        case json_type_array:
                for (size_t i = 0; i < json_object_array_length(o); i++)
                        assert_strings_wiped(json_object_array_get_idx(o, i));
                break;
        case json_type_null:
        case json_type_boolean:
        case json_type_double:
        case json_type_int:
                break;
        }
}

static json_object *secret_tree(void) {
        /* Short strings live inside the json-c object, long ones in a separate
         * allocation: cover both, nested in objects and arrays. */
        json_object *o = json_tokener_parse(
                "{\"access_token\":\"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0b2tlbmQifQ.c2lnbmF0dXJlc2lnbmF0dXJl\","
                "\"s\":\"tiny\",\"n\":5,\"d\":1.5,\"b\":true,\"z\":null,"
                "\"nested\":{\"refresh_token\":\"rt-0123456789abcdef0123456789abcdef\","
                "\"list\":[\"a1\",[\"deep-secret-deep-secret-deep-secret\"],{\"k\":\"v\"}]}}");
        ASSERT_TRUE(o);
        return o;
}

TEST(put_erase_wipes_strings) {
        json_object *o = secret_tree();

        /* Keep an extra reference so the tree can be inspected after the
         * wipe without touching freed memory. */
        json_object_get(o);
        json_object_put_erase(o);
        assert_strings_wiped(o);
        json_object *v;
        ASSERT_TRUE(json_object_object_get_ex(o, "n", &v));
        ASSERT_EQ(json_object_get_int(v), 5); /* non-strings untouched */
        json_object_put(o);

        json_object_put_erase(NULL); /* accepted */
        json_object_put_erasep(&(json_object *) { NULL });
}

TEST(enqueue_wipes_message) {
        VarlinkStream s;
        json_object *o = secret_tree();

        varlink_stream_init(&s, -1, 0, 0);
        json_object_get(o);
        ASSERT_OK(varlink_stream_enqueue(&s, o));
        assert_strings_wiped(o);
        json_object_put(o);
        ASSERT_TRUE(memmem(s.wbuf, s.wlen, "rt-0123456789abcdef", 19)); /* the copy to send is intact */
        varlink_stream_done(&s);
}

int main(void) {
        RUN(single_frame);
        RUN(split_byte_by_byte);
        RUN(pipelined_frames);
        RUN(message_cap);
        RUN(feed_beyond_input_cap);
        RUN(depth_cap);
        RUN(bad_frames_then_good);
        RUN(consumed_input_is_wiped);
        RUN(round_trip_socketpair);
        RUN(serializer_round_trip);
        RUN(round_trip_partial_writes);
        RUN(fill_stops_at_cap);
        RUN(output_cap);
        RUN(enqueue_fields);
        RUN(put_erase_wipes_strings);
        RUN(enqueue_wipes_message);
        return 0;
}
