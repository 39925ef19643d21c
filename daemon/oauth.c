/* SPDX-License-Identifier: MIT */
/* daemon/oauth.c: see oauth.h. */
#include <ctype.h>
#include <stdio.h>

#include <json-c/json.h>
#include <openssl/evp.h>

#include "common/util.h"
#include "oauth.h"
#include "varlink.h"

static const char *const auth_method_table[_OAUTH_AUTH_MAX] = {
        [OAUTH_AUTH_NONE] = "none",
        [OAUTH_AUTH_CLIENT_SECRET_BASIC] = "client_secret_basic",
        [OAUTH_AUTH_CLIENT_SECRET_POST] = "client_secret_post",
};

const char *oauth_auth_method_to_string(OAuthAuthMethod m) {
        if (m < 0 || m >= _OAUTH_AUTH_MAX)
                return NULL;
        return auth_method_table[m];
}

OAuthAuthMethod oauth_auth_method_from_string(const char *s) {
        for (int i = 0; i < _OAUTH_AUTH_MAX; i++)
                if (s && streq(s, auth_method_table[i]))
                        return (OAuthAuthMethod) i;
        return _OAUTH_AUTH_INVALID;
}

void token_response_done(TokenResponse *t) {
        t->access_token = erase_and_free(t->access_token);
        t->refresh_token = erase_and_free(t->refresh_token);
        free(t->token_type);
        free(t->scope);
        t->token_type = t->scope = NULL;
}

/* Copies printable ASCII only, so provider text cannot inject control
 * characters into logs or replies. */
static void copy_sanitized(char *dst, size_t size, const char *src) {
        size_t j = 0;
        for (size_t i = 0; src && src[i] && j + 1 < size; i++) {
                unsigned char c = (unsigned char) src[i];
                dst[j++] = (c >= 0x20 && c < 0x7f) ? (char) c : '?';
        }
        dst[j] = 0;
}

static json_object *parse_json_object(const char *body, size_t len) {
        if (!body || len == 0 || len > INT32_MAX)
                return NULL;
        json_tokener *tok = json_tokener_new_ex(16);
        if (!tok)
                return NULL;
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
        json_object *o = json_tokener_parse_ex(tok, body, (int) len);
        bool ok = o && json_tokener_get_error(tok) == json_tokener_success &&
                  json_object_is_type(o, json_type_object);
        if (tok->pb && tok->pb->buf)
                explicit_bzero(tok->pb->buf, (size_t) tok->pb->size);
        json_tokener_free(tok);
        if (!ok) {
                json_object_put_erase(o);
                return NULL;
        }
        return o;
}

static const char *get_string(json_object *o, const char *key, size_t max) {
        json_object *v;
        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
                return NULL;
        size_t len = (size_t) json_object_get_string_len(v);
        const char *s = json_object_get_string(v);
        if (len == 0 || len > max || strlen(s) != len)
                return NULL;
        return s;
}

static bool token_chars_ok(const char *s) {
        /* RFC 6749 appendix A: access and refresh tokens are visible ASCII (VSCHAR). */
        for (; *s; s++)
                if ((unsigned char) *s < 0x20 || (unsigned char) *s > 0x7e)
                        return false;
        return true;
}

static OAuthOutcome set_error(OAuthError *e, OAuthOutcome o, const char *code, const char *desc) {
        copy_sanitized(e->code, sizeof e->code, code);
        copy_sanitized(e->description, sizeof e->description, desc);
        return o;
}

