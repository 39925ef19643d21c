/* SPDX-License-Identifier: MIT */
/* daemon/consent.c: policy, grants and waiting requests (see consent.h). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <systemd/sd-event.h>

#include "audit.h"
#include "common/fileio.h"
#include "common/list.h"
#include "common/log.h"
#include "common/util.h"
#include "consent.h"
#include "credential.h"
#include "engine.h"
#include "manager.h"
#include "peer.h"
#include "policy.h"

#define GRANTS_FILE_MAX (4U * 1024U * 1024U)
#define DURATION_MAX_SEC (30LL * 24 * 3600)

#define ERR_POLICY "io.tokend.agent.PolicyDenied"
#define ERR_SCOPE "io.tokend.agent.ScopeNotAllowed"
#define ERR_NO_CREDENTIAL "io.tokend.agent.NoSuchCredential"
#define ERR_CONSENT_REQUIRED "io.tokend.agent.ConsentRequired"
#define ERR_CONSENT_DENIED "io.tokend.agent.ConsentDenied"
#define ERR_CALLER_GONE "io.tokend.agent.CallerGone"
#define ERR_LIFETIME "io.tokend.agent.LifetimeTooShort"
#define ERR_CONSENT_ENDED "io.tokend.agent.ConsentEnded"

typedef enum GrantKind {
        GRANT_TIME,
        GRANT_ONCE,
        GRANT_PROCESS,
        _GRANT_KIND_MAX,
} GrantKind;

static const char *const grant_kind_table[_GRANT_KIND_MAX] = {
        [GRANT_TIME] = "time",
        [GRANT_ONCE] = "once",
        [GRANT_PROCESS] = "process",
};

/* Who a grant or request is about, as the kernel described the process. For
 * a grant of an unknown caller, uid, exe and unit are what must match. */
typedef struct Caller {
        uid_t uid;
        pid_t pid;
        char *exe;
        char comm[PEER_COMM_MAX + 1];
        char *cgroup;
        char *unit;
} Caller;

struct Grant {
        Manager *manager;
        Grant *prev, *next;
        char *id;
        char *agent; /* policy agent name; NULL: an unknown caller, matched by `match` */
        Caller match;
        char *credential;
        ScopeSet scopes;
        bool all_scopes; /* covers every scope the policy allows */
        char *resource;
        GrantKind kind;
        int pidfd; /* GRANT_PROCESS: the process it is bound to */
        sd_event_source *pidfd_source;
        sd_event_source *timer; /* expiry, CLOCK_REALTIME */
        uint64_t created, expires; /* realtime usec */
};

struct ConsentRequest {
        Manager *manager;
        ConsentRequest *prev, *next;
        char *id;
        VarlinkCall *call;
        const PeerIdentity *identity; /* the connection's, valid while the call is */
        char *agent;
        char *key; /* what the per-agent cap counts */
        char *credential;
        ScopeSet scopes; /* what it may get (after the policy); empty: all the credential holds */
        bool asked_all;  /* it named no scopes: all its policy allows, judged again on a reload */
        char *resource;
        int64_t min_ttl;
        uint64_t created, deadline; /* realtime usec */
        sd_event_source *timer;
};

struct ConsentWatcher {
        Manager *manager;
        ConsentWatcher *prev, *next;
        VarlinkCall *call;
};

static void caller_done(Caller *c) {
        c->exe = mfree(c->exe);
        c->cgroup = mfree(c->cgroup);
        c->unit = mfree(c->unit);
}

static int caller_from_identity(const PeerIdentity *id, Caller *ret) {
        Caller c = { .uid = id->uid, .pid = id->pid };
        memcpy(c.comm, id->comm, sizeof c.comm);
        if ((id->exe && !(c.exe = strdup(id->exe))) || (id->cgroup && !(c.cgroup = strdup(id->cgroup))) ||
            (id->unit && !(c.unit = strdup(id->unit)))) {
                caller_done(&c);
                return -ENOMEM;
        }
        *ret = c;
        return 0;
}

static json_object *caller_to_json(const Caller *c) {
        json_object *o = json_object_new_object();
        if (!o)
                return NULL;
        json_object_object_add(o, "uid", json_object_new_int64(c->uid));
        json_object_object_add(o, "pid", json_object_new_int64(c->pid));
        if (c->exe)
                json_object_object_add(o, "exe", json_object_new_string(c->exe));
        json_object_object_add(o, "comm", json_object_new_string(c->comm));
        if (c->cgroup)
                json_object_object_add(o, "cgroup", json_object_new_string(c->cgroup));
        if (c->unit)
                json_object_object_add(o, "unit", json_object_new_string(c->unit));
        return o;
}

static json_object *identity_to_caller_json(const PeerIdentity *id) {
        Caller c = {};
        if (caller_from_identity(id, &c) < 0)
                return NULL;
        json_object *o = caller_to_json(&c);
        caller_done(&c);
        return o;
}

static int make_id(char prefix, char **ret) {
        uint8_t b[6];
        int r = random_bytes(b, sizeof b);
        if (r < 0)
                return r;
        if (asprintf(ret, "%c-%02x%02x%02x%02x%02x%02x", prefix, b[0], b[1], b[2], b[3], b[4], b[5]) < 0)
                return -ENOMEM;
        return 0;
}

static int64_t usec_to_sec(uint64_t u) {
        return (int64_t) (u / USEC_PER_SEC);
}

/* ---- agent errors ---- */

static json_object *consent_error_params(const char *credential, const char *agent, const char *request,
                                         const char *reason) {
        json_object *p = json_object_new_object();
        if (!p)
                return NULL;
        json_object_object_add(p, "credential", json_object_new_string(credential));
        if (agent)
                json_object_object_add(p, "agent", json_object_new_string(agent));
        if (request)
                json_object_object_add(p, "request", json_object_new_string(request));
        if (reason)
                json_object_object_add(p, "reason", json_object_new_string(reason));
        return p;
}

/* Refuses a token request with a named error, on the record. */
static int refuse(Manager *m, VarlinkCall *call, const PeerIdentity *id, const char *credential,
                  const ScopeSet *scopes, const char *resource, const char *grant, const char *error,
                  json_object *params) {
        audit_log(m, &(AuditRecord) { .event = AUDIT_DENY, .credential = credential, .scopes = scopes,
                                      .resource = resource, .agent = id, .grant = grant, .reason = error });
        return varlink_call_error(call, error, params);
}

