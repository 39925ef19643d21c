/* SPDX-License-Identifier: MIT */
/* daemon/audit.c: see audit.h. */
#include <ctype.h>
#include <inttypes.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <pwd.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <syslog.h>
#include <unistd.h>

#define SD_JOURNAL_SUPPRESS_LOCATION 1
#include <openssl/evp.h>
#include <systemd/sd-journal.h>

#include "audit.h"
#include "common/hashtab.h"
#include "common/list.h"
#include "common/log.h"
#include "common/util.h"
#include "manager.h"
#include "peer.h"
#include "policy.h"
#include "scopes.h"

#define JOURNAL_SOCKET "/run/systemd/journal/socket"
#define AUDIT_FIELDS_MAX 20

/* What was last recorded as issued to one connection, and how many times the
 * same token went to it again since (audit.h). One per connection that was
 * issued a token, forgotten when it closes. */
typedef struct AuditTally AuditTally;
struct AuditTally {
        HashNode node;              /* in Audit.tallies, by agent */
        const PeerIdentity *agent;  /* the connection's identity (the key): valid until audit_agent_gone() */
        AuditTally *prev, *next;    /* in Audit.pending while count > 0 */
        char fp[13];                /* the token's fingerprint */
        char *credential, *scopes, *resource, *grant;
        uint64_t count;             /* issues of it not yet on the record */
        uint64_t since;             /* realtime usec of the first of them */
};

/* A growable byte buffer, kept by the Audit object and reused for every
 * record: formatting a record allocates nothing once the buffers have grown
 * to the size of the records seen. Records hold no secret (a token appears
 * only as its fingerprint), so the buffers need no wiping. */
typedef struct AuditBuf {
        char *data;
        size_t len, size;
        bool oom; /* an append failed: the record cannot be built */
} AuditBuf;

struct Audit {
        uid_t owner_uid;
        char *owner_user; /* NULL when the uid has no passwd entry */
        char *path;       /* the fallback file */
        int fd;           /* the fallback file, opened when first needed */
        bool file_only;   /* TOKEND_AUDIT_JOURNAL=0 */
        bool journal;     /* the journal is reachable, as far as we know */
        uint64_t journal_checked; /* monotonic usec of the last look for a returning journal */
        AuditBuf scratch, out; /* reused for every record */
        HashTable tallies;     /* AuditTally by agent */
        AuditTally *pending;   /* tallies with a count to write */
        sd_event_source *flush_timer; /* writes the pending counts, AUDIT_COALESCE_USEC after the first */
};

/* While records go to the file, look for the journal at most this often:
 * not a syscall on every token handed out. */
#define JOURNAL_RECHECK_USEC (1 * USEC_PER_SEC)

static const char *const audit_event_table[_AUDIT_EVENT_MAX] = {
        [AUDIT_ISSUE] = "issue",
        [AUDIT_DENY] = "deny",
        [AUDIT_REFRESH] = "refresh",
        [AUDIT_ROTATE] = "rotate",
        [AUDIT_REVOKE] = "revoke",
        [AUDIT_GRANT] = "grant",
        [AUDIT_APPROVE] = "approve",
        [AUDIT_LOGIN] = "login",
        [AUDIT_REAUTH_NEEDED] = "reauth-needed",
        [AUDIT_ADD] = "add",
        [AUDIT_REMOVE] = "remove",
};

const char *audit_event_to_string(AuditEvent e) {
        return e >= 0 && e < _AUDIT_EVENT_MAX ? audit_event_table[e] : NULL;
}

static int audit_priority(AuditEvent e) {
        switch (e) {
        case AUDIT_DENY:
                return LOG_NOTICE;
        case AUDIT_REAUTH_NEEDED:
                return LOG_WARNING;
        case AUDIT_ISSUE:
        case AUDIT_REFRESH:
        case AUDIT_ROTATE:
        case AUDIT_REVOKE:
        case AUDIT_GRANT:
        case AUDIT_APPROVE:
        case AUDIT_LOGIN:
        case AUDIT_ADD:
        case AUDIT_REMOVE:
        case _AUDIT_EVENT_MAX:
                break;
        }
        return LOG_INFO;
}

/* Whether a journald answers: the socket file alone may be left over from
 * one that has gone (connecting then fails with ECONNREFUSED). */
