/* SPDX-License-Identifier: MIT */
/* daemon/audit.c: see audit.h. */
#include <ctype.h>
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
#include "common/log.h"
#include "common/util.h"
#include "manager.h"
#include "peer.h"
#include "policy.h"
#include "scopes.h"

#define JOURNAL_SOCKET "/run/systemd/journal/socket"
#define AUDIT_FIELDS_MAX 20

struct Audit {
        uid_t owner_uid;
        char *owner_user; /* NULL when the uid has no passwd entry */
        char *path;       /* the fallback file */
        int fd;           /* the fallback file, opened when first needed */
        bool file_only;   /* TOKEND_AUDIT_JOURNAL=0 */
        bool journal;     /* the journal is reachable, as far as we know */
        uint64_t journal_checked; /* monotonic usec of the last look for a returning journal */
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

Audit *audit_free(Audit *a) {
        if (!a)
                return NULL;
        safe_close(a->fd);
        free(a->path);
        free(a->owner_user);
        free(a);
        return NULL;
}

const PeerIdentity *audit_call_agent(VarlinkCall *call) {
        return call ? varlink_connection_get_userdata(varlink_call_connection(call)) : NULL;
}

int audit_fingerprint(const char *token, char ret[static 13]) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned n = 0;
        if (!EVP_Digest(token, strlen(token), md, &n, EVP_sha256(), NULL) || n < 6)
                return -EIO;
        for (size_t i = 0; i < 6; i++)
                snprintf(ret + 2 * i, 3, "%02x", md[i]);
        explicit_bzero(md, sizeof md);
        return 0;
}

/* One record, flattened: field names (without the TOKEND_ prefix) and values. */
typedef struct Flat {
        const char *name[AUDIT_FIELDS_MAX];
        char *value[AUDIT_FIELDS_MAX];
        bool numeric[AUDIT_FIELDS_MAX];
        size_t n;
} Flat;

static void flat_done(Flat *f) {
        for (size_t i = 0; i < f->n; i++)
                free(f->value[i]);
        f->n = 0;
}

static int flat_add(Flat *f, const char *name, const char *value, bool numeric) {
        if (!value)
                return 0;
        if (f->n >= AUDIT_FIELDS_MAX)
                return -E2BIG;
        char *v = strdup(value);
        if (!v)
                return -ENOMEM;
        f->name[f->n] = name;
        f->numeric[f->n] = numeric;
        f->value[f->n++] = v;
        return 0;
}

static int flat_add_num(Flat *f, const char *name, long long v) {
        char buf[32];
        snprintf(buf, sizeof buf, "%lld", v);
        return flat_add(f, name, buf, true);
}

static int audit_flatten(Audit *a, const Policy *policy, const AuditRecord *r, Flat *f) {
        _cleanup_free_ char *scopes = NULL, *message = NULL;
        char fp[13];
        const PeerIdentity *p = r->agent;
        const char *ev = audit_event_to_string(r->event);
        int k = 0;

        if (!ev)
                return -EINVAL;
        if (r->scopes && !(scopes = scope_set_join(r->scopes)))
                return -ENOMEM;
        const char *sc = scopes ? scopes : r->scope_string;
        if (r->token_fp)
                snprintf(fp, sizeof fp, "%s", r->token_fp);
        else if (r->token && audit_fingerprint(r->token, fp) < 0)
                return -EIO;

        if (r->message)
                message = strdup(r->message);
        else if (asprintf(&message, "tokend %s: credential %s%s%s%s%s%s%s", ev, strna(r->credential),
                          p && p->exe ? ", agent " : "", p && p->exe ? p->exe : "", (r->token || r->token_fp) ? ", token " : "",
                          (r->token || r->token_fp) ? fp : "", r->reason ? ": " : "", strempty(r->reason)) < 0)
                message = NULL;
        if (!message)
                return -ENOMEM;

        if ((k = flat_add(f, "MESSAGE", message, false)) < 0 || (k = flat_add(f, "EVENT", ev, false)) < 0 ||
            (k = flat_add(f, "CREDENTIAL", r->credential, false)) < 0 ||
            (k = flat_add(f, "SCOPES", sc && sc[0] ? sc : NULL, false)) < 0 ||
            (k = flat_add(f, "RESOURCE", r->resource, false)) < 0 || (k = flat_add(f, "GRANT", r->grant, false)) < 0 ||
            (k = flat_add_num(f, "OWNER_UID", a->owner_uid)) < 0 ||
            (k = flat_add(f, "OWNER_USER", a->owner_user, false)) < 0 ||
            (k = flat_add(f, "TOKEN_FP", (r->token || r->token_fp) ? fp : NULL, false)) < 0 ||
            (k = flat_add(f, "REASON", r->reason, false)) < 0)
                return k;
        const char *name = r->agent_name ?: (p ? policy_agent_name(policy_match(policy, p)) : NULL);
        if ((k = flat_add(f, "AGENT_NAME", name, false)) < 0)
                return k;
        if (p && ((k = flat_add_num(f, "AGENT_UID", p->uid)) < 0 || (k = flat_add_num(f, "AGENT_PID", p->pid)) < 0 ||
                  (k = flat_add(f, "AGENT_EXE", p->exe, false)) < 0 ||
                  (k = flat_add(f, "AGENT_UNIT", p->unit, false)) < 0))
                return k;
        return 0;
}