/* ---- grants ---- */

static int grants_save(Manager *m) {
        _cleanup_(json_object_putp) json_object *root = json_object_new_object(), *arr = json_object_new_array();
        if (!root || !arr)
                return -ENOMEM;
        for (Grant *g = m->grants; g; g = g->next) {
                if (g->kind == GRANT_PROCESS)
                        continue;
                json_object *o = json_object_new_object();
                if (!o || json_object_array_add(arr, o) < 0) {
                        json_object_put(o);
                        return -ENOMEM;
                }
                json_object_object_add(o, "id", json_object_new_string(g->id));
                if (g->agent)
                        json_object_object_add(o, "agent", json_object_new_string(g->agent));
                else
                        json_object_object_add(o, "match", caller_to_json(&g->match));
                json_object_object_add(o, "credential", json_object_new_string(g->credential));
                json_object_object_add(o, "scopes", scope_set_to_json(&g->scopes));
                json_object_object_add(o, "all_scopes", json_object_new_boolean(g->all_scopes));
                if (g->resource)
                        json_object_object_add(o, "resource", json_object_new_string(g->resource));
                json_object_object_add(o, "kind", json_object_new_string(grant_kind_table[g->kind]));
                json_object_object_add(o, "created", json_object_new_int64((int64_t) g->created));
                json_object_object_add(o, "expires", json_object_new_int64((int64_t) g->expires));
        }
        json_object_object_add(root, "grants", json_object_get(arr));
        size_t len;
        const char *text = json_object_to_json_string_length(root, JSON_C_TO_STRING_PLAIN, &len);
        if (!text)
                return -ENOMEM;
        int r = write_file_atomic(m->state_dir, GRANTS_FILE, text, len, 0600);
        if (r < 0)
                return log_error_errno(r, "Cannot write %s/%s: %m", m->state_dir, GRANTS_FILE);
        return 0;
}

static void grant_free(Grant *g) {
        if (!g)
                return;
        Manager *m = g->manager;
        if (m) {
                LIST_REMOVE(m->grants, g);
                m->n_grants--;
                if (!m->stopping)
                        manager_update_status(m);
        }
        sd_event_source_disable_unref(g->timer);
        sd_event_source_disable_unref(g->pidfd_source);
        safe_close(g->pidfd);
        free(g->id);
        free(g->agent);
        caller_done(&g->match);
        free(g->credential);
        scope_set_done(&g->scopes);
        free(g->resource);
        free(g);
}

/* Ends a grant, on the record (why: "revoked", "expired", "process-exited",
 * "credential-removed", "unused"), without saving the list. */
static void grant_end_nosave(Grant *g, const char *why) {
        /* Its Subscribe streams end with it; those of a removed credential
         * end with NoSuchCredential when it is freed, right after. */
        if (!streq(why, "credential-removed"))
                engine_subscriptions_grant_ended(g->manager, g->id, g->agent, why);
        audit_log(g->manager, &(AuditRecord) { .event = AUDIT_GRANT, .credential = g->credential,
                                               .scopes = &g->scopes, .resource = g->resource, .grant = g->id,
                                               .reason = why, .agent_name = g->agent });
        log_info("Grant %s (%s, credential %s) ended: %s", g->id, g->agent ?: "unknown caller", g->credential, why);
        grant_free(g);
}

static void grant_end(Grant *g, const char *why) {
        Manager *m = g->manager;
        bool persisted = g->kind != GRANT_PROCESS;
        grant_end_nosave(g, why);
        if (persisted)
                (void) grants_save(m);
}

static int grant_on_expire(sd_event_source *s, uint64_t usec, void *userdata) {
        (void) s;
        (void) usec;
        grant_end(userdata, "expired");
        return 0;
}

static int grant_on_process_exit(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        (void) s;
        (void) fd;
        (void) revents;
        grant_end(userdata, "process-exited");
        return 0;
}

static bool pidfd_exited(int fd) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        return fd < 0 || poll(&p, 1, 0) != 0;
}

/* Links a new grant and arms its timers. Takes ownership of g on success and
 * failure alike. */
static int grant_link(Manager *m, Grant *g) {
        int r;
        g->manager = m;
        LIST_PREPEND(m->grants, g);
        m->n_grants++;
        manager_update_status(m);
        r = sd_event_add_time(m->event, &g->timer, CLOCK_REALTIME, g->expires, USEC_PER_SEC, grant_on_expire, g);
        if (r >= 0 && g->kind == GRANT_PROCESS)
                r = sd_event_add_io(m->event, &g->pidfd_source, g->pidfd, EPOLLIN, grant_on_process_exit, g);
        if (r < 0) {
                grant_free(g);
                return r;
        }
        return 0;
}

static bool grant_matches_caller(const Grant *g, const PeerIdentity *id, const char *agent) {
        if (g->agent) {
                if (!agent || !streq(agent, g->agent))
                        return false;
        } else if (agent || id->uid != g->match.uid || !streq_ptr(id->exe, g->match.exe) ||
                   !streq_ptr(id->unit, g->match.unit))
                return false;
        if (g->kind == GRANT_PROCESS)
                /* The same process: same PID while the grant's pidfd says it
                 * lives (a PID cannot be recycled before its process exits),
                 * and the caller's own pidfd too. */
                return id->pid == g->match.pid && id->pidfd >= 0 && !pidfd_exited(g->pidfd) && !peer_exited(id);
        return true;
}

/* Whether g covers a request of (credential, resource, scopes). Empty
 * scopes ask for all the policy allows, which only an all-scope grant covers. */
static bool grant_covers(const Grant *g, const PeerIdentity *id, const char *agent, const char *credential,
                         const ScopeSet *scopes, const char *resource) {
        if (!streq(g->credential, credential) || !streq_ptr(g->resource, resource))
                return false;
        if (g->expires <= now_realtime_usec())
                return false;
        if (!g->all_scopes && (scopes->n == 0 || !scope_set_is_subset(scopes, &g->scopes, NULL)))
                return false;
        return grant_matches_caller(g, id, agent);
}

