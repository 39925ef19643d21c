/* SPDX-License-Identifier: MIT */
/* protocol/varlink-stream.c: NUL-terminated JSON framing with caps, shared by
 * server and client. Buffers may hold secrets, so everything consumed or freed
 * is wiped first. */
#include <inttypes.h>
#include <stdio.h>
#include <sys/socket.h>

#include "common/util.h"
#include "varlink.h"

#define READ_CHUNK 16384U

void varlink_stream_init(VarlinkStream *s, int fd, size_t message_max, int depth_max) {
        *s = (VarlinkStream) {
                .fd = fd,
                .message_max = message_max ?: VARLINK_MESSAGE_MAX_DEFAULT,
                .depth_max = depth_max > 0 ? depth_max : VARLINK_DEPTH_MAX_DEFAULT,
        };
}

void varlink_stream_done(VarlinkStream *s) {
        s->rbuf = erase_and_free(s->rbuf);
        s->wbuf = erase_and_free(s->wbuf);
        s->rsize = s->rlen = s->wsize = s->wlen = s->wpos = 0;
        s->fd = safe_close(s->fd);
}

/* The input buffer holds at most one frame plus its NUL, plus what a single
 * read may add beyond it. */
static size_t stream_input_cap(const VarlinkStream *s) {
        return s->message_max + 1 + READ_CHUNK;
}

static int stream_reserve(VarlinkStream *s, size_t want) {
        if (s->rsize - s->rlen >= want)
                return 0;
        size_t n = s->rlen + want;
        if (n < 2 * s->rsize)
                n = 2 * s->rsize;
        if (n > stream_input_cap(s))
                n = stream_input_cap(s);
        if (n - s->rlen < want)
                return -ENOBUFS;
        /* No realloc(): the old block may hold secrets and must be wiped. */
        char *b = malloc(n);
        if (!b)
                return -ENOMEM;
        if (s->rlen > 0)
                memcpy(b, s->rbuf, s->rlen);
        erase_and_free(s->rbuf);
        s->rbuf = b;
        s->rsize = n;
        return 0;
}

int varlink_stream_fill(VarlinkStream *s) {
        size_t room = stream_input_cap(s) - s->rlen;
        if (room == 0)
                return -ENOBUFS;
        if (room > READ_CHUNK)
                room = READ_CHUNK;
        int r = stream_reserve(s, room);
        if (r < 0)
                return r;

        ssize_t n = recv(s->fd, s->rbuf + s->rlen, room, MSG_DONTWAIT);
        s->drained = n >= 0 ? (size_t) n < room : errno == EAGAIN;
        if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                        return 0;
                return -errno;
        }
        if (n == 0) {
                s->read_eof = true;
                return -ECONNRESET;
        }
        s->rlen += (size_t) n;
        return 0;
}

int varlink_stream_feed(VarlinkStream *s, const void *data, size_t len) {
        if (len > stream_input_cap(s) - s->rlen)
                return -ENOBUFS;
        int r = stream_reserve(s, len);
        if (r < 0)
                return r;
        memcpy(s->rbuf + s->rlen, data, len);
        s->rlen += len;
        return 0;
}

static void stream_consume(VarlinkStream *s, size_t n) {
        memmove(s->rbuf, s->rbuf + n, s->rlen - n);
        explicit_bzero(s->rbuf + s->rlen - n, n);
        s->rlen -= n;
}

static void tokener_free_erase(json_tokener *tok) {
        if (!tok)
                return;
        /* The tokener keeps the last string it parsed in its print buffer. */
        if (tok->pb && tok->pb->buf)
                explicit_bzero(tok->pb->buf, (size_t) tok->pb->size);
        json_tokener_free(tok);
}

static json_tokener *mfree_tokener(json_tokener *tok) {
        tokener_free_erase(tok);
        return NULL;
}

void varlink_tokener_free(json_tokener *tok) {
        tokener_free_erase(tok);
}

/* A kept tokener whose print buffer grew past this is freed, not kept. */
#define TOKENER_KEEP_PB (64U * 1024U)

/* ---- the plain subset (varlink.h) ---- */

