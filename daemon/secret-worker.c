/* SPDX-License-Identifier: MIT */
/* daemon/secret-worker.c: see secret-worker.h.
 *
 * The thread runs its own GLib main context. Each libsecret call is started
 * with its asynchronous function and waited for by iterating that context
 * (what libsecret's _sync wrappers do internally), so that a timeout source
 * on the same context can cancel it: every request gets one GCancellable and
 * one deadline. While idle the thread sleeps in g_main_context_iteration(),
 * which also delivers the bus signals it watches: the service leaving or
 * joining the bus, and the default collection being locked or unlocked. */
#include <libsecret/secret.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <time.h>

#include "common/log.h"
#include "common/util.h"
#include "secret-worker.h"

#define SECRETS_BUS_NAME "org.freedesktop.secrets"
/* The largest secret accepted back from the service: what the keyring takes. */
#define SECRET_VALUE_MAX 32767U
/* How long secret_worker_wait() waits beyond a request's deadline. */
#define WAIT_GRACE_USEC (5 * USEC_PER_SEC)

static const SecretSchema tokend_schema = {
        .name = "io.tokend.Secret",
        .flags = SECRET_SCHEMA_NONE,
        .attributes = {
                { "instance", SECRET_SCHEMA_ATTRIBUTE_STRING },
                { "credential", SECRET_SCHEMA_ATTRIBUTE_STRING },
                { "kind", SECRET_SCHEMA_ATTRIBUTE_STRING },
                { "generation", SECRET_SCHEMA_ATTRIBUTE_STRING },
                { NULL, 0 },
        },
};

struct SecretWorker {
        /* Shared with the event loop's thread, under `lock`. */
        pthread_mutex_t lock;
        pthread_cond_t cond; /* broadcast whenever a request completes */
        SecretRequest *queue, **queue_tail;
        SecretRequest *done, **done_tail;
        bool busy;
        GCancellable *cancellable; /* of the request running */
        bool quit;

        /* Set before the thread starts, then read-only. */
        int efd;
        GMainContext *context;
        char *instance;
        uint64_t timeout_usec;
        pthread_t thread;
        bool started;

        /* The worker thread's own. */
        GDBusConnection *bus;
        guint name_watch;
        bool present; /* the service's name has an owner, as last seen by the watch */
        bool watch_seen;
        SecretService *service;
        SecretCollection *collection;
        gulong locked_handler;
        char *broken; /* after a timeout: why requests fail fast until a probe answers */
};

/* One request being run. */
typedef struct Job {
        SecretWorker *w;
        SecretRequest *req;
        GCancellable *cancellable;
        /* Our own reference: the name watch may drop the worker's while we wait. */
        SecretService *service;
        bool timed_out;
        uint64_t timeout_usec;
} Job;

SecretRequest *secret_request_new(SecretRequestType type, const char *credential, SecretKind kind) {
        SecretRequest *r = calloc(1, sizeof *r);
        if (!r)
                return NULL;
        r->type = type;
        r->kind = kind;
        if (credential && !(r->credential = strdup(credential))) {
                free(r);
                return NULL;
        }
        return r;
}

SecretRequest *secret_request_free(SecretRequest *r) {
        if (!r)
                return NULL;
        free(r->credential);
        erase_and_free(r->secret);
        free(r->reason);
        free(r);
        return NULL;
}

/* ---- the worker thread ---- */

static void job_status(Job *j, SecretStatus status, const char *fmt, ...) _printf_(3, 4);
static void job_status(Job *j, SecretStatus status, const char *fmt, ...) {
        j->req->status = status;
        free(j->req->reason);
        j->req->reason = NULL;
        if (fmt) {
                va_list ap;
                va_start(ap, fmt);
                if (vasprintf(&j->req->reason, fmt, ap) < 0)
                        j->req->reason = NULL;
                va_end(ap);
        }
}