static Grant *grant_find_covering(Manager *m, const PeerIdentity *id, const char *agent, const char *credential,
                                  const ScopeSet *scopes, const char *resource) {
        for (Grant *g = m->grants; g; g = g->next)
                if (grant_covers(g, id, agent, credential, scopes, resource))
                        return g;
        return NULL;
}

static Grant *grant_find(Manager *m, const char *id) {
        for (Grant *g = m->grants; g; g = g->next)
                if (streq(g->id, id))
                        return g;
        return NULL;
}

static json_object *grant_to_json(const Grant *g) {
        json_object *o = json_object_new_object();
        if (!o)
                return NULL;
        uint64_t now = now_realtime_usec();
        json_object_object_add(o, "id", json_object_new_string(g->id));
        if (g->agent)
                json_object_object_add(o, "agent", json_object_new_string(g->agent));
        else
                json_object_object_add(o, "match", caller_to_json(&g->match));
        json_object_object_add(o, "credential", json_object_new_string(g->credential));
        json_object_object_add(o, "scopes", scope_set_to_json(&g->scopes));
        if (g->resource)
                json_object_object_add(o, "resource", json_object_new_string(g->resource));
        json_object_object_add(o, "kind", json_object_new_string(grant_kind_table[g->kind]));
        if (g->kind == GRANT_PROCESS)
                json_object_object_add(o, "pid", json_object_new_int64(g->match.pid));
        json_object_object_add(o, "created", json_object_new_int64(usec_to_sec(g->created)));
        json_object_object_add(o, "expires", json_object_new_int64(usec_to_sec(g->expires)));
        json_object_object_add(o, "expires_in",
                               json_object_new_int64(g->expires > now ? usec_to_sec(g->expires - now) : 0));
        return o;
}

static const char *json_str(json_object *o, const char *key) {
        json_object *v;
        return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
                       ? json_object_get_string(v)
                       : NULL;
}

static int64_t json_int(json_object *o, const char *key) {
        json_object *v;
        return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_int) ? json_object_get_int64(v)
                                                                                               : -1;
}

static int grant_from_json(json_object *o, Grant **ret) {
        _cleanup_free_ Grant *g = calloc(1, sizeof *g);
        json_object *v;
        if (!g)
                return -ENOMEM;
        g->pidfd = -1;
        const char *id = json_str(o, "id"), *agent = json_str(o, "agent"), *cred = json_str(o, "credential"),
                   *res = json_str(o, "resource"), *kind = json_str(o, "kind");
        int64_t created = json_int(o, "created"), expires = json_int(o, "expires");
        if (!id || strlen(id) > CONSENT_ID_MAX || !cred || !credential_name_valid(cred) || !kind ||
            created < 0 || expires <= 0)
                return -EINVAL;
        if (streq(kind, "time"))
                g->kind = GRANT_TIME;
        else if (streq(kind, "once"))
                g->kind = GRANT_ONCE;
        else
                return -EINVAL;
        if (!json_object_object_get_ex(o, "scopes", &v) || scope_set_from_json(v, &g->scopes) < 0)
                return -EINVAL;
        if (json_object_object_get_ex(o, "all_scopes", &v)) {
                if (!json_object_is_type(v, json_type_boolean)) {
                        scope_set_done(&g->scopes);
                        return -EINVAL;
                }
                g->all_scopes = json_object_get_boolean(v);
        }
        if ((json_object_object_get_ex(o, "resource", &v) && !res) ||
            (json_object_object_get_ex(o, "agent", &v) && !agent) || expires <= created ||
            (uint64_t) (expires - created) > (uint64_t) DURATION_MAX_SEC * USEC_PER_SEC) {
                scope_set_done(&g->scopes);
                return -EINVAL;
        }
        if (!g->all_scopes && g->scopes.n == 0) {
                scope_set_done(&g->scopes);
                return -EINVAL;
        }
        if (agent) {
                if (!(g->agent = strdup(agent)))
                        goto oom;
        } else {
                json_object *mt;
                if (!json_object_object_get_ex(o, "match", &mt) || !json_object_is_type(mt, json_type_object) ||
                    json_int(mt, "uid") < 0 || json_int(mt, "uid") > UINT32_MAX - 1)
                        goto bad;
                g->match.uid = (uid_t) json_int(mt, "uid");
                int64_t pid = json_int(mt, "pid");
                g->match.pid = pid > 0 && pid <= INT32_MAX ? (pid_t) pid : 0;
                const char *exe = json_str(mt, "exe"), *unit = json_str(mt, "unit"), *cg = json_str(mt, "cgroup"),
                           *comm = json_str(mt, "comm");
                if ((exe && !(g->match.exe = strdup(exe))) || (unit && !(g->match.unit = strdup(unit))) ||
                    (cg && !(g->match.cgroup = strdup(cg))))
                        goto oom;
                snprintf(g->match.comm, sizeof g->match.comm, "%s", comm ?: "");
        }
        if (!(g->id = strdup(id)) || !(g->credential = strdup(cred)) || (res && !(g->resource = strdup(res))))
                goto oom;
        g->created = (uint64_t) created;
        g->expires = (uint64_t) expires;
        *ret = TAKE_PTR(g);
        return 0;
bad:
        grant_free(TAKE_PTR(g));
        return -EINVAL;
oom:
        grant_free(TAKE_PTR(g));
        return -ENOMEM;
}

int consent_load(Manager *m) {
        _cleanup_free_ char *path = NULL, *text = NULL;
        size_t len;
        int r;

        if (asprintf(&path, "%s/%s", m->state_dir, GRANTS_FILE) < 0)
                return -ENOMEM;
        r = read_file_full(path, GRANTS_FILE_MAX, &text, &len);
        if (r == -ENOENT)
                return 0;
        if (r == -EFBIG) {
                /* Dropping grants only narrows: the owner approves again. */
                log_error("%s is larger than %u bytes; starting without saved grants", path, GRANTS_FILE_MAX);
                return 0;
        }
        if (r < 0)
                return log_error_errno(r, "Cannot read %s: %m", path);
        _cleanup_(json_object_putp) json_object *root = json_tokener_parse(text);
        json_object *arr;
        if (!root || !json_object_object_get_ex(root, "grants", &arr) || !json_object_is_type(arr, json_type_array)) {
                log_error("%s is malformed; starting without saved grants", path);
                return 0;
        }
        uint64_t now = now_realtime_usec();
        unsigned n = 0;
        for (size_t i = 0; i < json_object_array_length(arr); i++) {
                Grant *g = NULL;
                r = grant_from_json(json_object_array_get_idx(arr, i), &g);
                if (r == -ENOMEM)
                        return log_error_errno(r, "Out of memory loading grants");
                if (r < 0) {
                        log_error("%s: grant %zu is malformed, dropping it", path, i);
                        continue;
                }
                if (g->expires <= now || m->n_grants >= GRANTS_MAX || grant_find(m, g->id)) {
                        grant_free(g);
                        continue;
                }
                r = grant_link(m, g);
                if (r < 0)
                        return log_error_errno(r, "Cannot arm the expiry of a grant: %m");
                n++;
        }
        log_info("Loaded %u grants from %s", n, path);
        return 0;
}