#define PLAIN_DEPTH_MAX 16
#define PLAIN_KEY_MAX 255

typedef struct Plain {
        const char *p, *end;
        unsigned depth_max; /* container levels allowed, the top-level object included */
} Plain;

static void plain_ws(Plain *f) {
        while (f->p < f->end && (*f->p == ' ' || *f->p == '\t' || *f->p == '\n' || *f->p == '\r'))
                f->p++;
}

static bool plain_at(Plain *f, char c) {
        return f->p < f->end && *f->p == c;
}

/* At '"': the string's bytes (0x20-0x7e, no '"' or '\\'), and past the closing quote. */
static bool plain_string(Plain *f, const char **ret, size_t *ret_len) {
        const char *s = ++f->p;
        for (; f->p < f->end; f->p++) {
                unsigned char c = (unsigned char) *f->p;
                if (c == '"') {
                        *ret = s;
                        *ret_len = (size_t) (f->p++ - s);
                        return true;
                }
                if (c < 0x20 || c > 0x7e || c == '\\')
                        return false;
        }
        return false;
}

static int plain_value(Plain *f, unsigned depth, json_object **ret);

static int plain_container(Plain *f, unsigned depth, bool object, json_object **ret) {
        if (depth >= f->depth_max)
                return 0;
        f->p++;
        json_object *o = object ? json_object_new_object() : json_object_new_array();
        if (!o)
                return -ENOMEM;
        const char close = object ? '}' : ']';
        int r = 0;
        plain_ws(f);
        if (plain_at(f, close)) {
                f->p++;
                *ret = o;
                return 1;
        }
        for (;;) {
                char key[PLAIN_KEY_MAX + 1];
                if (object) {
                        const char *k;
                        size_t klen;
                        plain_ws(f);
                        if (!plain_at(f, '"') || !plain_string(f, &k, &klen) || klen > PLAIN_KEY_MAX)
                                break;
                        memcpy(key, k, klen);
                        key[klen] = 0;
                        /* A repeated key is json-c's to settle. */
                        if (json_object_object_get_ex(o, key, NULL))
                                break;
                        plain_ws(f);
                        if (!plain_at(f, ':'))
                                break;
                        f->p++;
                }
                plain_ws(f);
                json_object *v = NULL;
                r = plain_value(f, depth + 1, &v);
                if (r <= 0)
                        break;
                r = object ? json_object_object_add(o, key, v) : json_object_array_add(o, v);
                if (r < 0) {
                        json_object_put_erase(v);
                        r = -ENOMEM;
                        break;
                }
                r = 0;
                plain_ws(f);
                if (plain_at(f, ',')) {
                        f->p++;
                        continue;
                }
                if (plain_at(f, close)) {
                        f->p++;
                        *ret = o;
                        return 1;
                }
                break;
        }
        json_object_put_erase(o);
        return r;
}

static int plain_value(Plain *f, unsigned depth, json_object **ret) {
        if (f->p >= f->end)
                return 0;
        switch (*f->p) {
        case '{':
        case '[':
                return plain_container(f, depth, *f->p == '{', ret);
        case '"': {
                const char *s;
                size_t len;
                if (!plain_string(f, &s, &len))
                        return 0;
                *ret = json_object_new_string_len(s, (int) len);
                return *ret ? 1 : -ENOMEM;
        }
        case 't':
        case 'f':
        case 'n': {
                static const char *const words[] = { "true", "false", "null" };
                for (size_t i = 0; i < ELEMENTSOF(words); i++) {
                        size_t n = strlen(words[i]);
                        if ((size_t) (f->end - f->p) >= n && memcmp(f->p, words[i], n) == 0) {
                                f->p += n;
                                if (i == 2) {
                                        *ret = NULL; /* json-c's null */
                                        return 1;
                                }
                                *ret = json_object_new_boolean(i == 0);
                                return *ret ? 1 : -ENOMEM;
                        }
                }
                return 0;
        }
        default: {
                /* -?(0|[1-9][0-9]{0,17}), not followed by a fraction or an
                 * exponent; "-0" is json-c's. */
                bool neg = plain_at(f, '-');
                if (neg)
                        f->p++;
                const char *d = f->p;
                int64_t v = 0;
                size_t n = 0;
                for (; f->p < f->end && *f->p >= '0' && *f->p <= '9'; f->p++, n++)
                        if (n < 18)
                                v = v * 10 + (*f->p - '0');
                if (n == 0 || n > 18 || (d[0] == '0' && (n > 1 || neg)))
                        return 0;
                if (plain_at(f, '.') || plain_at(f, 'e') || plain_at(f, 'E'))
                        return 0;
                *ret = json_object_new_int64(neg ? -v : v);
                return *ret ? 1 : -ENOMEM;
        }
        }
}

