/* SPDX-License-Identifier: MIT */
/* daemon/audit.h: the audit trail. A record per decision (a token issued or
 * refused, a refresh, a rotation, a login, ...) with who asked (the agent,
 * from the kernel), on whose behalf (the owner) and a fingerprint of the token
 * handed out (never the token). Records go to the journal with structured
 * fields; when no journal is reachable, as JSON lines to an append-only file
 * in the state directory.
 *
 * One exception, for cache hits in a loop: the same token issued again to the
 * same connection (same credential, resource and grant) is counted, not
 * recorded at once. The count goes out as one `issue` record with
 * TOKEND_COUNT=N (the issues since the last record of it; absent means 1) and
 * TOKEND_SINCE (when the first of them was, realtime usec): at most
 * --audit-coalesce (default AUDIT_COALESCE_USEC) after the first of them,
 * before any other record about that connection, before a different token is
 * recorded to it, and when it closes or the daemon stops. Summing TOKEND_COUNT
 * (1 where absent) over the issue records counts every issue. */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "varlink.h"

typedef struct Manager Manager;
typedef struct PeerIdentity PeerIdentity;
typedef struct ScopeSet ScopeSet;
typedef struct Audit Audit;

/* The MESSAGE_ID of every tokend audit record; TOKEND_EVENT tells them apart. */
#define AUDIT_MESSAGE_ID "dd14e6fa7b894fa2b29fa19eca600e32"
#define AUDIT_FILE "audit.log"
/* TOKEND_AUDIT_JOURNAL=0 in the daemon's environment: never use the journal,
 * write the fallback file only (tests, and systems whose journal is not trusted). */
#define AUDIT_JOURNAL_ENV "TOKEND_AUDIT_JOURNAL"
/* The longest a counted repeat waits for its record. */
#define AUDIT_COALESCE_USEC UINT64_C(1000000)

typedef enum AuditEvent {
        AUDIT_ISSUE,
        AUDIT_DENY,
        AUDIT_REFRESH,
        AUDIT_ROTATE,
        AUDIT_REVOKE,
        AUDIT_GRANT,
        AUDIT_APPROVE,
        AUDIT_LOGIN,
        AUDIT_REAUTH_NEEDED,
        AUDIT_ADD,
        AUDIT_REMOVE,
        _AUDIT_EVENT_MAX,
} AuditEvent;

typedef struct AuditRecord {
        AuditEvent event;
        const char *credential;
        const ScopeSet *scopes;    /* either this ... */
        const char *scope_string;  /* ... or this (space separated); NULL: none */
        const char *resource;
        const char *grant;         /* grant id; NULL until grants exist */
        const PeerIdentity *agent; /* NULL for the daemon's own doings (a proactive refresh) */
        const char *agent_name;    /* the policy's name for it; NULL: looked up from agent */
        const char *token;         /* access token: only its fingerprint is recorded */
        const char *token_fp;      /* its fingerprint (audit_fingerprint()), when the caller keeps it: not computed again */
        const char *reason;        /* the named error of a denial, or why */
        const char *message;       /* for humans; NULL: one is made up from the rest */
        uint64_t count;            /* issues this record stands for; 0: one, and TOKEND_COUNT is left out */
        uint64_t since;            /* with count: realtime usec of the first of them */
} AuditRecord;

const char *audit_event_to_string(AuditEvent e);

/* Decides where records go (journal, or the file STATE_DIR/audit.log) and
 * looks up the owner's user name. */
int audit_new(uid_t owner_uid, const char *state_dir, Audit **ret);
Audit *audit_free(Audit *a);

/* Writes one record (or counts a repeated issue, see above). Never fails the
 * caller: a record that cannot be written anywhere is logged as an error. */
void audit_log(Manager *m, const AuditRecord *r);

/* The connection of agent is closing: writes what was counted for it and
 * forgets it. Call before the identity is freed. */
void audit_agent_gone(Manager *m, const PeerIdentity *agent);

/* The identity stored on the connection of a call at connect (NULL: none). */
const PeerIdentity *audit_call_agent(VarlinkCall *call);

/* First 12 hex digits of SHA-256(token); ret must hold 13 bytes. */
int audit_fingerprint(const char *token, char ret[static 13]);