static bool journal_reachable(void) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX, .sun_path = JOURNAL_SOCKET };
        int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return false;
        bool ok = connect(fd, (struct sockaddr *) &sa, sizeof sa) >= 0;
        safe_close(fd);
        return ok;
}

int audit_new(uid_t owner_uid, const char *state_dir, Audit **ret) {
        Audit *a = calloc(1, sizeof *a);
        if (!a)
                return -ENOMEM;
        a->fd = -1;
        a->owner_uid = owner_uid;
        if (asprintf(&a->path, "%s/%s", state_dir, AUDIT_FILE) < 0) {
                free(a);
                return -ENOMEM;
        }

        struct passwd pw, *found = NULL;
        long sz = sysconf(_SC_GETPW_R_SIZE_MAX);
        size_t bufsize = sz > 0 ? (size_t) sz : 16384;
        _cleanup_free_ char *buf = malloc(bufsize);
        if (buf && getpwuid_r(owner_uid, &pw, buf, bufsize, &found) == 0 && found)
                a->owner_user = strdup(found->pw_name); /* NULL on OOM: recorded without a name */

        const char *e = getenv(AUDIT_JOURNAL_ENV);
        a->file_only = e && streq(e, "0");
        a->journal = !a->file_only && journal_reachable();
        log_info("Audit records go to %s%s", a->journal ? "the journal" : a->path,
                 a->file_only ? " ($" AUDIT_JOURNAL_ENV "=0)" : a->journal ? "" : " (no journal reachable)");
        *ret = a;
        return 0;
}

static void tally_free(Audit *a, AuditTally *t) {
        if (t->count > 0)
                LIST_REMOVE(a->pending, t);
        hashtab_remove(&a->tallies, &t->node);
        free(t->credential);
        free(t->scopes);
        free(t->resource);
        free(t->grant);
        free(t);
}

Audit *audit_free(Audit *a) {
        if (!a)
                return NULL;
        /* Every connection has gone (audit_agent_gone() wrote their counts) before this. */
        for (size_t i = 0; i < a->tallies.n_buckets; i++)
                while (a->tallies.buckets && a->tallies.buckets[i])
                        tally_free(a, HASHTAB_ITEM(a->tallies.buckets[i], AuditTally, node));
        hashtab_done(&a->tallies);
        sd_event_source_disable_unref(a->flush_timer);
        safe_close(a->fd);
        free(a->scratch.data);
        free(a->out.data);
        free(a->path);
        free(a->owner_user);
        free(a);
        return NULL;
}

const PeerIdentity *audit_call_agent(VarlinkCall *call) {
        return call ? varlink_connection_get_userdata(varlink_call_connection(call)) : NULL;
}

int audit_fingerprint(const char *token, char ret[static 13]) {
        static const char hex[] = "0123456789abcdef";
        /* Fetched once: an implicit fetch (EVP_sha256()) on every digest costs more than the digest. */
        static EVP_MD *sha256 = NULL;
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned n = 0;

        if (!sha256 && !(sha256 = EVP_MD_fetch(NULL, "SHA256", NULL)))
                return -EIO;
        if (!EVP_Digest(token, strlen(token), md, &n, sha256, NULL) || n < 6)
                return -EIO;
        for (size_t i = 0; i < 6; i++) {
                ret[2 * i] = hex[md[i] >> 4];
                ret[2 * i + 1] = hex[md[i] & 15];
        }
        ret[12] = 0;
        explicit_bzero(md, sizeof md);
        return 0;
}

/* v in decimal; buf must hold 21 bytes. Returns buf. */
static char *format_u64(uint64_t v, char buf[static 21]) {
        char *p = buf + 20;
        *p = 0;
        do
                *--p = (char) ('0' + v % 10);
        while (v /= 10);
        return memmove(buf, p, (size_t) (buf + 21 - p));
}

/* Above this, a buffer is released after the record instead of kept. */
#define AUDIT_BUF_KEEP (64U * 1024U)

static void buf_reset(AuditBuf *b) {
        if (b->size > AUDIT_BUF_KEEP) {
                b->data = mfree(b->data);
                b->size = 0;
        }
        b->len = 0;
        b->oom = false;
}