OAuthOutcome oauth_parse_token_response(long status, const char *body, size_t len, TokenResponse *ret,
                                        OAuthError *ret_error) {
        _cleanup_(json_object_put_erasep) json_object *o = NULL;
        char buf[64];

        if (status == 0)
                return set_error(ret_error, OAUTH_TRANSIENT, "network_error", NULL);
        if (status == 429 || status >= 500) {
                snprintf(buf, sizeof buf, "http_%ld", status);
                return set_error(ret_error, OAUTH_TRANSIENT, buf, NULL);
        }

        o = parse_json_object(body, len);
        /* GitHub answers errors with 200 and an "error" member. */
        bool error_body = o && status == 200 && get_string(o, "error", 64) && !get_string(o, "access_token", OAUTH_ACCESS_TOKEN_MAX);
        if (status != 200 || error_body) {
                const char *code = o ? get_string(o, "error", 64) : NULL;
                const char *desc = o ? get_string(o, "error_description", 1024) : NULL;
                if (!code) {
                        snprintf(buf, sizeof buf, "http_%ld", status);
                        /* A 4xx without an OAuth error body: a proxy or misconfiguration. */
                        return set_error(ret_error, status == 408 ? OAUTH_TRANSIENT : OAUTH_REFUSED, buf, NULL);
                }
                /* GitHub says bad_refresh_token and incorrect_client_credentials. */
                if (streq(code, "invalid_grant") || streq(code, "bad_refresh_token"))
                        return set_error(ret_error, OAUTH_INVALID_GRANT, code, desc);
                if (streq(code, "invalid_client") || streq(code, "unauthorized_client") ||
                    streq(code, "incorrect_client_credentials"))
                        return set_error(ret_error, OAUTH_INVALID_CLIENT, code, desc);
                if (streq(code, "invalid_scope"))
                        return set_error(ret_error, OAUTH_INVALID_SCOPE, code, desc);
                if (streq(code, "temporarily_unavailable") || streq(code, "server_error"))
                        return set_error(ret_error, OAUTH_TRANSIENT, code, desc);
                return set_error(ret_error, OAUTH_REFUSED, code, desc);
        }

        if (!o)
                return set_error(ret_error, OAUTH_TRANSIENT, "malformed_response", "token response is not a JSON object");

        const char *at = get_string(o, "access_token", OAUTH_ACCESS_TOKEN_MAX);
        if (!at || !token_chars_ok(at))
                return set_error(ret_error, OAUTH_TRANSIENT, "malformed_response", "no usable access_token");
        const char *rt = NULL;
        json_object *v;
        if (json_object_object_get_ex(o, "refresh_token", &v) && !json_object_is_type(v, json_type_null)) {
                rt = get_string(o, "refresh_token", OAUTH_REFRESH_TOKEN_MAX);
                if (!rt || !token_chars_ok(rt))
                        return set_error(ret_error, OAUTH_TRANSIENT, "malformed_response", "unusable refresh_token");
        }
        const char *type = get_string(o, "token_type", 64) ?: "Bearer";
        const char *scope = NULL;
        if (json_object_object_get_ex(o, "scope", &v) && !json_object_is_type(v, json_type_null)) {
                scope = get_string(o, "scope", OAUTH_SCOPE_MAX);
                if (!scope && !(json_object_is_type(v, json_type_string) && json_object_get_string_len(v) == 0))
                        return set_error(ret_error, OAUTH_TRANSIENT, "malformed_response", "unusable scope");
        }
        int64_t expires_in = OAUTH_DEFAULT_LIFETIME_SEC;
        if (json_object_object_get_ex(o, "expires_in", &v) && !json_object_is_type(v, json_type_null)) {
                /* Some providers send a string; accept digits only. */
                if (json_object_is_type(v, json_type_int))
                        expires_in = json_object_get_int64(v);
                else if (json_object_is_type(v, json_type_string)) {
                        const char *s = json_object_get_string(v);
                        char *end;
                        errno = 0;
                        long long n = strtoll(s, &end, 10);
                        if (errno != 0 || end == s || *end != 0)
                                return set_error(ret_error, OAUTH_TRANSIENT, "malformed_response", "bad expires_in");
                        expires_in = n;
                } else
                        return set_error(ret_error, OAUTH_TRANSIENT, "malformed_response", "bad expires_in");
                if (expires_in <= 0 || expires_in > 366LL * 24 * 3600)
                        return set_error(ret_error, OAUTH_TRANSIENT, "malformed_response", "expires_in out of range");
        }

        TokenResponse t = { .expires_in = expires_in };
        t.access_token = secret_strdup(at);
        t.refresh_token = rt ? secret_strdup(rt) : NULL;
        t.token_type = strdup(type);
        t.scope = scope ? strdup(scope) : NULL;
        if (!t.access_token || (rt && !t.refresh_token) || !t.token_type || (scope && !t.scope)) {
                token_response_done(&t);
                return set_error(ret_error, OAUTH_TRANSIENT, "out_of_memory", NULL);
        }
        *ret = t;
        return OAUTH_OK;
}