int varlink_json_parse_plain(const char *p, size_t len, int depth_max, json_object **ret) {
        Plain f = { .p = p, .end = p + len };
        /* Two levels short of json-c's cap, so that it is never the one that
         * would have refused. */
        f.depth_max = depth_max > 2 ? (unsigned) depth_max - 2 : 0;
        if (f.depth_max > PLAIN_DEPTH_MAX)
                f.depth_max = PLAIN_DEPTH_MAX;
        plain_ws(&f);
        if (!plain_at(&f, '{'))
                return 0;
        json_object *o = NULL;
        int r = plain_container(&f, 0, true, &o);
        if (r <= 0)
                return r;
        plain_ws(&f);
        if (f.p != f.end) {
                json_object_put_erase(o);
                return 0;
        }
        *ret = o;
        return 1;
}

int varlink_stream_next_cached(VarlinkStream *s, json_tokener **cache, json_object **ret) {
        char *end = s->rlen > 0 ? memchr(s->rbuf, 0, s->rlen) : NULL;
        if (!end)
                return s->rlen > s->message_max ? -EMSGSIZE : 0;

        size_t len = (size_t) (end - s->rbuf);
        if (len > s->message_max)
                return -EMSGSIZE;

        json_object *plain = NULL;
        int pr = varlink_json_parse_plain(s->rbuf, len, s->depth_max, &plain);
        if (pr < 0)
                return pr;
        if (pr > 0) {
                stream_consume(s, len + 1);
                *ret = plain;
                return 1;
        }

        json_tokener *tok = cache ? *cache : NULL;
        if (tok && tok->max_depth != s->depth_max)
                tok = *cache = mfree_tokener(tok);
        if (!tok && !(tok = json_tokener_new_ex(s->depth_max)))
                return -ENOMEM;
        /* json-c's strict mode (no trailing commas, comments or leading
         * zeros; json-c 0.16 still lets single-quoted keys and NaN through,
         * which the typed parameter checks then refuse), and valid UTF-8. */
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
        json_object *o = json_tokener_parse_ex(tok, s->rbuf, (int) len);
        enum json_tokener_error e = json_tokener_get_error(tok);
        size_t used = json_tokener_get_parse_end(tok);
        if (cache && tok->pb && (size_t) tok->pb->size <= TOKENER_KEEP_PB) {
                /* Kept for the next message: wiped and reset like a new one. */
                explicit_bzero(tok->pb->buf, (size_t) tok->pb->size);
                json_tokener_reset(tok);
                *cache = tok;
        } else {
                tokener_free_erase(tok);
                if (cache)
                        *cache = NULL;
        }

        bool ok = o && e == json_tokener_success && json_object_is_type(o, json_type_object);
        for (size_t i = used; ok && i < len; i++)
                if (!strchr(" \t\r\n", s->rbuf[i]))
                        ok = false;
        stream_consume(s, len + 1);
        if (!ok) {
                json_object_put_erase(o);
                return -EBADMSG;
        }
        *ret = o;
        return 1;
}

int varlink_stream_next(VarlinkStream *s, json_object **ret) {
        return varlink_stream_next_cached(s, NULL, ret);
}

static void json_erase_strings(json_object *o) {
        switch (json_object_get_type(o)) {
        case json_type_string:
                explicit_bzero((char *) json_object_get_string(o), (size_t) json_object_get_string_len(o));
                break;
        case json_type_object: {
                json_object_object_foreach(o, key, val) {
                        (void) key;
                        json_erase_strings(val);
                }
                break;
        }
        case json_type_array:
                for (size_t i = 0; i < json_object_array_length(o); i++)
                        json_erase_strings(json_object_array_get_idx(o, i));
                break;
        case json_type_null:
        case json_type_boolean:
        case json_type_double:
        case json_type_int:
                break;
        }
}