static bool buf_reserve(AuditBuf *b, size_t more) {
        if (b->oom)
                return false;
        if (b->size - b->len > more)
                return true;
        size_t want = b->size ? b->size : 1024;
        while (want - b->len <= more) {
                if (want > SIZE_MAX / 2) {
                        b->oom = true;
                        return false;
                }
                want *= 2;
        }
        char *d = realloc(b->data, want);
        if (!d) {
                b->oom = true;
                return false;
        }
        b->data = d;
        b->size = want;
        return true;
}

static void buf_put(AuditBuf *b, const char *p, size_t n) {
        if (!buf_reserve(b, n))
                return;
        memcpy(b->data + b->len, p, n);
        b->len += n;
        b->data[b->len] = 0;
}

static void buf_puts(AuditBuf *b, const char *s) {
        buf_put(b, s, strlen(s));
}

static void buf_putc(AuditBuf *b, char ch) {
        buf_put(b, &ch, 1);
}

/* s as a JSON string, quotes included. Bytes >= 0x80 pass through as they
 * are (as json-c writes them); control characters are escaped. */
static void buf_put_json_string(AuditBuf *b, const char *s) {
        size_t len = strlen(s);
        if (len > (SIZE_MAX - 3) / 6 || !buf_reserve(b, JSON_ESCAPED_MAX(len) + 2)) {
                b->oom = true;
                return;
        }
        char *o = b->data + b->len;
        *o++ = '"';
        o += json_escape(o, s, len);
        *o++ = '"';
        *o = 0;
        b->len = (size_t) (o - b->data);
}

/* One record, flattened: field names (without the TOKEND_ prefix) and
 * values, pointing into the record, the Audit object or the record's
 * scratch buffer. */
typedef struct Flat {
        const char *name[AUDIT_FIELDS_MAX];
        const char *value[AUDIT_FIELDS_MAX];
        bool numeric[AUDIT_FIELDS_MAX];
        size_t n;
} Flat;

static void flat_add(Flat *f, const char *name, const char *value, bool numeric) {
        /* The fields are fixed below: AUDIT_FIELDS_MAX holds them all. */
        if (!value || f->n >= AUDIT_FIELDS_MAX)
                return;
        f->name[f->n] = name;
        f->numeric[f->n] = numeric;
        f->value[f->n++] = value;
}

/* Fills f; strings made here (message, scopes, numbers) go to scratch,
 * which must not be appended to while f is in use. */