/* ---- waiting requests ---- */

static json_object *request_to_json(const ConsentRequest *q) {
        json_object *o = json_object_new_object();
        if (!o)
                return NULL;
        json_object_object_add(o, "id", json_object_new_string(q->id));
        if (q->agent)
                json_object_object_add(o, "agent", json_object_new_string(q->agent));
        json_object_object_add(o, "caller", identity_to_caller_json(q->identity));
        json_object_object_add(o, "credential", json_object_new_string(q->credential));
        json_object_object_add(o, "scopes", scope_set_to_json(&q->scopes));
        if (q->resource)
                json_object_object_add(o, "resource", json_object_new_string(q->resource));
        json_object_object_add(o, "created", json_object_new_int64(usec_to_sec(q->created)));
        json_object_object_add(o, "deadline", json_object_new_int64(usec_to_sec(q->deadline)));
        return o;
}

/* One reply of a Watch stream. NULL when out of memory. */
static json_object *watch_event_json(const char *event, const ConsentRequest *q, const char *grant) {
        json_object *p = json_object_new_object();
        if (!p)
                return NULL;
        json_object_object_add(p, "event", json_object_new_string(event));
        json_object_object_add(p, "request", request_to_json(q));
        if (grant)
                json_object_object_add(p, "grant", json_object_new_string(grant));
        return p;
}

static void watchers_notify(Manager *m, const char *event, const ConsentRequest *q, const char *grant) {
        for (ConsentWatcher *w = m->watchers; w; w = w->next) {
                json_object *p = watch_event_json(event, q, grant);
                if (!p)
                        return;
                (void) varlink_call_reply_more(w->call, p);
        }
}

/* The oldest waiting request (the list is newest first): walk it with ->prev. */
static ConsentRequest *requests_oldest(Manager *m) {
        ConsentRequest *q = m->requests;
        while (q && q->next)
                q = q->next;
        return q;
}

/* Unlinks and frees q; its call must have been answered or handed on. */
static void request_free(ConsentRequest *q) {
        Manager *m = q->manager;
        LIST_REMOVE(m->requests, q);
        m->n_requests--;
        manager_update_status(m);
        sd_event_source_disable_unref(q->timer);
        free(q->id);
        free(q->agent);
        free(q->key);
        free(q->credential);
        scope_set_done(&q->scopes);
        free(q->resource);
        free(q);
}

/* Takes the waiting call out of q to answer it elsewhere, with what it asked
 * for (*ret_scopes and *ret_resource, owned; the latter NULL when none), and
 * frees q. */
static VarlinkCall *request_take(ConsentRequest *q, ScopeSet *ret_scopes, int64_t *ret_min_ttl,
                                 char **ret_resource) {
        VarlinkCall *call = TAKE_PTR(q->call);
        varlink_call_set_cancel(call, NULL, NULL);
        *ret_scopes = q->scopes;
        q->scopes = (ScopeSet) {};
        *ret_min_ttl = q->min_ttl;
        *ret_resource = TAKE_PTR(q->resource);
        request_free(q);
        return call;
}

/* Ends q with an agent error, on the record. */
static void request_fail(ConsentRequest *q, const char *event, const char *error, const char *reason) {
        Manager *m = q->manager;
        VarlinkCall *call = TAKE_PTR(q->call);
        watchers_notify(m, event, q, NULL);
        varlink_call_set_cancel(call, NULL, NULL);
        json_object *p = streq(error, ERR_NO_CREDENTIAL)
                                 ? engine_error_parameters(q->credential, error, NULL, -1)
                                 : consent_error_params(q->credential, q->agent, q->id,
                                                        streq(error, ERR_CONSENT_DENIED) ? NULL : reason);
        (void) refuse(m, call, q->identity, q->credential, &q->scopes, q->resource, NULL, error, p);
        request_free(q);
}

static int request_on_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        ConsentRequest *q = userdata;
        (void) s;
        (void) usec;
        log_info("Request %s (%s, credential %s) got no answer in time", q->id, q->agent ?: "unknown caller",
                 q->credential);
        request_fail(q, "timeout", ERR_CONSENT_REQUIRED, "the owner did not answer in time");
        return 0;
}

static void request_on_cancel(VarlinkCall *call, void *userdata) {
        ConsentRequest *q = userdata;
        (void) call;
        q->call = NULL;
        log_debug("Request %s: the caller hung up", q->id);
        watchers_notify(q->manager, "gone", q, NULL);
        request_free(q);
}

static ConsentRequest *request_find(Manager *m, const char *id) {
        for (ConsentRequest *q = m->requests; q; q = q->next)
                if (streq(q->id, id))
                        return q;
        return NULL;
}

/* Hands a request that a grant now covers to the engine, with the grant on
 * its record. A single-use grant is spent here. */
static int issue_under_grant(Manager *m, VarlinkCall *call, Credential *c, Grant *g, ScopeSet *scopes,
                             const char *resource, int64_t min_ttl) {
        int r = varlink_call_set_tag(call, g->id);
        if (r < 0) {
                scope_set_done(scopes);
                return r;
        }
        if (g->kind == GRANT_ONCE) {
                log_info("Grant %s (single use) spent", g->id);
                grant_free(g);
                (void) grants_save(m);
        }
        return engine_get_token(c, call, scopes, resource, min_ttl,
                                policy_agent_max_lifetime_usec(policy_match(m->policy, audit_call_agent(call))));
}