/* Records a GError as the request's outcome and consumes it. */
static void job_error(Job *j, GError *e, const char *what) {
        if (j->timed_out)
                job_status(j, SECRET_STATUS_UNAVAILABLE, "the Secret Service did not answer within %.1f s",
                           (double) j->timeout_usec / USEC_PER_SEC);
        else if (g_error_matches(e, SECRET_ERROR, SECRET_ERROR_IS_LOCKED))
                job_status(j, SECRET_STATUS_LOCKED, "the default collection is locked");
        else {
                bool gone = e->domain == G_DBUS_ERROR || g_error_matches(e, G_IO_ERROR, G_IO_ERROR_CLOSED) ||
                            g_error_matches(e, G_IO_ERROR, G_IO_ERROR_TIMED_OUT) ||
                            g_error_matches(e, G_IO_ERROR, G_IO_ERROR_DBUS_ERROR);
                (void) g_dbus_error_strip_remote_error(e);
                job_status(j, gone ? SECRET_STATUS_UNAVAILABLE : SECRET_STATUS_FAILED, "%s: %s", what, e->message);
        }
        g_error_free(e);
}

static void on_result(GObject *source, GAsyncResult *result, gpointer userdata) {
        GAsyncResult **slot = userdata;
        (void) source;
        *slot = g_object_ref(result);
}

/* Runs the worker's context until the started operation has called back. The
 * deadline's cancellation makes every operation call back. */
static GAsyncResult *job_wait(Job *j, GAsyncResult **slot) {
        while (!*slot)
                g_main_context_iteration(j->w->context, TRUE);
        return *slot;
}

static gboolean on_deadline(gpointer userdata) {
        Job *j = userdata;
        j->timed_out = true;
        g_cancellable_cancel(j->cancellable);
        return G_SOURCE_REMOVE;
}

static void worker_post_locked(SecretWorker *w, SecretRequest *r);

static void worker_post_event(SecretWorker *w, SecretStatus status, const char *reason, bool appeared) {
        SecretRequest *r = secret_request_new(SECRET_REQUEST_EVENT, NULL, 0);
        if (!r)
                return; /* the periodic probe notices the change later */
        r->status = status;
        r->appeared = appeared;
        if (reason && !(r->reason = strdup(reason))) {
                secret_request_free(r);
                return;
        }
        pthread_mutex_lock(&w->lock);
        worker_post_locked(w, r);
        pthread_mutex_unlock(&w->lock);
}

static char *collection_locked_reason(SecretCollection *c) {
        const char *path = g_dbus_proxy_get_object_path(G_DBUS_PROXY(c));
        const char *base = path ? strrchr(path, '/') : NULL;
        char *s = NULL;
        if (asprintf(&s, "the %s collection is locked", base && base[1] ? base + 1 : "default") < 0)
                return NULL;
        return s;
}

static void worker_drop_service(SecretWorker *w) {
        if (w->collection) {
                g_signal_handler_disconnect(w->collection, w->locked_handler);
                g_clear_object(&w->collection);
        }
        g_clear_object(&w->service);
}

static void on_locked_changed(GObject *object, GParamSpec *pspec, gpointer userdata) {
        SecretWorker *w = userdata;
        (void) pspec;
        /* The cached property, not secret_collection_get_locked(): it is gone
         * (and that function complains) once the service left the bus. */
        GVariant *v = g_dbus_proxy_get_cached_property(G_DBUS_PROXY(object), "Locked");
        if (!v)
                return;
        bool locked = g_variant_get_boolean(v);
        g_variant_unref(v);
        _cleanup_free_ char *reason = locked ? collection_locked_reason(SECRET_COLLECTION(object)) : NULL;
        worker_post_event(w, locked ? SECRET_STATUS_LOCKED : SECRET_STATUS_OK, reason, false);
}

static void on_name_appeared(GDBusConnection *bus, const gchar *name, const gchar *owner, gpointer userdata) {
        SecretWorker *w = userdata;
        (void) bus;
        (void) name;
        (void) owner;
        bool first = !w->watch_seen;
        w->watch_seen = true;
        if (w->present)
                return;
        w->present = true;
        w->broken = mfree(w->broken);
        if (!first)
                worker_post_event(w, SECRET_STATUS_OK, NULL, true);
}