static int audit_flatten(Audit *a, const Policy *policy, const AuditRecord *r, Flat *f, AuditBuf *scratch) {
        const PeerIdentity *p = r->agent;
        const char *ev = audit_event_to_string(r->event);
        bool has_token = r->token || r->token_fp;
        char fp[13] = "";

        if (!ev)
                return -EINVAL;
        if (r->token_fp)
                memcpy(fp, r->token_fp, strnlen(r->token_fp, sizeof fp - 1));
        else if (r->token && audit_fingerprint(r->token, fp) < 0)
                return -EIO;

        /* Everything is appended first, and pointed to once the buffer no longer moves. */
        size_t o_msg = scratch->len;
        if (r->message)
                buf_puts(scratch, r->message);
        else {
                buf_puts(scratch, "tokend ");
                buf_puts(scratch, ev);
                buf_puts(scratch, ": credential ");
                buf_puts(scratch, strna(r->credential));
                if (p && p->exe) {
                        buf_puts(scratch, ", agent ");
                        buf_puts(scratch, p->exe);
                }
                if (has_token) {
                        buf_puts(scratch, ", token ");
                        buf_puts(scratch, fp);
                }
                if (r->reason) {
                        buf_puts(scratch, ": ");
                        buf_puts(scratch, r->reason);
                }
                if (r->count > 0) {
                        char n[21];
                        buf_puts(scratch, ", ");
                        buf_puts(scratch, format_u64(r->count, n));
                        buf_puts(scratch, r->count == 1 ? " time again" : " times again");
                }
        }
        buf_putc(scratch, 0);
        size_t o_scopes = scratch->len;
        if (r->scopes)
                for (size_t i = 0; i < r->scopes->n; i++) {
                        if (i > 0)
                                buf_putc(scratch, ' ');
                        buf_puts(scratch, r->scopes->items[i]);
                }
        buf_putc(scratch, 0);
        size_t o_nums = scratch->len;
        char num[5][21];
        format_u64(a->owner_uid, num[0]);
        format_u64(p ? p->uid : 0, num[1]);
        format_u64(p ? (uint64_t) p->pid : 0, num[2]);
        format_u64(r->count, num[3]);
        format_u64(r->since, num[4]);
        for (size_t i = 0; i < ELEMENTSOF(num); i++)
                buf_put(scratch, num[i], strlen(num[i]) + 1);
        size_t o_fp = scratch->len;
        buf_put(scratch, fp, sizeof fp);
        if (scratch->oom)
                return -ENOMEM;

        const char *d = scratch->data;
        const char *sc = r->scopes ? d + o_scopes : r->scope_string;
        const char *uid = d + o_nums, *agent_uid = uid + strlen(uid) + 1, *agent_pid = agent_uid + strlen(agent_uid) + 1,
                   *count = agent_pid + strlen(agent_pid) + 1, *since = count + strlen(count) + 1;
        flat_add(f, "MESSAGE", d + o_msg, false);
        flat_add(f, "EVENT", ev, false);
        flat_add(f, "CREDENTIAL", r->credential, false);
        flat_add(f, "SCOPES", sc && sc[0] ? sc : NULL, false);
        flat_add(f, "RESOURCE", r->resource, false);
        flat_add(f, "GRANT", r->grant, false);
        flat_add(f, "OWNER_UID", uid, true);
        flat_add(f, "OWNER_USER", a->owner_user, false);
        flat_add(f, "TOKEN_FP", has_token ? d + o_fp : NULL, false);
        flat_add(f, "REASON", r->reason, false);
        if (r->count > 0) {
                flat_add(f, "COUNT", count, true);
                flat_add(f, "SINCE", since, true);
        }
        flat_add(f, "AGENT_NAME", r->agent_name ?: (p ? policy_agent_name(policy_match(policy, p)) : NULL), false);
        if (p) {
                flat_add(f, "AGENT_UID", agent_uid, true);
                flat_add(f, "AGENT_PID", agent_pid, true);
                flat_add(f, "AGENT_EXE", p->exe, false);
                flat_add(f, "AGENT_UNIT", p->unit, false);
        }
        return 0;
}

static int audit_send_journal(AuditBuf *out, const Flat *f, int priority) {
        struct iovec iov[AUDIT_FIELDS_MAX + 3];
        size_t start[AUDIT_FIELDS_MAX + 3], n = 0;
        char prio[21];

        format_u64((uint64_t) priority, prio);
        buf_reset(out);
        /* "NAME=value" lines, one after the other; the iovecs are set once the buffer no longer moves. */
#define LINE(prefix, name, value)               \
        do {                                    \
                start[n++] = out->len;          \
                buf_puts(out, prefix);          \
                buf_puts(out, name);            \
                buf_putc(out, '=');             \
                buf_puts(out, value);           \
        } while (0)
        LINE("", "MESSAGE_ID", AUDIT_MESSAGE_ID);
        LINE("", "SYSLOG_IDENTIFIER", "tokend");
        LINE("", "PRIORITY", prio);
        for (size_t i = 0; i < f->n; i++)
                LINE(streq(f->name[i], "MESSAGE") ? "" : "TOKEND_", f->name[i], f->value[i]);
#undef LINE
        if (out->oom)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                iov[i] = (struct iovec) { .iov_base = out->data + start[i],
                                          .iov_len = (i + 1 < n ? start[i + 1] : out->len) - start[i] };
        return sd_journal_sendv(iov, (int) n);
}