void json_object_put_erase(json_object *o) {
        if (!o)
                return;
        /* Callers hand over objects they own exclusively: nothing else may
         * still reference a string wiped here. */
        json_erase_strings(o);
        json_object_put(o);
}

/* Makes room for n more bytes at the end of the output buffer, keeping
 * what is pending (including a message being written) and wiping the old
 * buffer. */
static int output_reserve(VarlinkStream *s, size_t n) {
        if (s->wsize - s->wlen >= n)
                return 0;
        size_t pending = s->wlen - s->wpos;
        size_t size = pending + n;
        if (size < 2 * s->wsize)
                size = 2 * s->wsize;
        if (size < 4096)
                size = 4096;
        char *b = malloc(size);
        if (!b)
                return -ENOMEM;
        if (pending > 0)
                memcpy(b, s->wbuf + s->wpos, pending);
        erase_and_free(s->wbuf);
        s->wbuf = b;
        s->wsize = size;
        s->wlen = pending;
        s->wpos = 0;
        return 0;
}

static int output_put(VarlinkStream *s, const char *p, size_t n) {
        int r = output_reserve(s, n);
        if (r < 0)
                return r;
        memcpy(s->wbuf + s->wlen, p, n);
        s->wlen += n;
        return 0;
}

/* A JSON string (the parser on the other side validates UTF-8). */
static int output_string(VarlinkStream *s, const char *str, size_t len) {
        if (len > (SIZE_MAX - 2) / 6)
                return -ENOMEM;
        int r = output_reserve(s, JSON_ESCAPED_MAX(len) + 2);
        if (r < 0)
                return r;
        char *o = s->wbuf + s->wlen;
        *o++ = '"';
        o += json_escape(o, str, len);
        *o++ = '"';
        s->wlen = (size_t) (o - s->wbuf);
        return 0;
}

/* A string known to need no escaping (json_plain()), between quotes. */
static int output_plain_string(VarlinkStream *s, const char *str, size_t len) {
        if (len > SIZE_MAX - 2)
                return -ENOMEM;
        int r = output_reserve(s, len + 2);
        if (r < 0)
                return r;
        char *o = s->wbuf + s->wlen;
        *o++ = '"';
        memcpy(o, str, len);
        o[len] = '"';
        s->wlen += len + 2;
        return 0;
}

/* A reply field's string: escaped unless its field says it is plain. */
static int output_field_string(VarlinkStream *s, const VarlinkOutField *f, const char *str, size_t len) {
        return f->plain ? output_plain_string(s, str, len) : output_string(s, str, len);
}

static int output_int(VarlinkStream *s, int64_t v) {
        char buf[24];
        int n = snprintf(buf, sizeof buf, "%" PRId64, v);
        return output_put(s, buf, (size_t) n);
}

/* Writes o as JSON straight into the output buffer: json-c's own serializer
 * builds it in a print buffer of the object first, piece by piece, which
 * was the largest single cost of a cache-hit reply. */