static void on_name_vanished(GDBusConnection *bus, const gchar *name, gpointer userdata) {
        SecretWorker *w = userdata;
        (void) bus;
        (void) name;
        bool first = !w->watch_seen;
        w->watch_seen = true;
        worker_drop_service(w);
        if (!w->present && !first)
                return;
        w->present = false;
        if (!first)
                worker_post_event(w, SECRET_STATUS_UNAVAILABLE, "the Secret Service left the session bus", false);
}

bool secret_service_bus_configured(void) {
        if (!isempty(getenv("DBUS_SESSION_BUS_ADDRESS")))
                return true;
        /* GLib's fallback; without it GLib would try to autolaunch a bus. */
        const char *rt = getenv("XDG_RUNTIME_DIR");
        _cleanup_free_ char *path = NULL;
        if (!rt || rt[0] != '/' || asprintf(&path, "%s/bus", rt) < 0)
                return false;
        return access(path, F_OK) >= 0;
}

static int job_connect_bus(Job *j) {
        SecretWorker *w = j->w;
        GAsyncResult *res = NULL;
        GError *e = NULL;

        if (w->bus && g_dbus_connection_is_closed(w->bus)) {
                worker_drop_service(w);
                g_bus_unwatch_name(w->name_watch);
                w->name_watch = 0;
                g_clear_object(&w->bus);
        }
        if (w->bus)
                return 0;
        if (!secret_service_bus_configured()) {
                job_status(j, SECRET_STATUS_UNAVAILABLE,
                           "no D-Bus session bus ($DBUS_SESSION_BUS_ADDRESS is not set)");
                return -ENOTCONN;
        }
        g_bus_get(G_BUS_TYPE_SESSION, j->cancellable, on_result, &res);
        w->bus = g_bus_get_finish(job_wait(j, &res), &e);
        g_object_unref(res);
        if (!w->bus) {
                job_error(j, e, "cannot connect to the session bus");
                return -ENOTCONN;
        }
        /* GLib's default for bus connections is to raise SIGTERM when the bus goes away. */
        g_dbus_connection_set_exit_on_close(w->bus, FALSE);
        w->watch_seen = false;
        w->present = false;
        w->name_watch = g_bus_watch_name_on_connection(w->bus, SECRETS_BUS_NAME, G_BUS_NAME_WATCHER_FLAGS_NONE,
                                                       on_name_appeared, on_name_vanished, w, NULL);
        return 0;
}

static int job_name_has_owner(Job *j) {
        GAsyncResult *res = NULL;
        GError *e = NULL;
        gboolean has = FALSE;

        g_dbus_connection_call(j->w->bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                               "NameHasOwner", g_variant_new("(s)", SECRETS_BUS_NAME), G_VARIANT_TYPE("(b)"),
                               G_DBUS_CALL_FLAGS_NONE, -1, j->cancellable, on_result, &res);
        GVariant *v = g_dbus_connection_call_finish(j->w->bus, job_wait(j, &res), &e);
        g_object_unref(res);
        if (!v) {
                job_error(j, e, "cannot ask the bus");
                return -EIO;
        }
        g_variant_get(v, "(b)", &has);
        g_variant_unref(v);
        if (!has) {
                job_status(j, SECRET_STATUS_UNAVAILABLE, "no Secret Service on the session bus");
                return -ENOENT;
        }
        return 0;
}

static int job_open_service(Job *j) {
        SecretWorker *w = j->w;
        GAsyncResult *res = NULL;
        GError *e = NULL;

        if (!w->service) {
                secret_service_open(SECRET_TYPE_SERVICE, NULL, SECRET_SERVICE_OPEN_SESSION, j->cancellable, on_result,
                                    &res);
                SecretService *service = secret_service_open_finish(job_wait(j, &res), &e);
                g_object_unref(res);
                if (!service) {
                        job_error(j, e, "cannot open the Secret Service");
                        return -EIO;
                }
                g_clear_object(&w->service);
                w->service = service;
        }
        j->service = g_object_ref(w->service);
        return 0;
}

/* Fetches the default collection afresh (its Locked property with it) and
 * watches it. Returns 1 when it is locked (status set), 0 when unlocked. */