static int audit_open_file(Audit *a) {
        if (a->fd >= 0)
                return 0;
        int fd = open(a->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
        if (fd < 0)
                return -errno;
        /* Append-only for everyone, root included, where we may set it
         * (CAP_LINUX_IMMUTABLE and a file system that knows the flag). */
        int flags = 0;
        if (ioctl(fd, FS_IOC_GETFLAGS, &flags) >= 0 && !(flags & FS_APPEND_FL)) {
                flags |= FS_APPEND_FL;
                if (ioctl(fd, FS_IOC_SETFLAGS, &flags) < 0)
                        log_debug("Cannot make %s append-only (%m), ignoring", a->path);
        }
        a->fd = fd;
        return 0;
}

/* One JSON object on one line: timestamp, message_id, priority, then the
 * fields with their names in lower case. */
static int audit_write_file(Audit *a, AuditBuf *out, const Flat *f, int priority) {
        char ts[21], prio[21];
        int r;

        buf_reset(out);
        buf_puts(out, "{\"timestamp\":");
        buf_puts(out, format_u64(now_realtime_usec(), ts));
        buf_puts(out, ",\"message_id\":\"" AUDIT_MESSAGE_ID "\",\"priority\":");
        buf_puts(out, format_u64((uint64_t) priority, prio));
        for (size_t i = 0; i < f->n; i++) {
                char key[32];
                size_t j = 0;
                for (; f->name[i][j] && j < sizeof key - 1; j++)
                        key[j] = (char) tolower((unsigned char) f->name[i][j]);
                key[j] = 0;
                buf_puts(out, ",\"");
                buf_puts(out, key);
                buf_puts(out, "\":");
                if (f->numeric[i])
                        buf_puts(out, f->value[i]);
                else
                        buf_put_json_string(out, f->value[i]);
        }
        buf_puts(out, "}\n");
        if (out->oom)
                return -ENOMEM;

        r = audit_open_file(a);
        if (r < 0)
                return r;
        /* One write: O_APPEND keeps concurrent lines whole. */
        ssize_t n = write(a->fd, out->data, out->len);
        if (n < 0)
                return -errno;
        return (size_t) n == out->len ? 0 : -EIO;
}

static void audit_write(Manager *m, const AuditRecord *rec) {
        Audit *a = m->audit;
        Flat f = {};
        int priority = audit_priority(rec->event), r;

        buf_reset(&a->scratch);
        r = audit_flatten(a, m->policy, rec, &f, &a->scratch);
        if (r < 0) {
                log_error_errno(r, "Cannot build the audit record (%s, credential %s): %m",
                                strna(audit_event_to_string(rec->event)), strna(rec->credential));
                return;
        }
        /* Back to the journal once it is there again. */
        uint64_t now = now_monotonic_usec();
        if (!a->journal && !a->file_only && now - a->journal_checked >= JOURNAL_RECHECK_USEC &&
            (a->journal_checked = now, journal_reachable())) {
                log_info("The journal is reachable again; audit records go there");
                a->journal = true;
        }
        if (a->journal) {
                r = audit_send_journal(&a->out, &f, priority);
                if (r >= 0)
                        return;
                log_warning_errno(r, "Cannot send the audit record to the journal (%m); using %s", a->path);
                a->journal = false;
        }
        r = audit_write_file(a, &a->out, &f, priority);
        if (r < 0)
                log_error_errno(r, "Cannot write the audit record (%s, credential %s) to %s: %m",
                                strna(audit_event_to_string(rec->event)), strna(rec->credential), a->path);
}

/* ---- repeated issues: counted, written as one record ---- */

static uint64_t tally_hash(const PeerIdentity *agent) {
        /* Keyed by an address of ours, not by anything a caller chooses. */
        uint64_t h = (uint64_t) (uintptr_t) agent * UINT64_C(0x9e3779b97f4a7c15);
        return h ^ (h >> 29);
}

static AuditTally *tally_find(Audit *a, const PeerIdentity *agent) {
        uint64_t h = tally_hash(agent);
        for (HashNode *n = hashtab_first(&a->tallies, h); n; n = hashtab_next(n)) {
                AuditTally *t = HASHTAB_ITEM(n, AuditTally, node);
                if (t->agent == agent)
                        return t;
        }
        return NULL;
}

/* Writes t's count as one record, and clears it. */
static void tally_write(Manager *m, AuditTally *t) {
        Audit *a = m->audit;
        if (t->count == 0)
                return;
        audit_write(m, &(AuditRecord) { .event = AUDIT_ISSUE, .credential = t->credential, .scope_string = t->scopes,
                                        .resource = t->resource, .grant = t->grant, .agent = t->agent,
                                        .token_fp = t->fp, .count = t->count, .since = t->since });
        t->count = 0;
        LIST_REMOVE(a->pending, t);
}

static int on_flush_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        (void) s;
        (void) usec;
        while (m->audit->pending)
                tally_write(m, m->audit->pending);
        return 0;
}