char *oauth_form_encode(const char *s) {
        static const char hex[] = "0123456789ABCDEF";
        size_t n = strlen(s);
        char *r = malloc(3 * n + 1), *p = r;
        if (!r)
                return NULL;
        for (; *s; s++) {
                unsigned char c = (unsigned char) *s;
                if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~')
                        *p++ = (char) c;
                else if (c == ' ')
                        *p++ = '+';
                else {
                        *p++ = '%';
                        *p++ = hex[c >> 4];
                        *p++ = hex[c & 15];
                }
        }
        *p = 0;
        return r;
}

int oauth_form_add(char **buf, size_t *len, const char *key, const char *value) {
        _cleanup_erase_ char *enc = oauth_form_encode(value);
        if (!enc)
                return -ENOMEM;
        size_t add = (*len ? 1 : 0) + strlen(key) + 1 + strlen(enc);
        char *n = malloc(*len + add + 1);
        if (!n)
                return -ENOMEM;
        int w = snprintf(n, *len + add + 1, "%s%s%s=%s", *buf ?: "", *len ? "&" : "", key, enc);
        erase_and_free(*buf);
        *buf = n;
        *len = (size_t) w;
        return 0;
}

char *oauth_refresh_body(const char *refresh_token, const char *scope, const char *resource,
                         OAuthAuthMethod method, const char *client_id, const char *client_secret) {
        _cleanup_erase_ char *b = NULL;
        size_t len = 0;

        if (oauth_form_add(&b, &len, "grant_type", "refresh_token") < 0 ||
            oauth_form_add(&b, &len, "refresh_token", refresh_token) < 0)
                return NULL;
        if (scope && oauth_form_add(&b, &len, "scope", scope) < 0)
                return NULL;
        if (resource && oauth_form_add(&b, &len, "resource", resource) < 0)
                return NULL;
        if (method != OAUTH_AUTH_CLIENT_SECRET_BASIC && oauth_form_add(&b, &len, "client_id", client_id) < 0)
                return NULL;
        if (method == OAUTH_AUTH_CLIENT_SECRET_POST && client_secret &&
            oauth_form_add(&b, &len, "client_secret", client_secret) < 0)
                return NULL;
        return TAKE_PTR(b);
}

char *oauth_basic_authorization(const char *client_id, const char *client_secret) {
        _cleanup_erase_ char *id = oauth_form_encode(client_id);
        _cleanup_erase_ char *secret = oauth_form_encode(client_secret ?: "");
        if (!id || !secret)
                return NULL;
        size_t n = strlen(id) + 1 + strlen(secret);
        _cleanup_erase_ char *plain = malloc(n + 1);
        if (!plain)
                return NULL;
        snprintf(plain, n + 1, "%s:%s", id, secret);

        size_t out = 4 * ((n + 2) / 3) + 1;
        char *r = malloc(strlen("Basic ") + out);
        if (!r)
                return NULL;
        memcpy(r, "Basic ", 6);
        EVP_EncodeBlock((unsigned char *) r + 6, (const unsigned char *) plain, (int) n);
        return r;
}

void discovery_document_done(DiscoveryDocument *d) {
        free(d->issuer);
        free(d->token_endpoint);
        free(d->revocation_endpoint);
        free(d->introspection_endpoint);
        free(d->device_authorization_endpoint);
        free(d->authorization_endpoint);
        *d = (DiscoveryDocument) {};
}