static int job_default_collection(Job *j) {
        SecretWorker *w = j->w;
        GAsyncResult *res = NULL;
        GError *e = NULL;

        secret_collection_for_alias(j->service, SECRET_COLLECTION_DEFAULT, SECRET_COLLECTION_NONE, j->cancellable,
                                    on_result, &res);
        SecretCollection *c = secret_collection_for_alias_finish(job_wait(j, &res), &e);
        g_object_unref(res);
        if (!c) {
                if (e)
                        job_error(j, e, "cannot read the default collection");
                else
                        job_status(j, SECRET_STATUS_UNAVAILABLE, "the Secret Service has no default collection");
                return -EIO;
        }
        if (w->collection != c) {
                if (w->collection) {
                        g_signal_handler_disconnect(w->collection, w->locked_handler);
                        g_object_unref(w->collection);
                }
                w->collection = g_object_ref(c);
                w->locked_handler = g_signal_connect(c, "notify::locked", G_CALLBACK(on_locked_changed), w);
        }
        bool locked = secret_collection_get_locked(c);
        g_object_unref(c);
        if (locked) {
                _cleanup_free_ char *reason = collection_locked_reason(w->collection);
                job_status(j, SECRET_STATUS_LOCKED, "%s", reason ?: "the default collection is locked");
                return 1;
        }
        return 0;
}

static uint64_t item_generation(SecretItem *item) {
        GHashTable *a = secret_item_get_attributes(item);
        const char *g = a ? g_hash_table_lookup(a, "generation") : NULL;
        uint64_t v = 0;
        if (g && g[0] >= '1' && g[0] <= '9') {
                char *end;
                errno = 0;
                unsigned long long x = strtoull(g, &end, 10);
                if (errno == 0 && *end == 0)
                        v = x;
        }
        if (a)
                g_hash_table_unref(a);
        return v;
}

/* The items of this request's credential and kind (a list of SecretItem). */
static int job_search(Job *j, bool load_secrets, GList **ret) {
        SecretWorker *w = j->w;
        GAsyncResult *res = NULL;
        GError *e = NULL;

        GHashTable *attrs = secret_attributes_build(&tokend_schema, "instance", w->instance, "credential",
                                                    j->req->credential, "kind", secret_kind_to_string(j->req->kind),
                                                    NULL);
        if (!attrs) {
                job_status(j, SECRET_STATUS_FAILED, "cannot build attributes");
                return -EINVAL;
        }
        secret_service_search(j->service, &tokend_schema, attrs,
                              SECRET_SEARCH_ALL | (load_secrets ? SECRET_SEARCH_LOAD_SECRETS : 0), j->cancellable,
                              on_result, &res);
        GList *items = secret_service_search_finish(j->service, job_wait(j, &res), &e);
        g_object_unref(res);
        g_hash_table_unref(attrs);
        if (e) {
                job_error(j, e, "search failed");
                return -EIO;
        }
        *ret = items;
        return 0;
}

static int job_delete_item(Job *j, SecretItem *item) {
        GAsyncResult *res = NULL;
        GError *e = NULL;
        secret_item_delete(item, j->cancellable, on_result, &res);
        gboolean ok = secret_item_delete_finish(item, job_wait(j, &res), &e);
        g_object_unref(res);
        if (!ok) {
                job_error(j, e, "cannot delete an item");
                return -EIO;
        }
        return 0;
}

/* Deletes the items of generation below `below` (all: UINT64_MAX). */
static int job_delete_older(Job *j, uint64_t below) {
        GList *items = NULL;
        int r = job_search(j, false, &items);
        if (r < 0)
                return r;
        for (GList *i = items; i && r >= 0; i = i->next)
                if (item_generation(i->data) < below)
                        r = job_delete_item(j, i->data);
        g_list_free_full(items, g_object_unref);
        return r;
}