/* The record just written was an issue to agent: later issues of the same
 * token to it are counted. Failing to remember only means they are written
 * one by one. */
static void tally_remember(Manager *m, AuditTally *t, const AuditRecord *rec) {
        Audit *a = m->audit;
        _cleanup_free_ char *credential = strdup(rec->credential ?: ""), *resource = NULL, *grant = NULL,
                            *scopes = NULL;
        if (rec->scopes)
                scopes = scope_set_join(rec->scopes);
        else if (rec->scope_string)
                scopes = strdup(rec->scope_string);
        if (!credential || ((rec->scopes || rec->scope_string) && !scopes) ||
            (rec->resource && !(resource = strdup(rec->resource))) || (rec->grant && !(grant = strdup(rec->grant)))) {
                if (t)
                        tally_free(a, t);
                return;
        }
        if (!t) {
                t = calloc(1, sizeof *t);
                if (!t)
                        return;
                t->agent = rec->agent;
                if (hashtab_insert(&a->tallies, &t->node, tally_hash(t->agent)) < 0) {
                        free(t);
                        return;
                }
        }
        snprintf(t->fp, sizeof t->fp, "%s", rec->token_fp);
        free(t->credential);
        t->credential = TAKE_PTR(credential);
        free(t->scopes);
        t->scopes = TAKE_PTR(scopes);
        free(t->resource);
        t->resource = TAKE_PTR(resource);
        free(t->grant);
        t->grant = TAKE_PTR(grant);
}

static bool tally_matches(const AuditTally *t, const AuditRecord *rec) {
        return rec->token_fp && streq(t->fp, rec->token_fp) && streq(t->credential, strempty(rec->credential)) &&
               streq_ptr(t->resource, rec->resource) && streq_ptr(t->grant, rec->grant);
}

/* Counts rec, an issue that repeats the last one to its agent. */
static void tally_count(Manager *m, AuditTally *t) {
        Audit *a = m->audit;
        if (t->count++ > 0)
                return;
        t->since = now_realtime_usec();
        LIST_PREPEND(a->pending, t);
        if (a->flush_timer && sd_event_source_get_enabled(a->flush_timer, NULL) > 0)
                return;
        int r;
        if (!a->flush_timer)
                r = sd_event_add_time_relative(m->event, &a->flush_timer, CLOCK_MONOTONIC, m->audit_coalesce_usec,
                                               m->audit_coalesce_usec / 10, on_flush_timer, m);
        else {
                r = sd_event_source_set_time_relative(a->flush_timer, m->audit_coalesce_usec);
                if (r >= 0)
                        r = sd_event_source_set_enabled(a->flush_timer, SD_EVENT_ONESHOT);
        }
        if (r < 0) {
                /* No timer: the count goes out now, never later than promised. */
                log_warning_errno(r, "Cannot arm the audit flush timer, writing at once: %m");
                tally_write(m, t);
        }
}

void audit_log(Manager *m, const AuditRecord *rec) {
        Audit *a = m->audit;
        if (!a)
                return;
        AuditTally *t = rec->agent && a->tallies.n > 0 ? tally_find(a, rec->agent) : NULL;
        if (rec->event == AUDIT_ISSUE && rec->count == 0 && t && tally_matches(t, rec)) {
                tally_count(m, t);
                return;
        }
        /* What was counted for this connection comes first: its records stay in order. */
        if (t)
                tally_write(m, t);
        audit_write(m, rec);

        /* Only an issue that names its fingerprint can be matched (tally_matches()). */
        if (rec->event == AUDIT_ISSUE && rec->agent && rec->token_fp && rec->count == 0 && m->event &&
            m->audit_coalesce_usec > 0)
                tally_remember(m, t, rec);
}

void audit_agent_gone(Manager *m, const PeerIdentity *agent) {
        Audit *a = m->audit;
        AuditTally *t = a && a->tallies.n > 0 ? tally_find(a, agent) : NULL;
        if (!t)
                return;
        tally_write(m, t);
        tally_free(a, t);
}
