/* SPDX-License-Identifier: MIT */
/* daemon/audit.h: the audit trail. One record per decision (a token issued or
 * refused, a refresh, a rotation, a login, ...) with who asked (the agent,
 * from the kernel), on whose behalf (the owner) and a fingerprint of the token
 * handed out (never the token). Records go to the journal with structured
 * fields; when no journal is reachable, as JSON lines to an append-only file
 * in the state directory. */
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
} AuditRecord;

const char *audit_event_to_string(AuditEvent e);

/* Decides where records go (journal, or the file STATE_DIR/audit.log) and
 * looks up the owner's user name. */
int audit_new(uid_t owner_uid, const char *state_dir, Audit **ret);
Audit *audit_free(Audit *a);

/* Writes one record. Never fails the caller: a record that cannot be written
 * anywhere is logged as an error. */
void audit_log(Manager *m, const AuditRecord *r);

/* The identity stored on the connection of a call at connect (NULL: none). */
const PeerIdentity *audit_call_agent(VarlinkCall *call);

/* First 12 hex digits of SHA-256(token); ret must hold 13 bytes. */
int audit_fingerprint(const char *token, char ret[static 13]);