static int job_write(Job *j) {
        SecretWorker *w = j->w;
        SecretRequest *req = j->req;
        GAsyncResult *res = NULL;
        GError *e = NULL;
        char gen[24], label[128];

        snprintf(gen, sizeof gen, "%" PRIu64, req->generation);
        snprintf(label, sizeof label, "tokend: %s %s", req->credential,
                 req->kind == SECRET_REFRESH_TOKEN ? "refresh token" : "client secret");
        GHashTable *attrs = secret_attributes_build(&tokend_schema, "instance", w->instance, "credential",
                                                    req->credential, "kind", secret_kind_to_string(req->kind),
                                                    "generation", gen, NULL);
        /* libsecret copies the value into its own wiped memory. */
        SecretValue *value = secret_value_new(req->secret, -1, "text/plain");
        if (!attrs || !value) {
                if (attrs)
                        g_hash_table_unref(attrs);
                if (value)
                        secret_value_unref(value);
                job_status(j, SECRET_STATUS_FAILED, "cannot build the item");
                return -ENOMEM;
        }
        /* Every generation is a new item (the attributes differ); older ones
         * are deleted only once the new one is stored, so a crash in between
         * leaves two items and a lookup takes the newer. */
        secret_service_store(j->service, &tokend_schema, attrs, SECRET_COLLECTION_DEFAULT, label, value,
                             j->cancellable, on_result, &res);
        gboolean ok = secret_service_store_finish(j->service, job_wait(j, &res), &e);
        g_object_unref(res);
        g_hash_table_unref(attrs);
        secret_value_unref(value);
        if (!ok) {
                job_error(j, e, "cannot store the item");
                return -EIO;
        }
        return job_delete_older(j, req->generation);
}

static int job_lookup(Job *j, bool locked) {
        SecretRequest *req = j->req;
        GList *items = NULL;
        SecretItem *best = NULL;
        uint64_t best_gen = 0;

        int r = job_search(j, !locked, &items);
        if (r < 0)
                return r;
        for (GList *i = items; i; i = i->next) {
                uint64_t g = item_generation(i->data);
                if (!best || g > best_gen) {
                        best = i->data;
                        best_gen = g;
                }
        }
        if (best) {
                req->found = true;
                req->found_generation = best_gen;
        }
        if (best && !locked) {
                SecretValue *v = secret_item_get_secret(best);
                gsize len = 0;
                const gchar *data = v ? secret_value_get(v, &len) : NULL;
                if (!data || len > SECRET_VALUE_MAX || memchr(data, 0, len)) {
                        job_status(j, SECRET_STATUS_FAILED, "the item's secret is %s",
                                   data ? "malformed" : "unreadable");
                        r = -EBADMSG;
                } else if (!(req->secret = malloc(len + 1))) {
                        job_status(j, SECRET_STATUS_FAILED, "out of memory");
                        r = -ENOMEM;
                } else {
                        memcpy(req->secret, data, len);
                        req->secret[len] = 0;
                }
                if (v)
                        secret_value_unref(v);
        }
        g_list_free_full(items, g_object_unref);
        return r;
}

/* One attempt at the request. */
static void job_run_once(Job *j) {
        SecretRequest *req = j->req;

        job_status(j, SECRET_STATUS_OK, NULL);
        if (job_connect_bus(j) < 0)
                return;
        if (req->no_activate && !j->w->service && job_name_has_owner(j) < 0)
                return;
        if (job_open_service(j) < 0)
                return;
        int locked = job_default_collection(j);
        if (locked < 0)
                return;

        switch (req->type) {
        case SECRET_REQUEST_PROBE:
                break;
        case SECRET_REQUEST_WRITE:
                if (!locked)
                        (void) job_write(j);
                break;
        case SECRET_REQUEST_DELETE:
                if (!locked)
                        (void) job_delete_older(j, UINT64_MAX);
                break;
        case SECRET_REQUEST_LOOKUP:
                /* Locked: find out whether an item exists and its generation
                 * (attributes stay visible); the status stays "locked". */
                (void) job_lookup(j, locked);
                break;
        case SECRET_REQUEST_EVENT:
        case _SECRET_REQUEST_TYPE_MAX:
                job_status(j, SECRET_STATUS_FAILED, "bad request");
                break;
        }
}