static int audit_send_journal(const Flat *f, int priority) {
        struct iovec iov[AUDIT_FIELDS_MAX + 4];
        char *lines[AUDIT_FIELDS_MAX + 4] = {};
        size_t n = 0;
        int r = 0;

        if (asprintf(&lines[n++], "MESSAGE_ID=%s", AUDIT_MESSAGE_ID) < 0 ||
            asprintf(&lines[n++], "SYSLOG_IDENTIFIER=tokend") < 0 || asprintf(&lines[n++], "PRIORITY=%d", priority) < 0)
                r = -ENOMEM;
        for (size_t i = 0; r >= 0 && i < f->n; i++) {
                bool plain = streq(f->name[i], "MESSAGE");
                if (asprintf(&lines[n++], "%s%s=%s", plain ? "" : "TOKEND_", f->name[i], f->value[i]) < 0)
                        r = -ENOMEM;
        }
        if (r >= 0) {
                for (size_t i = 0; i < n; i++)
                        iov[i] = (struct iovec) { .iov_base = lines[i], .iov_len = strlen(lines[i]) };
                r = sd_journal_sendv(iov, (int) n);
        }
        for (size_t i = 0; i < n; i++)
                free(lines[i]);
        return r;
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

static int audit_write_file(Audit *a, const Flat *f, int priority) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        int r;

        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "timestamp", json_object_new_int64((int64_t) now_realtime_usec()));
        json_object_object_add(o, "message_id", json_object_new_string(AUDIT_MESSAGE_ID));
        json_object_object_add(o, "priority", json_object_new_int(priority));
        for (size_t i = 0; i < f->n; i++) {
                char key[32];
                size_t j = 0;
                for (; f->name[i][j] && j < sizeof key - 1; j++)
                        key[j] = (char) tolower((unsigned char) f->name[i][j]);
                key[j] = 0;
                json_object_object_add(o, key, f->numeric[i] ? json_object_new_int64(strtoll(f->value[i], NULL, 10))
                                                             : json_object_new_string(f->value[i]));
        }
        size_t len;
        const char *text = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);
        if (!text)
                return -ENOMEM;
        _cleanup_free_ char *line = malloc(len + 1);
        if (!line)
                return -ENOMEM;
        memcpy(line, text, len);
        line[len] = '\n';

        r = audit_open_file(a);
        if (r < 0)
                return r;
        /* One write: O_APPEND keeps concurrent lines whole. */
        ssize_t n = write(a->fd, line, len + 1);
        if (n < 0)
                return -errno;
        return (size_t) n == len + 1 ? 0 : -EIO;
}

void audit_log(Manager *m, const AuditRecord *rec) {
        Audit *a = m->audit;
        _cleanup_(flat_done) Flat f = {};
        int priority = audit_priority(rec->event), r;

        if (!a)
                return;
        r = audit_flatten(a, m->policy, rec, &f);
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
                r = audit_send_journal(&f, priority);
                if (r >= 0)
                        return;
                log_warning_errno(r, "Cannot send the audit record to the journal (%m); using %s", a->path);
                a->journal = false;
        }
        r = audit_write_file(a, &f, priority);
        if (r < 0)
                log_error_errno(r, "Cannot write the audit record (%s, credential %s) to %s: %m",
                                strna(audit_event_to_string(rec->event)), strna(rec->credential), a->path);
}