static int output_json(VarlinkStream *s, json_object *o) {
        int r = 0;
        switch (json_object_get_type(o)) {
        case json_type_null:
                return output_put(s, "null", 4);
        case json_type_boolean:
                return json_object_get_boolean(o) ? output_put(s, "true", 4) : output_put(s, "false", 5);
        case json_type_int: {
                /* json-c keeps either an int64 or a uint64; the latter reads as INT64_MAX through get_int64(). */
                int64_t v = json_object_get_int64(o);
                if (v == INT64_MAX && json_object_get_uint64(o) > INT64_MAX) {
                        char buf[24];
                        int n = snprintf(buf, sizeof buf, "%" PRIu64, json_object_get_uint64(o));
                        return output_put(s, buf, (size_t) n);
                }
                return output_int(s, v);
        }
        case json_type_double: {
                /* Rare in replies: json-c's formatting, for the same text as before. */
                size_t len;
                const char *t = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);
                return t ? output_put(s, t, len) : -ENOMEM;
        }
        case json_type_string:
                return output_string(s, json_object_get_string(o), (size_t) json_object_get_string_len(o));
        case json_type_object: {
                bool first = true;
                r = output_put(s, "{", 1);
                json_object_object_foreach(o, key, val) {
                        if (r >= 0 && !first)
                                r = output_put(s, ",", 1);
                        first = false;
                        if (r >= 0)
                                r = output_string(s, key, strlen(key));
                        if (r >= 0)
                                r = output_put(s, ":", 1);
                        if (r >= 0)
                                r = output_json(s, val);
                }
                return r < 0 ? r : output_put(s, "}", 1);
        }
        case json_type_array: {
                size_t n = json_object_array_length(o);
                r = output_put(s, "[", 1);
                for (size_t i = 0; r >= 0 && i < n; i++) {
                        if (i > 0)
                                r = output_put(s, ",", 1);
                        if (r >= 0)
                                r = output_json(s, json_object_array_get_idx(o, i));
                }
                return r < 0 ? r : output_put(s, "]", 1);
        }
        }
        return -EINVAL;
}

/* Ends a message begun at `start` (counted from wpos: the buffer may move):
 * the NUL terminator, the cap; on error nothing of it stays queued. */
static int output_end(VarlinkStream *s, size_t start, int r) {
        if (r >= 0)
                r = output_put(s, "", 1); /* the NUL terminator: the frame delimiter */
        if (r >= 0 && s->wlen - s->wpos > VARLINK_OUTPUT_MAX)
                r = -ENOBUFS;
        if (r < 0) {
                size_t begin = s->wpos + start;
                if (s->wlen > begin)
                        explicit_bzero(s->wbuf + begin, s->wlen - begin);
                s->wlen = begin;
        }
        return r;
}

int varlink_stream_enqueue(VarlinkStream *s, json_object *message) {
        size_t start = s->wlen - s->wpos;
        int r = output_end(s, start, output_json(s, message));
        json_object_put_erase(message);
        return r;
}

int varlink_stream_enqueue_fields(VarlinkStream *s, const VarlinkOutField *fields, size_t n, bool continues) {
        size_t start = s->wlen - s->wpos;
        int r = output_put(s, "{\"parameters\":{", 15);
        for (size_t i = 0; r >= 0 && i < n; i++) {
                const VarlinkOutField *f = &fields[i];
                if (i > 0)
                        r = output_put(s, ",", 1);
                if (r >= 0)
                        r = output_plain_string(s, f->name, strlen(f->name));
                if (r >= 0)
                        r = output_put(s, ":", 1);
                if (r < 0)
                        break;
                switch (f->type) {
                case VARLINK_OUT_STRING:
                        r = output_field_string(s, f, f->string, f->len);
                        break;
                case VARLINK_OUT_INT:
                        r = output_int(s, f->integer);
                        break;
                case VARLINK_OUT_STRV:
                        r = output_put(s, "[", 1);
                        for (size_t j = 0; r >= 0 && j < f->len; j++) {
                                if (j > 0)
                                        r = output_put(s, ",", 1);
                                if (r >= 0)
                                        r = output_field_string(s, f, f->strv[j], strlen(f->strv[j]));
                        }
                        if (r >= 0)
                                r = output_put(s, "]", 1);
                        break;
                default:
                        r = -EINVAL;
                }
        }
        if (r >= 0)
                r = continues ? output_put(s, "},\"continues\":true}", 19) : output_put(s, "}}", 2);
        return output_end(s, start, r);
}

int varlink_stream_flush(VarlinkStream *s) {
        while (s->wpos < s->wlen) {
                ssize_t n = send(s->fd, s->wbuf + s->wpos, s->wlen - s->wpos, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                return -EAGAIN;
                        return -errno;
                }
                s->wpos += (size_t) n;
        }
        explicit_bzero(s->wbuf, s->wlen);
        s->wpos = s->wlen = 0;
        return 0;
}

bool varlink_stream_has_output(const VarlinkStream *s) {
        return s->wpos < s->wlen;
}