static void worker_run(SecretWorker *w, SecretRequest *req, GCancellable *cancellable) {
        Job j = {
                .w = w,
                .req = req,
                .cancellable = cancellable,
                .timeout_usec = req->timeout_usec ?: w->timeout_usec,
        };

        if (w->broken && req->type != SECRET_REQUEST_PROBE) {
                job_status(&j, SECRET_STATUS_UNAVAILABLE, "%s", w->broken);
                return;
        }

        GSource *deadline = g_timeout_source_new((guint) ((j.timeout_usec + 999) / 1000));
        g_source_set_callback(deadline, on_deadline, &j, NULL);
        g_source_attach(deadline, w->context);

        for (unsigned attempt = 0;; attempt++) {
                bool cached = w->service != NULL;
                if (req->type == SECRET_REQUEST_LOOKUP)
                        req->secret = erase_and_free(req->secret);
                req->found = false;
                req->found_generation = 0;
                job_run_once(&j);
                g_clear_object(&j.service);
                if (req->status == SECRET_STATUS_OK || req->status == SECRET_STATUS_LOCKED)
                        break;
                /* A failure that may come from a stale connection (the service
                 * restarted and forgot our session): once more with a new one. */
                worker_drop_service(w);
                if (j.timed_out || !cached || attempt > 0)
                        break;
        }

        g_source_destroy(deadline);
        g_source_unref(deadline);

        bool answered = req->status == SECRET_STATUS_OK || req->status == SECRET_STATUS_LOCKED;
        if (j.timed_out && !answered) {
                free(w->broken);
                w->broken = req->reason ? strdup(req->reason) : NULL;
        } else if (req->type == SECRET_REQUEST_PROBE && req->status != SECRET_STATUS_UNAVAILABLE)
                w->broken = mfree(w->broken);
}

/* Called with the lock held. */
static void worker_post_locked(SecretWorker *w, SecretRequest *r) {
        r->next = NULL;
        *w->done_tail = r;
        w->done_tail = &r->next;
        uint64_t one = 1;
        (void) !write(w->efd, &one, sizeof one);
}

static void worker_complete(SecretWorker *w, SecretRequest *r) {
        pthread_mutex_lock(&w->lock);
        w->busy = false;
        g_clear_object(&w->cancellable);
        if (r->sync) {
                r->done = true;
                if (r->abandoned)
                        secret_request_free(r);
        } else
                worker_post_locked(w, r);
        pthread_cond_broadcast(&w->cond);
        pthread_mutex_unlock(&w->lock);
}

static void *worker_main(void *userdata) {
        SecretWorker *w = userdata;

        g_main_context_push_thread_default(w->context);
        for (;;) {
                pthread_mutex_lock(&w->lock);
                if (w->quit) {
                        pthread_mutex_unlock(&w->lock);
                        break;
                }
                SecretRequest *r = w->queue;
                GCancellable *cancellable = NULL;
                if (r) {
                        w->queue = r->next;
                        if (!w->queue)
                                w->queue_tail = &w->queue;
                        r->next = NULL;
                        w->busy = true;
                        cancellable = w->cancellable = g_cancellable_new();
                }
                pthread_mutex_unlock(&w->lock);

                if (!r) {
                        /* Sleeps until a request is submitted (g_main_context_wakeup) or a
                         * watched bus signal arrives. */
                        g_main_context_iteration(w->context, TRUE);
                        continue;
                }
                worker_run(w, r, cancellable);
                worker_complete(w, r);
        }

        worker_drop_service(w);
        if (w->name_watch)
                g_bus_unwatch_name(w->name_watch);
        g_clear_object(&w->bus);
        while (g_main_context_iteration(w->context, FALSE))
                ;
        free(w->broken);
        g_main_context_pop_thread_default(w->context);
        return NULL;
}

/* ---- the event loop's side ---- */

/* Starts the thread with every signal blocked: signals belong to the event
 * loop (signalfd), and threads GLib starts from this one inherit the mask. */
static int thread_start_blocked(pthread_t *thread, void *(*fn)(void *), void *arg) {
        sigset_t all, old;
        sigfillset(&all);
        int r = pthread_sigmask(SIG_SETMASK, &all, &old);
        if (r != 0)
                return -r;
        r = pthread_create(thread, NULL, fn, arg);
        (void) pthread_sigmask(SIG_SETMASK, &old, NULL);
        return -r;
}