static unsigned requests_of(Manager *m, const char *key) {
        unsigned n = 0;
        for (ConsentRequest *q = m->requests; q; q = q->next)
                n += streq(q->key, key);
        return n;
}

static int request_queue(Manager *m, VarlinkCall *call, const PeerIdentity *id, const char *agent,
                         const char *credential, ScopeSet *scopes, bool asked_all, const char *resource,
                         int64_t min_ttl) {
        _cleanup_free_ char *key = NULL;
        int r;

        /* Per agent, and per uid for unknown callers: an unknown caller can
         * take any executable path, so counting per path would let one uid
         * fill the global cap and starve every agent. */
        if (agent ? asprintf(&key, "agent:%s", agent) < 0 : asprintf(&key, "uid:%u", (unsigned) id->uid) < 0)
                return -ENOMEM;
        if (m->n_requests >= CONSENT_REQUESTS_MAX || requests_of(m, key) >= CONSENT_REQUESTS_PER_AGENT_MAX) {
                int k = refuse(m, call, id, credential, scopes, resource, NULL, ERR_CONSENT_REQUIRED,
                               consent_error_params(credential, agent, NULL,
                                                    "too many requests are waiting for the owner's consent"));
                scope_set_done(scopes);
                return k;
        }

        ConsentRequest *q = calloc(1, sizeof *q);
        if (!q) {
                scope_set_done(scopes);
                return -ENOMEM;
        }
        q->manager = m;
        q->call = call;
        q->identity = id;
        q->scopes = *scopes;
        *scopes = (ScopeSet) {};
        q->asked_all = asked_all;
        q->min_ttl = min_ttl;
        q->key = TAKE_PTR(key);
        q->created = now_realtime_usec();
        q->deadline = q->created + m->consent_timeout_usec;
        LIST_PREPEND(m->requests, q);
        m->n_requests++;
        if ((r = make_id('r', &q->id)) < 0 || (agent && !(q->agent = strdup(agent))) ||
            !(q->credential = strdup(credential)) || (resource && !(q->resource = strdup(resource)))) {
                request_free(q);
                return r < 0 ? r : -ENOMEM;
        }
        r = sd_event_add_time_relative(m->event, &q->timer, CLOCK_BOOTTIME, m->consent_timeout_usec, 0,
                                       request_on_timeout, q);
        if (r < 0) {
                request_free(q);
                return r;
        }
        varlink_call_set_cancel(call, request_on_cancel, q);
        log_notice("Request %s waits for consent: %s (pid %d, %s) wants credential %s", q->id,
                   agent ?: "an unknown caller", (int) id->pid, strna(id->exe), credential);
        watchers_notify(m, "pending", q, NULL);
        manager_update_status(m);
        return 0;
}

/* The policy's verdict on a request of agent a (NULL: unknown caller) under
 * the policy in force. 0: allowed, *ret_effective = what it may get (empty:
 * all the credential holds). -EPERM: refused, *ret_error and *ret_params
 * say with which agent error. -ENOMEM. */
static int policy_decide(const PolicyAgent *a, const char *credential, const ScopeSet *requested, Credential *c,
                         const char *resource, int64_t min_ttl, ScopeSet *ret_effective, const char **ret_error,
                         json_object **ret_params) {
        _cleanup_(scope_set_done) ScopeSet allowed = {};
        _cleanup_free_ char *why = NULL, *why0 = NULL;
        const char *agent = policy_agent_name(a);

        int r = policy_check_request(a, credential, requested, c ? &c->scopes : NULL, resource, ret_effective, &why);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                scope_set_done(ret_effective);
                /* Without its scopes, is the request allowed? Then the scopes
                 * are what is too wide; otherwise the agent, the credential
                 * or the resource is. */
                int k = policy_check_request(a, credential, NULL, c ? &c->scopes : NULL, resource, &allowed, &why0);
                if (k == -ENOMEM)
                        return k;
                if (k < 0 || !requested || requested->n == 0) {
                        *ret_error = ERR_POLICY;
                        *ret_params = consent_error_params(credential, agent, NULL, why0 ?: why);
                        return -EPERM;
                }
                ScopeSet missing = {};
                (void) scope_set_is_subset(requested, &allowed, &missing);
                json_object *p = json_object_new_object();
                if (p) {
                        json_object_object_add(p, "credential", json_object_new_string(credential));
                        json_object_object_add(p, "scopes", scope_set_to_json(&missing));
                        json_object_object_add(p, "allowed", scope_set_to_json(&allowed));
                        if (why)
                                json_object_object_add(p, "reason", json_object_new_string(why));
                }
                scope_set_done(&missing);
                *ret_error = ERR_SCOPE;
                *ret_params = p;
                return -EPERM;
        }
        uint64_t max = policy_agent_max_lifetime_usec(a);
        if (min_ttl >= 0 && max > 0 && (uint64_t) min_ttl * USEC_PER_SEC > max) {
                /* Never satisfiable for this agent: say so before asking anyone. */
                scope_set_done(ret_effective);
                json_object *p = json_object_new_object();
                if (p) {
                        json_object_object_add(p, "credential", json_object_new_string(credential));
                        json_object_object_add(p, "lifetime", json_object_new_int64((int64_t) (max / USEC_PER_SEC)));
                }
                *ret_error = ERR_LIFETIME;
                *ret_params = p;
                return -EPERM;
        }
        return 0;
}