static int dup_opt(json_object *o, const char *key, char **ret) {
        const char *s = get_string(o, key, OAUTH_URL_MAX);
        if (!s) {
                *ret = NULL;
                return 0;
        }
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

int oauth_parse_discovery(const char *body, size_t len, const char *issuer, DiscoveryDocument *ret,
                          const char **ret_reason) {
        _cleanup_(json_object_putp) json_object *o = parse_json_object(body, len);
        if (!o) {
                *ret_reason = "discovery document is not a JSON object";
                return -EBADMSG;
        }
        const char *iss = get_string(o, "issuer", OAUTH_URL_MAX);
        if (!iss || !streq(iss, issuer)) {
                *ret_reason = "discovery document names another issuer";
                return -EBADMSG;
        }
        if (!get_string(o, "token_endpoint", OAUTH_URL_MAX)) {
                *ret_reason = "discovery document has no token_endpoint";
                return -EBADMSG;
        }
        DiscoveryDocument d = {};
        if (dup_opt(o, "issuer", &d.issuer) < 0 || dup_opt(o, "token_endpoint", &d.token_endpoint) < 0 ||
            dup_opt(o, "revocation_endpoint", &d.revocation_endpoint) < 0 ||
            dup_opt(o, "introspection_endpoint", &d.introspection_endpoint) < 0 ||
            dup_opt(o, "device_authorization_endpoint", &d.device_authorization_endpoint) < 0 ||
            dup_opt(o, "authorization_endpoint", &d.authorization_endpoint) < 0) {
                discovery_document_done(&d);
                *ret_reason = "out of memory";
                return -ENOMEM;
        }
        *ret = d;
        return 0;
}

int oauth_discovery_urls(const char *issuer, char **ret_oidc, char **ret_rfc8414) {
        /* OIDC: issuer + "/.well-known/openid-configuration".
         * RFC 8414: the well-known segment goes between host and path. */
        size_t l = strlen(issuer);
        while (l > 0 && issuer[l - 1] == '/')
                l--;
        const char *scheme_end = strstr(issuer, "://");
        if (!scheme_end)
                return -EINVAL;
        const char *path = strchr(scheme_end + 3, '/');
        size_t host_end = path && (size_t) (path - issuer) < l ? (size_t) (path - issuer) : l;

        char *a = NULL, *b = NULL;
        if (asprintf(&a, "%.*s/.well-known/openid-configuration", (int) l, issuer) < 0)
                return -ENOMEM;
        if (asprintf(&b, "%.*s/.well-known/oauth-authorization-server%.*s", (int) host_end, issuer,
                     (int) (l - host_end), issuer + host_end) < 0) {
                free(a);
                return -ENOMEM;
        }
        *ret_oidc = a;
        *ret_rfc8414 = b;
        return 0;
}

static bool host_is_loopback(const char *host, size_t len) {
        if (len == 9 && strncasecmp(host, "localhost", 9) == 0)
                return true;
        if (len == 5 && strncmp(host, "[::1]", 5) == 0)
                return true;
        if (len >= 4 && strncmp(host, "127.", 4) == 0) {
                /* 127.0.0.0/8, dotted quad only. */
                int dots = 0;
                for (size_t i = 0; i < len; i++) {
                        if (host[i] == '.')
                                dots++;
                        else if (!isdigit((unsigned char) host[i]))
                                return false;
                }
                return dots == 3;
        }
        return false;
}

int oauth_check_url(const char *url, bool allow_insecure_loopback, const char **ret_reason) {
        const char *rest;
        size_t len = strlen(url);

        if (len == 0 || len > OAUTH_URL_MAX) {
                *ret_reason = "URL empty or too long";
                return -EINVAL;
        }
        for (const char *p = url; *p; p++)
                if ((unsigned char) *p <= 0x20 || (unsigned char) *p >= 0x7f) {
                        *ret_reason = "URL contains spaces or control characters";
                        return -EINVAL;
                }
        if (strchr(url, '#')) {
                *ret_reason = "URL must not contain a fragment";
                return -EINVAL;
        }
        bool https = (rest = startswith(url, "https://"));
        if (!https && !(rest = startswith(url, "http://"))) {
                *ret_reason = "URL must start with https://";
                return -EINVAL;
        }
        size_t hl = strcspn(rest, "/?");
        const char *at = memchr(rest, '@', hl);
        if (at) {
                *ret_reason = "URL must not contain user information";
                return -EINVAL;
        }
        /* Host without port; bracketed IPv6 kept whole. */
        size_t host_len = hl;
        if (rest[0] == '[') {
                const char *close = memchr(rest, ']', hl);
                if (!close) {
                        *ret_reason = "URL has a malformed IPv6 host";
                        return -EINVAL;
                }
                host_len = (size_t) (close - rest) + 1;
        } else {
                const char *colon = memchr(rest, ':', hl);
                if (colon)
                        host_len = (size_t) (colon - rest);
        }
        if (host_len == 0) {
                *ret_reason = "URL has no host";
                return -EINVAL;
        }
        if (https)
                return 0;
        if (!host_is_loopback(rest, host_len)) {
                *ret_reason = "plain http is only allowed to a loopback host";
                return -EINVAL;
        }
        if (!allow_insecure_loopback) {
                *ret_reason = "plain http to loopback needs the insecure-loopback opt-in";
                return -EINVAL;
        }
        return 0;
}

/* Adds client_id / client_secret to a form body as the auth method wants;
 * for client_secret_basic, they go in the Authorization header instead. */
static int form_add_client(char **b, size_t *len, OAuthAuthMethod method, const char *client_id,
                           const char *client_secret) {
        if (method != OAUTH_AUTH_CLIENT_SECRET_BASIC && oauth_form_add(b, len, "client_id", client_id) < 0)
                return -ENOMEM;
        if (method == OAUTH_AUTH_CLIENT_SECRET_POST && client_secret &&
            oauth_form_add(b, len, "client_secret", client_secret) < 0)
                return -ENOMEM;
        return 0;
}

char *oauth_device_authorization_body(const char *scope, OAuthAuthMethod method, const char *client_id,
                                      const char *client_secret) {
        _cleanup_erase_ char *b = NULL;
        size_t len = 0;
        if ((scope && oauth_form_add(&b, &len, "scope", scope) < 0) ||
            form_add_client(&b, &len, method, client_id, client_secret) < 0)
                return NULL;
        /* A public client with no scope still needs a non-empty body. */
        if (!b && oauth_form_add(&b, &len, "client_id", client_id) < 0)
                return NULL;
        return TAKE_PTR(b);
}

char *oauth_device_token_body(const char *device_code, OAuthAuthMethod method, const char *client_id,
                              const char *client_secret) {
        _cleanup_erase_ char *b = NULL;
        size_t len = 0;
        if (oauth_form_add(&b, &len, "grant_type", "urn:ietf:params:oauth:grant-type:device_code") < 0 ||
            oauth_form_add(&b, &len, "device_code", device_code) < 0 ||
            form_add_client(&b, &len, method, client_id, client_secret) < 0)
                return NULL;
        return TAKE_PTR(b);
}

char *oauth_code_token_body(const char *code, const char *redirect_uri, const char *verifier, OAuthAuthMethod method,
                            const char *client_id, const char *client_secret) {
        _cleanup_erase_ char *b = NULL;
        size_t len = 0;
        if (oauth_form_add(&b, &len, "grant_type", "authorization_code") < 0 ||
            oauth_form_add(&b, &len, "code", code) < 0 ||
            oauth_form_add(&b, &len, "redirect_uri", redirect_uri) < 0 ||
            oauth_form_add(&b, &len, "code_verifier", verifier) < 0 ||
            form_add_client(&b, &len, method, client_id, client_secret) < 0)
                return NULL;
        return TAKE_PTR(b);
}

char *oauth_revocation_body(const char *token, const char *hint, OAuthAuthMethod method, const char *client_id,
                            const char *client_secret) {
        _cleanup_erase_ char *b = NULL;
        size_t len = 0;
        if (oauth_form_add(&b, &len, "token", token) < 0 || (hint && oauth_form_add(&b, &len, "token_type_hint", hint) < 0) ||
            form_add_client(&b, &len, method, client_id, client_secret) < 0)
                return NULL;
        return TAKE_PTR(b);
}

void device_authorization_done(DeviceAuthorization *d) {
        d->device_code = erase_and_free(d->device_code);
        free(d->user_code);
        free(d->verification_uri);
        free(d->verification_uri_complete);
        *d = (DeviceAuthorization) {};
}

OAuthOutcome oauth_parse_device_authorization(long status, const char *body, size_t len, DeviceAuthorization *ret,
                                              OAuthError *ret_error) {
        _cleanup_(json_object_put_erasep) json_object *o = NULL;
        char buf[64];

        if (status == 0)
                return set_error(ret_error, OAUTH_TRANSIENT, "network_error", NULL);
        if (status == 429 || status >= 500) {
                snprintf(buf, sizeof buf, "http_%ld", status);
                return set_error(ret_error, OAUTH_TRANSIENT, buf, NULL);
        }
        o = parse_json_object(body, len);
        if (status != 200) {
                const char *code = o ? get_string(o, "error", 64) : NULL;
                const char *desc = o ? get_string(o, "error_description", 1024) : NULL;
                if (!code) {
                        snprintf(buf, sizeof buf, "http_%ld", status);
                        return set_error(ret_error, OAUTH_REFUSED, buf, NULL);
                }
                if (streq(code, "invalid_client") || streq(code, "unauthorized_client"))
                        return set_error(ret_error, OAUTH_INVALID_CLIENT, code, desc);
                if (streq(code, "invalid_scope"))
                        return set_error(ret_error, OAUTH_INVALID_SCOPE, code, desc);
                return set_error(ret_error, OAUTH_REFUSED, code, desc);
        }
        if (!o)
                return set_error(ret_error, OAUTH_REFUSED, "malformed_response", "not a JSON object");

        const char *dc = get_string(o, "device_code", 4096);
        const char *uc = get_string(o, "user_code", 64);
        /* RFC 8628 says verification_uri; Google sends verification_url. */
        const char *vu = get_string(o, "verification_uri", OAUTH_URL_MAX) ?: get_string(o, "verification_url", OAUTH_URL_MAX);
        const char *vuc = get_string(o, "verification_uri_complete", OAUTH_URL_MAX);
        if (!dc || !uc || !vu || !token_chars_ok(dc) || !token_chars_ok(uc) || !token_chars_ok(vu) ||
            (vuc && !token_chars_ok(vuc)))
                return set_error(ret_error, OAUTH_REFUSED, "malformed_response",
                                 "device_code, user_code or verification_uri missing or unusable");

        json_object *v;
        int64_t expires_in = 600, interval = 5;
        if (json_object_object_get_ex(o, "expires_in", &v) && json_object_is_type(v, json_type_int))
                expires_in = json_object_get_int64(v);
        if (json_object_object_get_ex(o, "interval", &v) && json_object_is_type(v, json_type_int))
                interval = json_object_get_int64(v);
        if (expires_in <= 0 || expires_in > 24 * 3600 || interval < 0 || interval > 3600)
                return set_error(ret_error, OAUTH_REFUSED, "malformed_response", "expires_in or interval out of range");
        if (interval == 0)
                interval = 5;

        DeviceAuthorization d = { .expires_in = expires_in, .interval = interval };
        d.device_code = secret_strdup(dc);
        d.user_code = strdup(uc);
        d.verification_uri = strdup(vu);
        d.verification_uri_complete = vuc ? strdup(vuc) : NULL;
        if (!d.device_code || !d.user_code || !d.verification_uri || (vuc && !d.verification_uri_complete)) {
                device_authorization_done(&d);
                return set_error(ret_error, OAUTH_TRANSIENT, "out_of_memory", NULL);
        }
        *ret = d;
        return OAUTH_OK;
}

static char *base64url(const unsigned char *data, size_t len) {
        size_t n = 4 * ((len + 2) / 3) + 1;
        char *r = malloc(n);
        if (!r)
                return NULL;
        EVP_EncodeBlock((unsigned char *) r, data, (int) len);
        /* To the URL-safe alphabet, without padding (RFC 7636 appendix A). */
        for (char *p = r; *p; p++) {
                if (*p == '+')
                        *p = '-';
                else if (*p == '/')
                        *p = '_';
                else if (*p == '=') {
                        *p = 0;
                        break;
                }
        }
        return r;
}

char *oauth_random_token(size_t bytes) {
        unsigned char buf[64];
        if (bytes == 0 || bytes > sizeof buf || random_bytes(buf, bytes) < 0)
                return NULL;
        char *r = base64url(buf, bytes);
        explicit_bzero(buf, sizeof buf);
        return r;
}

int oauth_pkce_pair(char **ret_verifier, char **ret_challenge) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int mdlen = 0;

        /* 32 random bytes: a 43-character verifier, the RFC 7636 minimum, with 256 bits of entropy. */
        _cleanup_erase_ char *verifier = oauth_random_token(32);
        if (!verifier)
                return -ENOMEM;
        if (!EVP_Digest(verifier, strlen(verifier), md, &mdlen, EVP_sha256(), NULL))
                return -EIO;
        char *challenge = base64url(md, mdlen);
        if (!challenge)
                return -ENOMEM;
        *ret_verifier = TAKE_PTR(verifier);
        *ret_challenge = challenge;
        return 0;
}