int secret_worker_new(const char *instance, uint64_t timeout_usec, SecretWorker **ret) {
        SecretWorker *w = calloc(1, sizeof *w);
        pthread_condattr_t ca;
        int r;

        if (!w)
                return -ENOMEM;
        w->efd = -1;
        pthread_mutex_init(&w->lock, NULL);
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&w->cond, &ca);
        pthread_condattr_destroy(&ca);
        w->queue_tail = &w->queue;
        w->done_tail = &w->done;
        w->timeout_usec = timeout_usec;
        w->context = g_main_context_new();
        w->instance = strdup(instance);
        w->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (!w->instance || w->efd < 0) {
                r = w->efd < 0 ? -errno : -ENOMEM;
                secret_worker_free(w, 0);
                return r;
        }
        r = thread_start_blocked(&w->thread, worker_main, w);
        if (r < 0) {
                secret_worker_free(w, 0);
                return r;
        }
        w->started = true;
        *ret = w;
        return 0;
}

static void deadline_after(uint64_t usec, struct timespec *ts) {
        clock_gettime(CLOCK_MONOTONIC, ts);
        uint64_t ns = (uint64_t) ts->tv_nsec + (usec % USEC_PER_SEC) * 1000;
        ts->tv_sec += (time_t) (usec / USEC_PER_SEC + ns / 1000000000);
        ts->tv_nsec = (long) (ns % 1000000000);
}

SecretWorker *secret_worker_free(SecretWorker *w, uint64_t drain_usec) {
        if (!w)
                return NULL;
        if (w->started) {
                struct timespec until;
                deadline_after(drain_usec, &until);
                pthread_mutex_lock(&w->lock);
                while ((w->queue || w->busy) &&
                       pthread_cond_timedwait(&w->cond, &w->lock, &until) == 0)
                        ;
                w->quit = true;
                if (w->cancellable)
                        g_cancellable_cancel(w->cancellable);
                pthread_mutex_unlock(&w->lock);
                g_main_context_wakeup(w->context);
                pthread_join(w->thread, NULL);
        }
        while (w->queue) {
                SecretRequest *r = w->queue;
                w->queue = r->next;
                /* A sync waiter cannot be left behind: sync requests are only
                 * waited for by the thread that frees the worker. */
                secret_request_free(r);
        }
        while (w->done) {
                SecretRequest *r = w->done;
                w->done = r->next;
                secret_request_free(r);
        }
        if (w->context)
                g_main_context_unref(w->context);
        safe_close(w->efd);
        pthread_cond_destroy(&w->cond);
        pthread_mutex_destroy(&w->lock);
        free(w->instance);
        free(w);
        return NULL;
}

int secret_worker_fd(SecretWorker *w) {
        return w->efd;
}

void secret_worker_submit(SecretWorker *w, SecretRequest *r) {
        pthread_mutex_lock(&w->lock);
        r->next = NULL;
        r->done = false;
        *w->queue_tail = r;
        w->queue_tail = &r->next;
        pthread_mutex_unlock(&w->lock);
        /* Wakes the thread out of g_main_context_iteration(); a wakeup sent
         * before it sleeps is not lost. */
        g_main_context_wakeup(w->context);
}

SecretRequest *secret_worker_pop(SecretWorker *w) {
        pthread_mutex_lock(&w->lock);
        SecretRequest *r = w->done;
        if (r) {
                w->done = r->next;
                if (!w->done)
                        w->done_tail = &w->done;
                r->next = NULL;
        }
        if (!w->done) {
                uint64_t v;
                (void) !read(w->efd, &v, sizeof v);
        }
        pthread_mutex_unlock(&w->lock);
        return r;
}

int secret_worker_wait(SecretWorker *w, SecretRequest *r) {
        struct timespec until;
        int r_wait = 0;

        deadline_after((r->timeout_usec ?: w->timeout_usec) + WAIT_GRACE_USEC, &until);
        pthread_mutex_lock(&w->lock);
        while (!r->done && r_wait == 0)
                r_wait = pthread_cond_timedwait(&w->cond, &w->lock, &until);
        if (!r->done) {
                r->abandoned = true;
                pthread_mutex_unlock(&w->lock);
                return -ETIMEDOUT;
        }
        pthread_mutex_unlock(&w->lock);
        return 0;
}