int consent_get_token(Manager *m, VarlinkCall *call, const char *credential, ScopeSet *scopes, const char *resource,
                      int64_t min_ttl) {
        _cleanup_(scope_set_done) ScopeSet requested = *scopes, effective = {};
        const PeerIdentity *id = audit_call_agent(call);
        const char *error = NULL;
        json_object *params = NULL;

        *scopes = (ScopeSet) {};
        if (!id)
                return varlink_call_error(call, ERR_CALLER_GONE, NULL);
        const PolicyAgent *a = policy_match(m->policy, id);
        const char *agent = policy_agent_name(a);
        if (id->uid != m->owner_uid && !a)
                /* Admitted at connect, but the policy was reloaded since. */
                return refuse(m, call, id, credential, &requested, resource, NULL, VARLINK_ERROR_PERMISSION_DENIED,
                              NULL);

        Credential *c = manager_find_credential(m, credential);
        int r = policy_decide(a, credential, &requested, c, resource, min_ttl, &effective, &error, &params);
        if (r == -EPERM)
                return refuse(m, call, id, credential, &requested, resource, NULL, error, params);
        if (r < 0)
                return r;
        if (!c)
                return refuse(m, call, id, credential, &requested, resource, NULL, ERR_NO_CREDENTIAL,
                              engine_error_parameters(credential, ERR_NO_CREDENTIAL, NULL, -1));

        if (policy_agent_mode(a) == POLICY_ALLOW)
                return engine_get_token(c, call, &effective, resource, min_ttl, policy_agent_max_lifetime_usec(a));

        if (peer_exited(id))
                return varlink_call_error(call, ERR_CALLER_GONE, NULL);
        Grant *g = grant_find_covering(m, id, agent, credential, &effective, resource);
        if (g)
                return issue_under_grant(m, call, c, g, &effective, resource, min_ttl);
        return request_queue(m, call, id, agent, credential, &effective, requested.n == 0, resource, min_ttl);
}

int consent_check_stream(Manager *m, VarlinkCall *call, Credential *c, const ScopeSet *scopes, const char *resource,
                         int64_t min_ttl, bool check_grant, const char **ret_error, json_object **ret_params) {
        _cleanup_(scope_set_done) ScopeSet effective = {};
        const PeerIdentity *id = audit_call_agent(call);

        if (!id || peer_exited(id)) {
                *ret_error = ERR_CALLER_GONE;
                *ret_params = NULL;
                return -EPERM;
        }
        const PolicyAgent *a = policy_match(m->policy, id);
        const char *agent = policy_agent_name(a);
        if (id->uid != m->owner_uid && !a) {
                *ret_error = VARLINK_ERROR_PERMISSION_DENIED;
                *ret_params = NULL;
                return -EPERM;
        }
        int r = policy_decide(a, c->name, scopes->n > 0 ? scopes : NULL, c, resource, min_ttl, &effective, ret_error,
                              ret_params);
        if (r < 0)
                return r;
        if (policy_agent_mode(a) == POLICY_ALLOW || !check_grant)
                return 0;

        const char *tag = varlink_call_get_tag(call);
        Grant *g = tag ? grant_find(m, tag) : NULL;
        if (g && grant_covers(g, id, agent, c->name, scopes, resource))
                return 0;
        /* A grant that ended otherwise ended its streams then: one gone now
         * was single-use. Without one, the agent was in allow mode before a
         * reload. */
        *ret_error = ERR_CONSENT_ENDED;
        *ret_params = json_object_new_object();
        if (*ret_params) {
                json_object_object_add(*ret_params, "credential", json_object_new_string(c->name));
                if (agent)
                        json_object_object_add(*ret_params, "agent", json_object_new_string(agent));
                if (tag)
                        json_object_object_add(*ret_params, "grant", json_object_new_string(tag));
                json_object_object_add(*ret_params, "reason",
                                       json_object_new_string(tag && !g ? "used" : "policy-changed"));
        }
        return -EPERM;
}

/* Judges a waiting request again under the policy in force (after a reload,
 * and before an approval answers it). 1: still waits (its scopes updated to
 * what it may get now); 0: it was answered (refused, or given a token when
 * its agent is now in allow mode) and freed; <0: error. */
static int request_rejudge(Manager *m, ConsentRequest *q) {
        _cleanup_(scope_set_done) ScopeSet effective = {};
        const char *error = NULL;
        json_object *params = NULL;

        const PolicyAgent *a = policy_match(m->policy, q->identity);
        if (!streq_ptr(policy_agent_name(a), q->agent) || (q->identity->uid != m->owner_uid && !a)) {
                request_fail(q, "timeout", ERR_CONSENT_REQUIRED,
                             "the policy changed while the request waited and classifies the caller differently "
                             "now; ask again");
                return 0;
        }
        Credential *c = manager_find_credential(m, q->credential);
        int r = policy_decide(a, q->credential, q->asked_all ? NULL : &q->scopes, c, q->resource, q->min_ttl,
                              &effective, &error, &params);
        if (r == -EPERM) {
                Manager *mm = q->manager;
                VarlinkCall *call = TAKE_PTR(q->call);
                watchers_notify(mm, "denied", q, NULL);
                varlink_call_set_cancel(call, NULL, NULL);
                (void) refuse(mm, call, q->identity, q->credential, &q->scopes, q->resource, NULL, error, params);
                request_free(q);
                return 0;
        }
        if (r < 0)
                return r;
        scope_set_done(&q->scopes);
        q->scopes = effective;
        effective = (ScopeSet) {};
        if (c && policy_agent_mode(a) == POLICY_ALLOW) {
                watchers_notify(m, "approved", q, NULL);
                ScopeSet sc;
                int64_t min_ttl;
                _cleanup_free_ char *res = NULL;
                VarlinkCall *call = request_take(q, &sc, &min_ttl, &res);
                (void) engine_get_token(c, call, &sc, res, min_ttl, policy_agent_max_lifetime_usec(a));
                return 0;
        }
        return 1;
}

static void watchers_recheck(Manager *m) {
        for (ConsentWatcher *w = m->watchers, *next; w; w = next) {
                next = w->next;
                if (policy_is_manager_allowed(m->policy, audit_call_agent(w->call), m->owner_uid))
                        continue;
                VarlinkCall *call = w->call;
                varlink_call_set_cancel(call, NULL, NULL);
                LIST_REMOVE(m->watchers, w);
                free(w);
                (void) varlink_call_error(call, VARLINK_ERROR_PERMISSION_DENIED, NULL);
        }
}

void consent_policy_changed(Manager *m) {
        watchers_recheck(m);
        engine_subscriptions_recheck(m);
        /* Each pass ends at the first request answered (the list changed
         * under us) and starts over; requests that keep waiting are judged
         * again, which changes nothing. At most CONSENT_REQUESTS_MAX passes. */
        for (bool again = true; again;) {
                again = false;
                for (ConsentRequest *q = m->requests; q; q = q->next)
                        if (request_rejudge(m, q) == 0) {
                                again = true;
                                break;
                        }
        }
}

/* ---- the manager's side ---- */