char *oauth_authorization_url(const char *endpoint, const char *const *params) {
        _cleanup_free_ char *q = NULL;
        size_t len = 0;
        for (size_t i = 0; params[i] && params[i + 1]; i += 2)
                if (oauth_form_add(&q, &len, params[i], params[i + 1]) < 0)
                        return NULL;
        char *r = NULL;
        if (asprintf(&r, "%s%s%s", endpoint, strchr(endpoint, '?') ? "&" : "?", strempty(q)) < 0)
                return NULL;
        return r;
}

static int hexval(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

/* Decodes a form-urlencoded component; refuses NULs, control characters and bad escapes. */
static char *form_decode(const char *s, size_t n) {
        char *r = malloc(n + 1), *p = r;
        if (!r)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                int c = (unsigned char) s[i];
                if (c == '+')
                        c = ' ';
                else if (c == '%') {
                        int hi = i + 2 < n ? hexval(s[i + 1]) : -1;
                        int lo = i + 2 < n ? hexval(s[i + 2]) : -1;
                        if (hi < 0 || lo < 0) {
                                erase_and_free(r);
                                return NULL;
                        }
                        c = hi * 16 + lo;
                        i += 2;
                }
                if (c < 0x20 || c == 0x7f) {
                        erase_and_free(r);
                        return NULL;
                }
                *p++ = (char) c;
        }
        *p = 0;
        return r;
}

