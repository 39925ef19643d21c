/* SPDX-License-Identifier: MIT */
/* daemon/secret-worker.h: the one thread that talks to the Secret Service.
 * libsecret blocks and runs its own GLib main contexts; this thread keeps all
 * of that away from the sd-event loop. Requests go in through a queue, come
 * back through an eventfd the event loop watches, and every request has a
 * deadline: a hanging Secret Service makes requests fail with
 * SECRET_STATUS_UNAVAILABLE, never hangs the daemon. The worker never logs
 * secrets, and does not log above debug at all: the store decides. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "store.h"

typedef struct SecretWorker SecretWorker;
typedef struct SecretRequest SecretRequest;

typedef enum SecretRequestType {
        SECRET_REQUEST_PROBE,  /* is the service there, is the default collection unlocked? */
        SECRET_REQUEST_WRITE,  /* store `secret` as generation `generation`, then drop older generations */
        SECRET_REQUEST_DELETE, /* delete every item of the credential and kind */
        SECRET_REQUEST_LOOKUP, /* the item of the highest generation */
        SECRET_REQUEST_EVENT,  /* made by the worker: the service left, came back, or was (un)locked */
        _SECRET_REQUEST_TYPE_MAX,
} SecretRequestType;

typedef enum SecretStatus {
        SECRET_STATUS_OK,
        SECRET_STATUS_LOCKED,      /* the default collection is locked */
        SECRET_STATUS_UNAVAILABLE, /* not on the bus, no default collection, or no answer in time */
        SECRET_STATUS_FAILED,      /* the service answered with an error */
        _SECRET_STATUS_MAX,
} SecretStatus;

struct SecretRequest {
        SecretRequest *next;
        SecretRequestType type;

        /* In. */
        char *credential;
        SecretKind kind;
        uint64_t generation; /* WRITE */
        char *secret;        /* WRITE: the value (erase_and_free); LOOKUP: the value found */
        bool no_activate;    /* PROBE: do not let the bus start the service */
        uint64_t timeout_usec; /* 0: the worker's */

        /* Out. */
        SecretStatus status;
        char *reason;              /* for humans, when status is not OK */
        bool appeared;             /* EVENT: the service (re)appeared on the bus; probe it */
        bool found;                /* LOOKUP: an item exists (its secret is set only when unlocked) */
        uint64_t found_generation; /* LOOKUP: its generation (visible also when locked) */

        /* The caller's, untouched by the worker. */
        bool sync;
        bool durable;
        StoreLoadCallback callback;
        void *userdata;

        /* Private. */
        bool done, abandoned;
};

/* Whether a session bus can be reached without GLib autolaunching one. */
bool secret_service_bus_configured(void);

SecretRequest *secret_request_new(SecretRequestType type, const char *credential, SecretKind kind);
SecretRequest *secret_request_free(SecretRequest *r); /* wipes the secret */

/* Starts the thread. `timeout_usec` bounds each request. */
int secret_worker_new(const char *instance, uint64_t timeout_usec, SecretWorker **ret);
/* Lets queued requests finish for at most `drain_usec`, then cancels the one
 * running, stops the thread and frees what is left without completing it. */
SecretWorker *secret_worker_free(SecretWorker *w, uint64_t drain_usec);

/* Readable when completed requests wait in secret_worker_pop(). */
int secret_worker_fd(SecretWorker *w);
/* Hands `r` to the worker; it comes back through secret_worker_pop(), or,
 * with r->sync, through secret_worker_wait(). */
void secret_worker_submit(SecretWorker *w, SecretRequest *r);
/* The next completed request (the caller owns it), or NULL. Clears the fd. */
SecretRequest *secret_worker_pop(SecretWorker *w);
/* Blocks until the sync request `r` has completed: 0, the caller owns it
 * again. -ETIMEDOUT if it takes far longer than its deadline: the worker
 * then frees it. */
int secret_worker_wait(SecretWorker *w, SecretRequest *r);
