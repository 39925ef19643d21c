/* SPDX-License-Identifier: MIT */
/* client/tokenctl.h: what the verbs of tokenctl share: exit codes, the
 * global options, calling tokend and explaining its errors. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <json-c/json.h>

#include "common/util.h"
#include "varlink.h"

/* Exit codes scripts can rely on (also in --help, tokenctl(1) and README). */
enum {
        EXIT_OK = 0,
        EXIT_FAILURE_ = 1,    /* anything not listed below */
        EXIT_USAGE = 2,       /* bad command line */
        EXIT_NO_DAEMON = 3,   /* cannot reach tokend */
        EXIT_NO_SUCH = 4,     /* no such credential, request or grant */
        EXIT_REAUTH = 5,      /* credential needs a new login */
        EXIT_UNAVAILABLE = 6, /* provider unavailable: retry later */
        EXIT_REFUSED = 7,     /* request cannot be satisfied (scope, lifetime, exists, bad input, consent) */
        EXIT_DENIED = 8,      /* permission denied, by tokend, the policy or the owner */
};

#define CALL_TIMEOUT_USEC (60 * USEC_PER_SEC)
/* A token request that may wait for the owner's consent: tokend ends it first
 * (--consent-timeout, at most a day). */
#define AGENT_TOKEN_TIMEOUT_USEC ((24 * 3600 + 60) * USEC_PER_SEC)

/* Caps on what the command line may pass on (tokend enforces the same). */
#define ID_MAX 64U              /* request and grant ids */
#define CREDENTIAL_NAME_MAX 64U /* credential names */
#define SCOPES_MAX 64U          /* scopes per call */
#define SCOPE_LEN_MAX 256U      /* bytes per scope */
#define RESOURCE_LEN_MAX 2048U  /* bytes of a resource indicator */

extern bool arg_json;

static inline const char *json_str(json_object *o, const char *key) {
        json_object *v;
        if (o && json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string))
                return json_object_get_string(v);
        return NULL;
}

static inline int64_t json_int(json_object *o, const char *key, int64_t def) {
        json_object *v;
        if (o && json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_int))
                return json_object_get_int64(v);
        return def;
}

/* The member `key` of o when it is an array, else NULL. */
static inline json_object *json_array(json_object *o, const char *key) {
        json_object *v;
        if (o && json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_array))
                return v;
        return NULL;
}

/* The socket path: --socket, $TOKEND_SOCKET, or $XDG_RUNTIME_DIR/tokend/socket.
 * -ENXIO when none is set, -ENOMEM. */
int tokenctl_socket_path(char **ret);

/* Connects to tokend. 0, or minus an exit code after saying why on stderr. */
int tokenctl_connect(VarlinkClient **ret);

/* Calls a method (taking ownership of params) and waits for its one reply.
 * Returns an exit code; on EXIT_OK *ret holds the reply parameters. Errors
 * are explained on stderr; `name` is what the user asked for, for messages. */
int tokenctl_call(const char *method, json_object *params, json_object **ret, const char *name);

/* The same on a connection of the caller's (tokenctl_connect()), which stays
 * open for more calls. */
int tokenctl_call_on(VarlinkClient *c, const char *method, json_object *params, json_object **ret,
                     const char *name);

/* Turns an error reply to `method` into a message that says what to do, and
 * returns the exit code for it. */
int tokenctl_report_error(const char *method, const char *error, json_object *p, const char *name);

/* Appends the scopes of one --scope argument ("a b" and "a,b" hold two) to
 * array. -E2BIG, after saying so, past SCOPES_MAX scopes or SCOPE_LEN_MAX
 * bytes in one; -ENOMEM. */
int tokenctl_add_scopes(json_object *array, char *arg);

/* Checks a request or grant id given on the command line: 1-ID_MAX
 * printable characters. Says what is wrong and returns false otherwise. */
bool tokenctl_id_valid(const char *verb, const char *id);

/* Prints a string array separated by blanks, each element escaped. */
void tokenctl_print_scopes(FILE *f, json_object *a);

/* A copy of s that is safe to show on a terminal: control characters
 * (C0, DEL, C1) and invalid UTF-8 become \xNN. Strings that processes choose
 * (their executable path, their unit) go through this before a human sees
 * them next to a consent decision. NULL when out of memory. */
char *tokenctl_escape(const char *s);

/* Prints prefix and s, escaped as by tokenctl_escape(); nothing when s is NULL. */
void tokenctl_print_escaped(FILE *f, const char *prefix, const char *s);

/* Prints a JSON object on stdout: pretty, or on one line. */
void tokenctl_print_json(json_object *o, bool pretty);