int consent_list_pending(Manager *m, VarlinkCall *call) {
        json_object *arr = json_object_new_array();
        if (!arr)
                return -ENOMEM;
        for (ConsentRequest *q = requests_oldest(m); q; q = q->prev)
                if (json_object_array_add(arr, request_to_json(q)) < 0) {
                        json_object_put(arr);
                        return -ENOMEM;
                }
        json_object *p = json_object_new_object();
        if (!p) {
                json_object_put(arr);
                return -ENOMEM;
        }
        json_object_object_add(p, "requests", arr);
        return varlink_call_reply(call, p);
}

static void watcher_on_cancel(VarlinkCall *call, void *userdata) {
        ConsentWatcher *w = userdata;
        (void) call;
        LIST_REMOVE(w->manager->watchers, w);
        free(w);
}

int consent_watch(Manager *m, VarlinkCall *call) {
        if (!(varlink_call_flags(call) & VARLINK_CALL_MORE))
                return varlink_call_error(call, VARLINK_ERROR_EXPECTED_MORE, NULL);
        unsigned n = 0;
        for (ConsentWatcher *w = m->watchers; w; w = w->next)
                n++;
        if (n >= CONSENT_WATCHERS_MAX)
                return varlink_call_error(call, "io.tokend.manager.TooManyWatchers", NULL);
        ConsentWatcher *w = calloc(1, sizeof *w);
        if (!w)
                return -ENOMEM;
        w->manager = m;
        w->call = call;
        for (ConsentRequest *q = requests_oldest(m); q; q = q->prev) {
                json_object *p = watch_event_json("pending", q, NULL);
                if (!p) {
                        free(w);
                        return -ENOMEM;
                }
                (void) varlink_call_reply_more(call, p);
        }
        LIST_PREPEND(m->watchers, w);
        varlink_call_set_cancel(call, watcher_on_cancel, w);
        return 0;
}

static int manager_error(VarlinkCall *call, const char *error, const char *key, const char *value) {
        return varlink_call_error(call, error, key ? varlink_params_kv(key, value, NULL, NULL) : NULL);
}

/* A grant answering request q, and in *ret_result what q itself gets: what
 * it asked for, within what was approved. Takes *approved. */
static int grant_new_for(ConsentRequest *q, const PolicyAgent *a, int64_t duration_sec, bool once, bool process,
                         ScopeSet *approved, Grant **ret, ScopeSet *ret_result) {
        _cleanup_(scope_set_done) ScopeSet result = {};
        int r = 0;

        _cleanup_free_ Grant *g = calloc(1, sizeof *g);
        if (!g)
                return -ENOMEM;
        g->pidfd = -1;
        g->kind = once ? GRANT_ONCE : process ? GRANT_PROCESS : GRANT_TIME;
        g->created = now_realtime_usec();
        uint64_t d = duration_sec > 0 ? (uint64_t) duration_sec * USEC_PER_SEC : policy_agent_consent_usec(a);
        g->expires = g->created + d;
        if (approved->n > 0) {
                g->scopes = *approved;
                *approved = (ScopeSet) {};
        } else if (q->scopes.n > 0) {
                if (scope_set_copy(&q->scopes, &g->scopes) < 0)
                        goto fail;
        } else
                g->all_scopes = true;
        if ((r = make_id('g', &g->id)) < 0 || (q->agent && !(g->agent = strdup(q->agent))) ||
            caller_from_identity(q->identity, &g->match) < 0 || !(g->credential = strdup(q->credential)) ||
            (q->resource && !(g->resource = strdup(q->resource))))
                goto fail;
        if (process && (g->pidfd = fcntl(q->identity->pidfd, F_DUPFD_CLOEXEC, 3)) < 0) {
                r = -errno;
                goto fail;
        }

        /* What the waiting request gets: what it asked for, within what was approved. */
        if (g->all_scopes || q->scopes.n == 0)
                r = scope_set_copy(g->all_scopes ? &q->scopes : &g->scopes, &result);
        else {
                r = 0;
                for (size_t i = 0; r >= 0 && i < q->scopes.n; i++)
                        if (scope_set_contains(&g->scopes, q->scopes.items[i]))
                                r = scope_set_add(&result, q->scopes.items[i]);
        }
        if (r < 0)
                goto fail;

        *ret = TAKE_PTR(g);
        *ret_result = result;
        result = (ScopeSet) {};
        return 0;
fail:
        grant_free(TAKE_PTR(g));
        return r < 0 ? r : -ENOMEM;
}

