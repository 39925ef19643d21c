/* SPDX-License-Identifier: MIT */
/* daemon/oauth.h: OAuth 2.0 messages: refresh requests, token and error
 * responses (RFC 6749), discovery documents (OIDC Discovery, RFC 8414), and
 * the URL rules tokend applies. Pure functions: no I/O, fuzzable. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define OAUTH_ACCESS_TOKEN_MAX (16U * 1024U)
#define OAUTH_REFRESH_TOKEN_MAX (8U * 1024U)
#define OAUTH_URL_MAX 2048U
#define OAUTH_SCOPE_MAX 4096U
/* Assumed lifetime when a token response has no expires_in. */
#define OAUTH_DEFAULT_LIFETIME_SEC 600

typedef enum OAuthAuthMethod {
        OAUTH_AUTH_NONE,
        OAUTH_AUTH_CLIENT_SECRET_BASIC,
        OAUTH_AUTH_CLIENT_SECRET_POST,
        _OAUTH_AUTH_MAX,
        _OAUTH_AUTH_INVALID = -1,
} OAuthAuthMethod;

const char *oauth_auth_method_to_string(OAuthAuthMethod m);
OAuthAuthMethod oauth_auth_method_from_string(const char *s);

typedef struct TokenResponse {
        char *access_token;  /* secret */
        char *refresh_token; /* secret; NULL when the provider did not rotate */
        char *token_type;
        char *scope;         /* NULL when absent: same as requested */
        int64_t expires_in;  /* seconds; OAUTH_DEFAULT_LIFETIME_SEC when absent */
        uint64_t issued;     /* CLOCK_BOOTTIME usec when it was asked for (its life counts from then); 0: unknown */
} TokenResponse;

void token_response_done(TokenResponse *t); /* wipes and frees the fields */

typedef enum OAuthOutcome {
        OAUTH_OK,
        OAUTH_INVALID_GRANT,   /* refresh token revoked or expired: re-authenticate */
        OAUTH_INVALID_CLIENT,  /* client credentials wrong: re-configure */
        OAUTH_INVALID_SCOPE,   /* scope wider than the grant */
        OAUTH_REFUSED,         /* other 4xx error: permanent for this request */
        OAUTH_TRANSIENT,       /* network, 5xx, 429, garbage: retry with backoff */
} OAuthOutcome;

typedef struct OAuthError {
        char code[64];         /* the "error" member, or a short word of ours */
        char description[256]; /* "error_description", sanitized, or empty */
} OAuthError;

/* Classifies and parses a token endpoint response. On OAUTH_OK fills *ret;
 * otherwise fills *ret_error. `status` 0 means the transfer failed. */
OAuthOutcome oauth_parse_token_response(long status, const char *body, size_t len, TokenResponse *ret,
                                        OAuthError *ret_error);

/* Builds the form body of a refresh_token grant. `scope` and `resource` may
 * be NULL; `client_id`/`client_secret` are included per the auth method.
 * Returns a secret string (erase_and_free). */
char *oauth_refresh_body(const char *refresh_token, const char *scope, const char *resource,
                         OAuthAuthMethod method, const char *client_id, const char *client_secret);

/* Appends "&key=form-encoded(value)" ("key=..." when empty) to a secret buffer. */
int oauth_form_add(char **buf, size_t *len, const char *key, const char *value);

/* Form bodies for the device authorization request, the device_code grant,
 * the authorization_code grant (with the PKCE verifier) and RFC 7009
 * revocation. Client credentials are added per the auth method (for
 * client_secret_basic they go in the Authorization header instead). Each
 * returns a secret string, or NULL when out of memory. */
char *oauth_device_authorization_body(const char *scope, OAuthAuthMethod method, const char *client_id,
                                      const char *client_secret);
char *oauth_device_token_body(const char *device_code, OAuthAuthMethod method, const char *client_id,
                              const char *client_secret);
char *oauth_code_token_body(const char *code, const char *redirect_uri, const char *verifier, OAuthAuthMethod method,
                            const char *client_id, const char *client_secret);
char *oauth_revocation_body(const char *token, const char *hint, OAuthAuthMethod method, const char *client_id,
                            const char *client_secret);

/* RFC 8628 device authorization response. */
typedef struct DeviceAuthorization {
        char *device_code; /* secret */
        char *user_code;
        char *verification_uri;
        char *verification_uri_complete; /* may be NULL */
        int64_t expires_in;
        int64_t interval;
} DeviceAuthorization;

void device_authorization_done(DeviceAuthorization *d);
OAuthOutcome oauth_parse_device_authorization(long status, const char *body, size_t len, DeviceAuthorization *ret,
                                              OAuthError *ret_error);

/* `bytes` random bytes, base64url without padding (state values, verifiers). Secret. */
char *oauth_random_token(size_t bytes);
/* A PKCE S256 pair (RFC 7636): a random verifier (secret) and its challenge. */
int oauth_pkce_pair(char **ret_verifier, char **ret_challenge);
/* endpoint + "?" (or "&") + form-encoded key/value pairs from a NULL-terminated list. */
char *oauth_authorization_url(const char *endpoint, const char *const *params);

/* Parameters of the redirect to the loopback listener. */
typedef struct CallbackParams {
        char *code;  /* secret */
        char *state; /* secret */
        char *error;
        char *error_description;
} CallbackParams;

void callback_params_done(CallbackParams *p);
/* Parses a query string; a repeated parameter or a bad escape is -EBADMSG. */
int oauth_parse_callback_query(const char *query, CallbackParams *ret);

/* Builds an Authorization header value for client_secret_basic (RFC 6749
 * 2.3.1: form-urlencode, then base64). Returns a secret string. */
char *oauth_basic_authorization(const char *client_id, const char *client_secret);

/* Percent-encodes for application/x-www-form-urlencoded. */
char *oauth_form_encode(const char *s);

typedef struct DiscoveryDocument {
        char *issuer;
        char *token_endpoint;
        char *revocation_endpoint;
        char *introspection_endpoint;
        char *device_authorization_endpoint;
        char *authorization_endpoint;
} DiscoveryDocument;

void discovery_document_done(DiscoveryDocument *d);
/* Parses a discovery document and checks that its issuer equals `issuer`. */
int oauth_parse_discovery(const char *body, size_t len, const char *issuer, DiscoveryDocument *ret,
                          const char **ret_reason);

/* The two well-known URLs for an issuer, in the order tried. */
int oauth_discovery_urls(const char *issuer, char **ret_oidc, char **ret_rfc8414);

/* Checks a URL is https, or http to a loopback host when allowed. Returns 0
 * or -EINVAL with *ret_reason set to a static explanation. */
int oauth_check_url(const char *url, bool allow_insecure_loopback, const char **ret_reason);