void callback_params_done(CallbackParams *p) {
        p->code = erase_and_free(p->code);
        p->state = erase_and_free(p->state);
        free(p->error);
        free(p->error_description);
        p->error = p->error_description = NULL;
}

int oauth_parse_callback_query(const char *query, CallbackParams *ret) {
        CallbackParams p = {};
        const char *s = query;

        if (strlen(query) > 8192)
                return -E2BIG;
        while (*s) {
                size_t n = strcspn(s, "&");
                const char *eq = memchr(s, '=', n);
                if (eq) {
                        size_t kl = (size_t) (eq - s);
                        char **slot = NULL;
                        if (kl == 4 && strncmp(s, "code", 4) == 0)
                                slot = &p.code;
                        else if (kl == 5 && strncmp(s, "state", 5) == 0)
                                slot = &p.state;
                        else if (kl == 5 && strncmp(s, "error", 5) == 0)
                                slot = &p.error;
                        else if (kl == 17 && strncmp(s, "error_description", 17) == 0)
                                slot = &p.error_description;
                        if (slot) {
                                if (*slot) { /* a repeated parameter is an attack or a bug */
                                        callback_params_done(&p);
                                        return -EBADMSG;
                                }
                                *slot = form_decode(eq + 1, n - kl - 1);
                                if (!*slot) {
                                        callback_params_done(&p);
                                        return -EBADMSG;
                                }
                        }
                }
                s += n;
                if (*s == '&')
                        s++;
        }
        *ret = p;
        return 0;
}