int consent_approve(Manager *m, VarlinkCall *call, const char *id, int64_t duration_sec, bool once, bool process,
                    json_object *scopes_json) {
        _cleanup_(scope_set_done) ScopeSet approved = {}, result = {};
        int r;

        ConsentRequest *q = request_find(m, id);
        if (!q)
                return manager_error(call, "io.tokend.manager.NoSuchRequest", "id", id);
        if (once && process)
                return varlink_call_error_invalid_parameter(call, "process");
        if (duration_sec == 0 || duration_sec > DURATION_MAX_SEC)
                return varlink_call_error_invalid_parameter(call, "duration");
        if (scopes_json && (scope_set_from_json(scopes_json, &approved) < 0 || approved.n == 0))
                return varlink_call_error_invalid_parameter(call, "scopes");
        if (process && q->identity->pidfd < 0)
                return manager_error(call, "io.tokend.manager.ApprovalTooWide", "reason",
                                     "the requesting process has no pidfd: a grant cannot be bound to it");
        if (m->n_grants >= GRANTS_MAX)
                return varlink_call_error(call, "io.tokend.manager.TooManyGrants", NULL);
        Credential *c = manager_find_credential(m, q->credential);
        if (!c)
                return manager_error(call, "io.tokend.manager.NoSuchCredential", "name", q->credential);

        /* The policy is the ceiling: under the policy in force now, and for
         * the agent the caller is now (a reload judged it already; this
         * only guards against a change that did not go through one). */
        r = request_rejudge(m, q);
        if (r < 0)
                return r;
        if (r == 0)
                return manager_error(call, "io.tokend.manager.ApprovalTooWide", "reason",
                                     "under the policy in force the request no longer waits for consent");
        const PolicyAgent *a = policy_match(m->policy, q->identity);
        if (approved.n > 0) {
                _cleanup_free_ char *why = NULL;
                r = policy_check_request(a, q->credential, &approved, &c->scopes, q->resource, NULL, &why);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        return manager_error(call, "io.tokend.manager.ApprovalTooWide", "reason", why);
        }

        Grant *linked = NULL;
        r = grant_new_for(q, a, duration_sec, once, process, &approved, &linked, &result);
        if (r < 0)
                return r;
        r = grant_link(m, linked);
        if (r < 0)
                return r;
        if (linked->kind != GRANT_PROCESS)
                (void) grants_save(m);
        audit_log(m, &(AuditRecord) { .event = AUDIT_APPROVE, .credential = linked->credential,
                                      .scopes = &linked->scopes, .resource = linked->resource, .grant = linked->id,
                                      .agent = q->identity, .reason = grant_kind_table[linked->kind] });
        log_info("Request %s approved: grant %s (%s) for %s, credential %s", q->id, linked->id,
                 grant_kind_table[linked->kind], q->agent ?: "an unknown caller", q->credential);

        json_object *reply = json_object_new_object();
        if (!reply)
                return -ENOMEM;
        json_object_object_add(reply, "grant", grant_to_json(linked));
        _cleanup_free_ char *grant_id = strdup(linked->id);
        if (!grant_id) {
                json_object_put(reply);
                return -ENOMEM;
        }

        /* Answer the request, then every other waiting request the grant
         * covers (a single-use grant is spent by the first). */
        watchers_notify(m, "approved", q, grant_id);
        const PeerIdentity *qid = q->identity;
        _cleanup_free_ char *qagent = TAKE_PTR(q->agent), *qcred = TAKE_PTR(q->credential),
                            *qrid = TAKE_PTR(q->id), *resource = NULL;
        ScopeSet asked;
        int64_t min_ttl;
        VarlinkCall *qc = request_take(q, &asked, &min_ttl, &resource);
        scope_set_done(&asked); /* it gets `result`, worked out above */
        if (result.n == 0 && !(linked->all_scopes)) {
                (void) refuse(m, qc, qid, qcred, &result, resource, grant_id, ERR_CONSENT_DENIED,
                              consent_error_params(qcred, qagent, qrid, NULL));
                /* A single-use grant is for that request only: it answered
                 * nothing, so nothing is left of it. */
                if (linked->kind == GRANT_ONCE)
                        grant_end(linked, "unused");
        } else
                (void) issue_under_grant(m, qc, c, linked, &result, resource, min_ttl);

        for (ConsentRequest *o = m->requests, *next; o; o = next) {
                next = o->next;
                Grant *cov = grant_find(m, grant_id);
                if (!cov)
                        break; /* spent */
                if (!grant_covers(cov, o->identity, o->agent, o->credential, &o->scopes, o->resource))
                        continue;
                watchers_notify(m, "approved", o, grant_id);
                Credential *oc_cred = manager_find_credential(m, o->credential);
                ScopeSet s;
                int64_t ttl;
                _cleanup_free_ char *ores = NULL;
                VarlinkCall *oc = request_take(o, &s, &ttl, &ores);
                next = m->requests; /* the list may have changed under the engine */
                if (oc_cred)
                        (void) issue_under_grant(m, oc, oc_cred, cov, &s, ores, ttl);
                else
                        scope_set_done(&s);
        }
        return varlink_call_reply(call, reply);
}

int consent_deny(Manager *m, VarlinkCall *call, const char *id) {
        ConsentRequest *q = request_find(m, id);
        if (!q)
                return manager_error(call, "io.tokend.manager.NoSuchRequest", "id", id);
        log_info("Request %s denied by the owner", q->id);
        request_fail(q, "denied", ERR_CONSENT_DENIED, NULL);
        return varlink_call_reply(call, NULL);
}

int consent_list_grants(Manager *m, VarlinkCall *call) {
        size_t n = 0;
        Grant **v = calloc(m->n_grants + 1, sizeof *v);
        if (!v)
                return -ENOMEM;
        for (Grant *g = m->grants; g; g = g->next)
                v[n++] = g;
        /* Soonest to expire first (insertion sort: at most GRANTS_MAX). */
        for (size_t i = 1; i < n; i++)
                for (size_t j = i; j > 0 && v[j - 1]->expires > v[j]->expires; j--) {
                        Grant *t = v[j];
                        v[j] = v[j - 1];
                        v[j - 1] = t;
                }
        json_object *arr = json_object_new_array();
        for (size_t i = 0; arr && i < n; i++)
                if (json_object_array_add(arr, grant_to_json(v[i])) < 0) {
                        json_object_put(arr);
                        arr = NULL;
                }
        free(v);
        json_object *p = arr ? json_object_new_object() : NULL;
        if (!p) {
                json_object_put(arr);
                return -ENOMEM;
        }
        json_object_object_add(p, "grants", arr);
        return varlink_call_reply(call, p);
}

int consent_revoke_grant(Manager *m, VarlinkCall *call, const char *id) {
        Grant *g = grant_find(m, id);
        if (!g)
                return manager_error(call, "io.tokend.manager.NoSuchGrant", "id", id);
        grant_end(g, "revoked");
        return varlink_call_reply(call, NULL);
}

void consent_forget_credential(Manager *m, const char *credential) {
        bool changed = false;
        for (Grant *g = m->grants, *next; g; g = next) {
                next = g->next;
                if (streq(g->credential, credential)) {
                        changed = changed || g->kind != GRANT_PROCESS;
                        grant_end_nosave(g, "credential-removed");
                }
        }
        if (changed)
                (void) grants_save(m);
        for (ConsentRequest *q = m->requests, *next; q; q = next) {
                next = q->next;
                if (streq(q->credential, credential)) {
                        request_fail(q, "gone", ERR_NO_CREDENTIAL, NULL);
                        next = m->requests;
                }
        }
}

void consent_flush(Manager *m) {
        while (m->requests)
                request_fail(m->requests, "timeout", ERR_CONSENT_REQUIRED, "tokend is stopping");
}

void consent_done(Manager *m) {
        consent_flush(m);
        while (m->grants) {
                Grant *g = m->grants;
                grant_free(g);
        }
        while (m->watchers) {
                ConsentWatcher *w = m->watchers;
                varlink_call_set_cancel(w->call, NULL, NULL);
                LIST_REMOVE(m->watchers, w);
                free(w);
        }
}
