/* SPDX-License-Identifier: MIT */
/* client/tokenctl-token.h: getting one access token from tokend, for
 * "tokenctl token" and for the helpers that hand a token to another program
 * ("tokenctl exec", "tokenctl credential-helper"). Every call to tokend for a
 * token goes through tokenctl_fetch_token(), and only through it. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <json-c/json.h>

/* The --min-ttl of "exec" and "credential-helper" when none is given: a token
 * handed to another program is good for at least this many seconds. */
#define TOKEN_HELPER_MIN_TTL_DEFAULT 300
/* The longest access token the helpers pass on, in bytes. */
#define TOKEN_LEN_MAX (64U * 1024U)

/* Gets an access token of the credential `name` from tokend. The owner (whom
 * tokend lets use its manager interface, as io.tokend.agent.WhoAmI tells)
 * gets it through io.tokend.manager.GetToken, without policy or consent;
 * anyone else, e.g. an agent running tokenctl in its own unit, through
 * io.tokend.agent.GetToken, which may wait for the owner's consent (up to
 * AGENT_TOKEN_TIMEOUT_USEC; tokend ends the wait first). Both calls go on one
 * connection, so tokend identifies the caller once.
 *
 * scopes: an array of strings, borrowed; NULL or empty leaves them to tokend.
 * resource: an RFC 8707 resource indicator, or NULL. min_ttl: seconds the
 * token must stay valid at least, or negative to leave it to tokend.
 *
 * Returns one of tokenctl's exit codes. On EXIT_OK, *ret_reply holds the reply
 * parameters (token, token_type, expires_at, scopes); they hold a secret:
 * release them with json_object_put_erase(). Otherwise *ret_reply is left
 * alone and stderr says what went wrong, never with the token. */
int tokenctl_fetch_token(const char *name, json_object *scopes, const char *resource, int64_t min_ttl,
                         json_object **ret_reply);

/* The token and expiry of a reply of tokenctl_fetch_token(), checked before
 * they are handed to another program: 1 to TOKEN_LEN_MAX visible ASCII
 * characters (nothing that could not travel in an environment variable or in
 * git's line protocol: no blank, control character or newline), and an
 * expires_at in the future. The pointer is borrowed from reply. EXIT_OK, or
 * EXIT_FAILURE_ after saying what is wrong (never showing the token). */
int tokenctl_token_usable(json_object *reply, const char **ret_token, int64_t *ret_expires_at);

/* The options of the token request that "token", "exec" and
 * "credential-helper" share: put TOKEN_REQUEST_OPTIONS in the verb's option
 * table (its own option values stay below 0x200), and hand each option
 * getopt_long() returns to tokenctl_token_request_option(). */
enum {
        TOKEN_ARG_SCOPE = 0x200,
        TOKEN_ARG_RESOURCE,
        TOKEN_ARG_MIN_TTL,
};
#define TOKEN_REQUEST_OPTIONS                                              \
        { "scope", required_argument, NULL, TOKEN_ARG_SCOPE },             \
        { "resource", required_argument, NULL, TOKEN_ARG_RESOURCE },       \
        { "min-ttl", required_argument, NULL, TOKEN_ARG_MIN_TTL }

typedef struct TokenRequestOptions {
        json_object *scopes;  /* an array the verb owns; --scope appends */
        const char *resource; /* NULL: none */
        int64_t min_ttl;      /* the verb's default until --min-ttl */
} TokenRequestOptions;

/* 1: c was one of TOKEN_REQUEST_OPTIONS, taken into o; 0: it was not; -1:
 * its argument is wrong, which was said ("tokenctl VERB: ..."): exit with
 * EXIT_USAGE. */
int tokenctl_token_request_option(const char *verb, int c, char *arg, TokenRequestOptions *o);

/* Checks of the options "token", "exec" and "credential-helper" share. Each
 * says what is wrong, as "tokenctl VERB: ...", and returns false/-EINVAL. */
bool tokenctl_credential_name_valid(const char *verb, const char *name);
bool tokenctl_resource_valid(const char *verb, const char *resource);
int tokenctl_parse_min_ttl(const char *verb, const char *arg, int64_t *ret);

/* "tokenctl token NAME [--scope S]... [--resource URI] [--min-ttl SECONDS]":
 * prints the token (the reply with --json). argv[0] is the verb. */
int tokenctl_token(int argc, char *argv[]);
