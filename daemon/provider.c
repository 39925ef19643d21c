/* SPDX-License-Identifier: MIT */
/* daemon/provider.c: see provider.h; the format is in providers/README.md. */
#include <stdarg.h>
#include <stdio.h>

#include <json-c/json.h>

#include "common/fileio.h"
#include "common/util.h"
#include "provider.h"
#include "varlink.h"

/* Root object, then an array or the parameter object, then their members;
 * anything deeper is a type error anyway. */
#define PROVIDER_JSON_DEPTH 8
/* More members than this in one object cannot be a valid preset (there are
 * 19 fields); the duplicate scan stops there. */
#define PROVIDER_MEMBERS_MAX 64U

#define PLACEHOLDER_TENANT "{tenant}"
#define PLACEHOLDER_ISSUER "{issuer}"
/* Stand-in for {issuer} while a URL is checked before the issuer is known. */
#define PROBE_ISSUER "https://issuer.invalid"

/* ---- messages ---- */

/* Copies printable ASCII of s into buf (at most 64 of them, then "..."), so
 * that names and values from a file cannot put control characters into a
 * message. */
static const char *printable(const char *s, char buf[static 72]) {
        size_t j = 0;
        for (size_t i = 0; s && s[i]; i++) {
                if (j == 64) {
                        memcpy(buf + j, "...", 3);
                        j += 3;
                        break;
                }
                unsigned char c = (unsigned char) s[i];
                buf[j++] = (c >= 0x20 && c < 0x7f) ? (char) c : '?';
        }
        buf[j] = 0;
        return buf;
}

/* Sets *ret_error to "PATH: FIELD: message" (or "PATH: message" without a
 * field) and returns r. */
_printf_(5, 6) static int fail(char **ret_error, int r, const char *path, const char *field, const char *fmt, ...) {
        if (!ret_error)
                return r;
        _cleanup_free_ char *msg = NULL;
        va_list ap;
        va_start(ap, fmt);
        int n = vasprintf(&msg, fmt, ap);
        va_end(ap);
        if (n < 0)
                msg = NULL; /* undefined after a failure */
        char *full = NULL;
        if (n >= 0 && asprintf(&full, "%s: %s%s%s", path, field ?: "", field ? ": " : "", msg) < 0)
                full = NULL;
        *ret_error = full;
        return r;
}

/* ---- small validators ---- */

bool provider_name_valid(const char *name) {
        size_t n = name ? strlen(name) : 0;
        if (n == 0 || n > PROVIDER_NAME_MAX || name[0] == '-')
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = name[i];
                if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
                        return false;
        }
        return true;
}

bool provider_tenant_valid(const char *tenant) {
        size_t n = tenant ? strlen(tenant) : 0;
        if (n == 0 || n > PROVIDER_TENANT_MAX || streq(tenant, ".") || streq(tenant, ".."))
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = tenant[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                      c == '-'))
                        return false;
        }
        return true;
}

static bool param_key_valid(const char *k) {
        size_t n = strlen(k);
        if (n == 0 || n > PROVIDER_PARAM_KEY_MAX)
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = k[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                      c == '.' || c == '-'))
                        return false;
        }
        return true;
}

/* Parameters tokend sets itself in every authorization request; a preset
 * must not override them (prompt has its own field). */
static bool param_key_reserved(const char *k) {
        static const char *const reserved[] = {
                "client_id", "code_challenge", "code_challenge_method", "nonce", "prompt",
                "redirect_uri", "response_mode", "response_type", "scope", "state",
        };
        for (size_t i = 0; i < ELEMENTSOF(reserved); i++)
                if (streq(k, reserved[i]))
                        return true;
        return false;
}

/* ---- duplicate member names ----
 *
 * json-c keeps the last of two members with the same name, silently; in a
 * preset that is as bad as a typo. This scan of the raw (already validated)
 * text finds a duplicate in the root object or in an object directly inside
 * it. Member names there must not use escapes, so that comparing the raw
 * bytes is exact. */

typedef struct KeyList {
        struct {
                const char *s;
                size_t n;
        } keys[PROVIDER_MEMBERS_MAX];
        size_t n;
} KeyList;

/* Line number of byte offset `at`, for JSON syntax errors. */
static unsigned line_of(const char *text, size_t len, size_t at) {
        unsigned line = 1;
        for (size_t i = 0; i < at && i < len; i++)
                if (text[i] == '\n')
                        line++;
        return line;
}

static int scan_duplicates(const char *path, const char *text, size_t len, char **ret_error) {
        KeyList root = {}, inner = {};
        char parent[PROVIDER_MEMBERS_MAX + 8] = "", b1[72], b2[72];
        /* Per nesting level: is it an object, and is a member name expected next? */
        bool is_object[PROVIDER_JSON_DEPTH + 1] = {}, expect_key[PROVIDER_JSON_DEPTH + 1] = {};
        size_t depth = 0;

        for (size_t i = 0; i < len; i++) {
                char c = text[i];
                if (c == '{' || c == '[') {
                        if (depth >= PROVIDER_JSON_DEPTH)
                                return fail(ret_error, -EINVAL, path, NULL, "nested too deeply");
                        depth++;
                        is_object[depth] = c == '{';
                        expect_key[depth] = c == '{';
                        if (depth == 2 && c == '{')
                                inner.n = 0;
                } else if (c == '}' || c == ']') {
                        if (depth > 0)
                                depth--;
                } else if (c == ',') {
                        if (depth > 0 && is_object[depth])
                                expect_key[depth] = true;
                } else if (c == '\'') {
                        /* json-c accepts 'strings' even in strict mode; JSON does not,
                         * and a member hidden that way would escape the duplicate check. */
                        return fail(ret_error, -EINVAL, path, NULL,
                                    "line %u: invalid JSON: single-quoted strings are not JSON",
                                    line_of(text, len, i));
                } else if (c == '"') {
                        size_t start = ++i;
                        bool escaped = false;
                        for (; i < len && text[i] != '"'; i++)
                                if (text[i] == '\\') {
                                        escaped = true;
                                        i++;
                                }
                        if (depth == 0 || !is_object[depth] || !expect_key[depth])
                                continue; /* a value */
                        expect_key[depth] = false;
                        if (depth > 2)
                                continue;
                        size_t n = i - start;
                        char name[PROVIDER_MEMBERS_MAX + 8];
                        snprintf(name, sizeof name, "%.*s", (int) (n < PROVIDER_MEMBERS_MAX ? n : PROVIDER_MEMBERS_MAX),
                                 text + start);
                        if (escaped)
                                return fail(ret_error, -EINVAL, path, depth == 1 ? NULL : printable(parent, b1),
                                            "member name \"%s\" uses an escape; write it plainly",
                                            printable(name, b2));
                        KeyList *l = depth == 1 ? &root : &inner;
                        for (size_t k = 0; k < l->n; k++)
                                if (l->keys[k].n == n && memcmp(l->keys[k].s, text + start, n) == 0)
                                        return depth == 1 ? fail(ret_error, -EINVAL, path, printable(name, b1),
                                                                 "appears twice")
                                                          : fail(ret_error, -EINVAL, path, printable(parent, b1),
                                                                 "\"%s\" appears twice", printable(name, b2));
                        if (l->n >= PROVIDER_MEMBERS_MAX)
                                return fail(ret_error, -EINVAL, path, depth == 1 ? NULL : printable(parent, b1),
                                            "more than %u members", PROVIDER_MEMBERS_MAX);
                        l->keys[l->n].s = text + start;
                        l->keys[l->n].n = n;
                        l->n++;
                        if (depth == 1)
                                snprintf(parent, sizeof parent, "%s", name);
                }
        }
        return 0;
}

/* ---- field parsers ---- */

typedef struct ParseContext {
        const char *path;
        bool allow_insecure_loopback;
        ProviderPreset *p;
        char **ret_error;
        /* What the URLs use, for the checks across fields. */
        const char *tenant_field; /* first field with {tenant} */
        const char *issuer_field; /* first field with {issuer} */
} ParseContext;

/* A string value: present, a string, 1..max bytes, no NUL inside. */
static int get_string(ParseContext *c, const char *field, json_object *v, size_t max, const char **ret) {
        if (!json_object_is_type(v, json_type_string))
                return fail(c->ret_error, -EINVAL, c->path, field, "must be a string");
        size_t n = (size_t) json_object_get_string_len(v);
        const char *s = json_object_get_string(v);
        if (n == 0)
                return fail(c->ret_error, -EINVAL, c->path, field, "must not be empty");
        if (n > max)
                return fail(c->ret_error, -EINVAL, c->path, field, "longer than %zu bytes", max);
        if (strlen(s) != n)
                return fail(c->ret_error, -EINVAL, c->path, field, "contains a NUL character");
        *ret = s;
        return 0;
}

static int set_string(ParseContext *c, const char *field, const char *s, char **dst) {
        char *d = strdup(s);
        if (!d)
                return fail(c->ret_error, -ENOMEM, c->path, field, "out of memory");
        free(*dst);
        *dst = d;
        return 0;
}

/* Text shown to people: no control characters (UTF-8 was checked by the parser). */
static int parse_text(ParseContext *c, const char *field, json_object *v, size_t max, char **dst) {
        const char *s = NULL;
        int r = get_string(c, field, v, max, &s);
        if (r < 0)
                return r;
        for (const char *q = s; *q; q++)
                if ((unsigned char) *q < 0x20 || *q == 0x7f)
                        return fail(c->ret_error, -EINVAL, c->path, field, "contains a control character");
        return set_string(c, field, s, dst);
}

static int parse_bool(ParseContext *c, const char *field, json_object *v, bool *dst) {
        if (!json_object_is_type(v, json_type_boolean))
                return fail(c->ret_error, -EINVAL, c->path, field, "must be true or false");
        *dst = json_object_get_boolean(v);
        return 0;
}

/* Replaces every `from` in s with `to`; NULL when out of memory. */
static char *replace_all(const char *s, const char *from, const char *to) {
        size_t fl = strlen(from), tl = strlen(to), count = 0;
        for (const char *q = s; (q = strstr(q, from)); q += fl)
                count++;
        size_t n = strlen(s) - count * fl + count * tl;
        char *r = malloc(n + 1), *o = r;
        if (!r)
                return NULL;
        for (const char *q = s;;) {
                const char *hit = strstr(q, from);
                if (!hit) {
                        strcpy(o, q);
                        break;
                }
                memcpy(o, q, (size_t) (hit - q));
                o += hit - q;
                memcpy(o, to, tl);
                o += tl;
                q = hit + fl;
        }
        return r;
}

/* Checks a URL that may hold placeholders: {tenant} anywhere, {issuer} only
 * as the very beginning of an endpoint and followed by a path. The URL with
 * the placeholders filled in by stand-ins must pass oauth_check_url(). */
static int check_url(ParseContext *c, const char *field, const char *url, bool issuer_prefix_ok) {
        const char *reason;
        bool has_tenant = false, has_issuer = false;

        for (const char *q = url; *q; q++) {
                if (*q == '}')
                        return fail(c->ret_error, -EINVAL, c->path, field, "stray '}'");
                if (*q != '{')
                        continue;
                if (startswith(q, PLACEHOLDER_TENANT)) {
                        has_tenant = true;
                        q += strlen(PLACEHOLDER_TENANT) - 1;
                } else if (startswith(q, PLACEHOLDER_ISSUER)) {
                        if (!issuer_prefix_ok || q != url || q[strlen(PLACEHOLDER_ISSUER)] != '/')
                                return fail(c->ret_error, -EINVAL, c->path, field,
                                            "{issuer} may only begin an endpoint, followed by a path");
                        has_issuer = true;
                        q += strlen(PLACEHOLDER_ISSUER) - 1;
                } else
                        return fail(c->ret_error, -EINVAL, c->path, field,
                                    "unknown placeholder (there are {tenant} and {issuer})");
        }

        _cleanup_free_ char *a = has_issuer ? replace_all(url, PLACEHOLDER_ISSUER, PROBE_ISSUER) : strdup(url);
        _cleanup_free_ char *probe = a ? replace_all(a, PLACEHOLDER_TENANT, "tenant") : NULL;
        if (!probe)
                return fail(c->ret_error, -ENOMEM, c->path, field, "out of memory");
        if (oauth_check_url(probe, c->allow_insecure_loopback, &reason) < 0) {
                /* Name the rule presets follow, rather than the command line's. */
                if (startswith(probe, "http://") && !c->allow_insecure_loopback)
                        reason = "must be an https URL";
                return fail(c->ret_error, -EINVAL, c->path, field, "%s", reason);
        }
        if (has_tenant && !c->tenant_field)
                c->tenant_field = field;
        if (has_issuer && !c->issuer_field)
                c->issuer_field = field;
        return 0;
}

static int parse_url_field(ParseContext *c, const char *field, json_object *v, bool issuer_prefix_ok, char **dst) {
        const char *s = NULL;
        int r = get_string(c, field, v, OAUTH_URL_MAX, &s);
        if (r < 0)
                return r;
        r = check_url(c, field, s, issuer_prefix_ok);
        if (r < 0)
                return r;
        return set_string(c, field, s, dst);
}

static int parse_name(ParseContext *c, const char *field, json_object *v) {
        const char *s = NULL;
        char b[72];
        int r = get_string(c, field, v, 256, &s);
        if (r < 0)
                return r;
        if (!provider_name_valid(s))
                return fail(c->ret_error, -EINVAL, c->path, field,
                            "\"%s\" is not a valid name (1-%u characters of a-z, 0-9 and '-', not starting with '-')",
                            printable(s, b), PROVIDER_NAME_MAX);
        return set_string(c, field, s, &c->p->name);
}

static int parse_description(ParseContext *c, const char *field, json_object *v) {
        return parse_text(c, field, v, PROVIDER_DESCRIPTION_MAX, &c->p->description);
}

static int parse_notes(ParseContext *c, const char *field, json_object *v) {
        return parse_text(c, field, v, PROVIDER_NOTES_MAX, &c->p->notes);
}

static int parse_issuer(ParseContext *c, const char *field, json_object *v) {
        int r = parse_url_field(c, field, v, false, &c->p->issuer);
        if (r < 0)
                return r;
        /* OIDC Discovery §3: an https URL with no query or fragment. */
        if (strchr(c->p->issuer, '?'))
                return fail(c->ret_error, -EINVAL, c->path, field, "must not contain a query");
        return 0;
}

static int parse_authorization_endpoint(ParseContext *c, const char *field, json_object *v) {
        return parse_url_field(c, field, v, true, &c->p->authorization_endpoint);
}

static int parse_token_endpoint(ParseContext *c, const char *field, json_object *v) {
        return parse_url_field(c, field, v, true, &c->p->token_endpoint);
}

static int parse_device_authorization_endpoint(ParseContext *c, const char *field, json_object *v) {
        return parse_url_field(c, field, v, true, &c->p->device_authorization_endpoint);
}

static int parse_revocation_endpoint(ParseContext *c, const char *field, json_object *v) {
        return parse_url_field(c, field, v, true, &c->p->revocation_endpoint);
}

static int parse_discovery(ParseContext *c, const char *field, json_object *v) {
        return parse_bool(c, field, v, &c->p->discovery);
}

static int parse_offline_access_scope(ParseContext *c, const char *field, json_object *v) {
        return parse_bool(c, field, v, &c->p->offline_access_scope);
}

static int parse_prompt_consent(ParseContext *c, const char *field, json_object *v) {
        return parse_bool(c, field, v, &c->p->prompt_consent);
}

static int parse_pkce(ParseContext *c, const char *field, json_object *v) {
        return parse_bool(c, field, v, &c->p->pkce);
}

static int parse_tenant(ParseContext *c, const char *field, json_object *v) {
        return parse_bool(c, field, v, &c->p->tenant);
}

static int parse_flows(ParseContext *c, const char *field, json_object *v) {
        static const struct {
                const char *name;
                ProviderFlow flow;
        } table[] = {
                { "device", PROVIDER_FLOW_DEVICE },
                { "auth-code", PROVIDER_FLOW_AUTH_CODE },
        };
        char b[72];
        unsigned flows = 0;

        if (!json_object_is_type(v, json_type_array))
                return fail(c->ret_error, -EINVAL, c->path, field, "must be an array of \"device\" and \"auth-code\"");
        size_t n = json_object_array_length(v);
        if (n == 0)
                return fail(c->ret_error, -EINVAL, c->path, field, "must name at least one flow");
        for (size_t i = 0; i < n; i++) {
                json_object *e = json_object_array_get_idx(v, i);
                if (!json_object_is_type(e, json_type_string))
                        return fail(c->ret_error, -EINVAL, c->path, field, "element %zu is not a string", i);
                const char *s = json_object_get_string(e);
                unsigned f = 0;
                for (size_t k = 0; k < ELEMENTSOF(table); k++)
                        if (streq(s, table[k].name))
                                f = table[k].flow;
                if (f == 0)
                        return fail(c->ret_error, -EINVAL, c->path, field,
                                    "unknown flow \"%s\" (there are \"device\" and \"auth-code\")", printable(s, b));
                if (flows & f)
                        return fail(c->ret_error, -EINVAL, c->path, field, "\"%s\" is listed twice", s);
                flows |= f;
        }
        c->p->flows = flows;
        return 0;
}

static int parse_default_scopes(ParseContext *c, const char *field, json_object *v) {
        ScopeSet s = {};
        char b[72];
        int r = 0;

        if (!json_object_is_type(v, json_type_array))
                return fail(c->ret_error, -EINVAL, c->path, field, "must be an array of scope strings");
        size_t n = json_object_array_length(v);
        if (n > SCOPES_MAX)
                return fail(c->ret_error, -EINVAL, c->path, field, "more than %u scopes", SCOPES_MAX);
        for (size_t i = 0; i < n; i++) {
                json_object *e = json_object_array_get_idx(v, i);
                if (!json_object_is_type(e, json_type_string)) {
                        r = fail(c->ret_error, -EINVAL, c->path, field, "element %zu is not a string", i);
                        goto out;
                }
                const char *scope = json_object_get_string(e);
                if (strlen(scope) != (size_t) json_object_get_string_len(e) || !scope_token_valid(scope)) {
                        r = fail(c->ret_error, -EINVAL, c->path, field,
                                 "\"%s\" is not a valid scope (RFC 6749 scope-token, at most 256 characters)",
                                 printable(scope, b));
                        goto out;
                }
                if (scope_set_contains(&s, scope)) {
                        r = fail(c->ret_error, -EINVAL, c->path, field, "\"%s\" is listed twice", scope);
                        goto out;
                }
                r = scope_set_add(&s, scope);
                if (r < 0) {
                        r = fail(c->ret_error, r, c->path, field, "cannot add \"%s\": %s", scope, strerror(-r));
                        goto out;
                }
        }
        scope_set_done(&c->p->default_scopes);
        c->p->default_scopes = s;
        return 0;
out:
        scope_set_done(&s);
        return r;
}

static int parse_extra_authorization_params(ParseContext *c, const char *field, json_object *v) {
        char b[72];

        if (!json_object_is_type(v, json_type_object))
                return fail(c->ret_error, -EINVAL, c->path, field, "must be an object of strings");
        size_t n = (size_t) json_object_object_length(v);
        if (n > PROVIDER_PARAMS_MAX)
                return fail(c->ret_error, -EINVAL, c->path, field, "more than %u parameters", PROVIDER_PARAMS_MAX);
        ProviderParam *params = n > 0 ? calloc(n, sizeof *params) : NULL;
        if (n > 0 && !params)
                return fail(c->ret_error, -ENOMEM, c->path, field, "out of memory");
        size_t i = 0;
        int r = 0;
        json_object_object_foreach(v, key, val) {
                if (!param_key_valid(key)) {
                        r = fail(c->ret_error, -EINVAL, c->path, field,
                                 "\"%s\" is not a valid parameter name (1-%u characters of A-Z, a-z, 0-9, '_', '.', '-')",
                                 printable(key, b), PROVIDER_PARAM_KEY_MAX);
                        break;
                }
                if (param_key_reserved(key)) {
                        r = fail(c->ret_error, -EINVAL, c->path, field, "\"%s\" is set by tokend itself%s", key,
                                 streq(key, "prompt") ? "; use \"prompt_consent\"" : "");
                        break;
                }
                if (!json_object_is_type(val, json_type_string)) {
                        r = fail(c->ret_error, -EINVAL, c->path, field, "%s: must be a string", key);
                        break;
                }
                const char *s = json_object_get_string(val);
                size_t len = (size_t) json_object_get_string_len(val);
                bool ok = len > 0 && len <= PROVIDER_PARAM_VALUE_MAX && strlen(s) == len;
                for (const char *q = s; ok && *q; q++)
                        ok = (unsigned char) *q >= 0x20 && (unsigned char) *q < 0x7f;
                if (!ok) {
                        r = fail(c->ret_error, -EINVAL, c->path, field,
                                 "%s: must be 1-%u characters of printable ASCII", key, PROVIDER_PARAM_VALUE_MAX);
                        break;
                }
                params[i].key = strdup(key);
                params[i].value = strdup(s);
                i++;
                if (!params[i - 1].key || !params[i - 1].value) {
                        r = fail(c->ret_error, -ENOMEM, c->path, field, "out of memory");
                        break;
                }
        }
        if (r < 0) {
                for (size_t k = 0; k < i; k++) {
                        free(params[k].key);
                        free(params[k].value);
                }
                free(params);
                return r;
        }
        c->p->extra_authorization_params = params;
        c->p->n_extra_authorization_params = n;
        return 0;
}

static int parse_auth_method(ParseContext *c, const char *field, json_object *v) {
        const char *s = NULL;
        char b[72];
        int r = get_string(c, field, v, 64, &s);
        if (r < 0)
                return r;
        OAuthAuthMethod m = oauth_auth_method_from_string(s);
        if (m == _OAUTH_AUTH_INVALID)
                return fail(c->ret_error, -EINVAL, c->path, field,
                            "unknown method \"%s\" (there are client_secret_basic, client_secret_post and none)",
                            printable(s, b));
        c->p->auth_method = m;
        return 0;
}

static int parse_default_tenant(ParseContext *c, const char *field, json_object *v) {
        const char *s = NULL;
        char b[72];
        int r = get_string(c, field, v, 256, &s);
        if (r < 0)
                return r;
        if (!provider_tenant_valid(s))
                return fail(c->ret_error, -EINVAL, c->path, field,
                            "\"%s\" is not a valid tenant (1-%u characters of A-Z, a-z, 0-9, '.', '-')",
                            printable(s, b), PROVIDER_TENANT_MAX);
        return set_string(c, field, s, &c->p->default_tenant);
}

static int parse_docs(ParseContext *c, const char *field, json_object *v) {
        if (!json_object_is_type(v, json_type_array))
                return fail(c->ret_error, -EINVAL, c->path, field, "must be an array of https URLs");
        size_t n = json_object_array_length(v);
        if (n > PROVIDER_DOCS_MAX)
                return fail(c->ret_error, -EINVAL, c->path, field, "more than %u URLs", PROVIDER_DOCS_MAX);
        char **docs = calloc(n + 1, sizeof *docs);
        if (!docs)
                return fail(c->ret_error, -ENOMEM, c->path, field, "out of memory");
        int r = 0;
        for (size_t i = 0; i < n && r >= 0; i++) {
                json_object *e = json_object_array_get_idx(v, i);
                const char *s = NULL, *rest;
                r = get_string(c, field, e, OAUTH_URL_MAX, &s);
                if (r < 0)
                        break;
                /* Links for people: https, whatever the loopback opt-in; unlike
                 * endpoints they may point into a page (#fragment). */
                bool ok = (rest = startswith(s, "https://")) && *rest && !strchr("/?#", *rest);
                for (const char *q = s; ok && *q; q++)
                        ok = (unsigned char) *q > 0x20 && (unsigned char) *q < 0x7f;
                if (!ok) {
                        r = fail(c->ret_error, -EINVAL, c->path, field, "element %zu: must be an https URL", i);
                        break;
                }
                docs[i] = strdup(s);
                if (!docs[i])
                        r = fail(c->ret_error, -ENOMEM, c->path, field, "out of memory");
        }
        if (r < 0) {
                for (size_t i = 0; i < n; i++)
                        free(docs[i]);
                free(docs);
                return r;
        }
        c->p->docs = docs;
        c->p->n_docs = n;
        return 0;
}

typedef int (*FieldParser)(ParseContext *c, const char *field, json_object *v);

static const struct {
        const char *name;
        FieldParser parse;
        bool required;
} field_table[] = {
        { "name", parse_name, true },
        { "description", parse_description, true },
        { "issuer", parse_issuer, false },
        { "authorization_endpoint", parse_authorization_endpoint, false },
        { "token_endpoint", parse_token_endpoint, false },
        { "device_authorization_endpoint", parse_device_authorization_endpoint, false },
        { "revocation_endpoint", parse_revocation_endpoint, false },
        { "discovery", parse_discovery, true },
        { "flows", parse_flows, true },
        { "default_scopes", parse_default_scopes, false },
        { "offline_access_scope", parse_offline_access_scope, false },
        { "prompt_consent", parse_prompt_consent, false },
        { "extra_authorization_params", parse_extra_authorization_params, false },
        { "pkce", parse_pkce, false },
        { "notes", parse_notes, false },
        { "auth_method", parse_auth_method, false },
        { "tenant", parse_tenant, false },
        { "default_tenant", parse_default_tenant, false },
        { "docs", parse_docs, false },
};

/* The rules that join fields. */
static int check_across_fields(ParseContext *c, json_object *root) {
        ProviderPreset *p = c->p;

        for (size_t i = 0; i < ELEMENTSOF(field_table); i++)
                if (field_table[i].required && !json_object_object_get_ex(root, field_table[i].name, NULL))
                        return fail(c->ret_error, -EINVAL, c->path, field_table[i].name, "required");

        if (c->tenant_field && !p->tenant)
                return fail(c->ret_error, -EINVAL, c->path, c->tenant_field,
                            "contains {tenant}, but \"tenant\" is not true");
        if (p->tenant && !c->tenant_field)
                return fail(c->ret_error, -EINVAL, c->path, "tenant", "is true, but no URL contains {tenant}");
        if (p->default_tenant && !p->tenant)
                return fail(c->ret_error, -EINVAL, c->path, "default_tenant", "only with \"tenant\": true");

        if (!p->discovery) {
                if (!p->token_endpoint)
                        return fail(c->ret_error, -EINVAL, c->path, "token_endpoint",
                                    "required when discovery is false");
                if ((p->flows & PROVIDER_FLOW_DEVICE) && !p->device_authorization_endpoint)
                        return fail(c->ret_error, -EINVAL, c->path, "device_authorization_endpoint",
                                    "required for the device flow when discovery is false");
                if ((p->flows & PROVIDER_FLOW_AUTH_CODE) && !p->authorization_endpoint)
                        return fail(c->ret_error, -EINVAL, c->path, "authorization_endpoint",
                                    "required for the auth-code flow when discovery is false");
        }

        if (!(p->flows & PROVIDER_FLOW_AUTH_CODE)) {
                if (p->prompt_consent)
                        return fail(c->ret_error, -EINVAL, c->path, "prompt_consent",
                                    "only applies to the auth-code flow, which \"flows\" does not list");
                if (p->n_extra_authorization_params > 0)
                        return fail(c->ret_error, -EINVAL, c->path, "extra_authorization_params",
                                    "only apply to the auth-code flow, which \"flows\" does not list");
        }
        return 0;
}

ProviderPreset *provider_preset_free(ProviderPreset *p) {
        if (!p)
                return NULL;
        free(p->path);
        free(p->name);
        free(p->description);
        free(p->issuer);
        free(p->authorization_endpoint);
        free(p->token_endpoint);
        free(p->device_authorization_endpoint);
        free(p->revocation_endpoint);
        scope_set_done(&p->default_scopes);
        for (size_t i = 0; i < p->n_extra_authorization_params; i++) {
                free(p->extra_authorization_params[i].key);
                free(p->extra_authorization_params[i].value);
        }
        free(p->extra_authorization_params);
        free(p->notes);
        free(p->default_tenant);
        for (size_t i = 0; i < p->n_docs; i++)
                free(p->docs[i]);
        free(p->docs);
        return mfree(p);
}


int provider_preset_parse(const char *path, const char *text, size_t len, bool allow_insecure_loopback,
                          ProviderPreset **ret, char **ret_error) {
        _cleanup_provider_preset_ ProviderPreset *p = NULL;
        _cleanup_(json_object_putp) json_object *root = NULL;
        char b[72];
        int r;

        path = path ?: "(preset)";
        if (len > PROVIDER_FILE_MAX)
                return fail(ret_error, -EFBIG, path, NULL, "%zu bytes, over the limit of %u", len, PROVIDER_FILE_MAX);
        if (!text || len == 0)
                return fail(ret_error, -EINVAL, path, NULL, "empty file");
        if (memchr(text, 0, len))
                return fail(ret_error, -EINVAL, path, NULL, "contains a NUL byte");

        json_tokener *tok = json_tokener_new_ex(PROVIDER_JSON_DEPTH);
        if (!tok)
                return fail(ret_error, -ENOMEM, path, NULL, "out of memory");
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
        root = json_tokener_parse_ex(tok, text, (int) len);
        enum json_tokener_error jerr = json_tokener_get_error(tok);
        size_t end = json_tokener_get_parse_end(tok);
        json_tokener_free(tok);
        if (!root || jerr != json_tokener_success) {
                const char *why = jerr == json_tokener_continue ? "unexpected end of file" : json_tokener_error_desc(jerr);
                return fail(ret_error, -EINVAL, path, NULL, "line %u: invalid JSON: %s", line_of(text, len, end), why);
        }
        for (size_t i = end; i < len; i++)
                if (!strchr(" \t\r\n", text[i]))
                        return fail(ret_error, -EINVAL, path, NULL, "line %u: invalid JSON: text after the object",
                                    line_of(text, len, i));
        if (!json_object_is_type(root, json_type_object))
                return fail(ret_error, -EINVAL, path, NULL, "must be a JSON object");
        r = scan_duplicates(path, text, len, ret_error);
        if (r < 0)
                return r;

        p = calloc(1, sizeof *p);
        if (!p || !(p->path = strdup(path)))
                return fail(ret_error, -ENOMEM, path, NULL, "out of memory");
        p->pkce = true;
        p->auth_method = OAUTH_AUTH_CLIENT_SECRET_BASIC;

        ParseContext c = {
                .path = path,
                .allow_insecure_loopback = allow_insecure_loopback,
                .p = p,
                .ret_error = ret_error,
        };
        /* Unknown fields first: a misspelt field would otherwise show up as a
         * missing one. */
        json_object_object_foreach(root, key, val) {
                (void) val;
                bool known = false;
                for (size_t i = 0; i < ELEMENTSOF(field_table) && !known; i++)
                        known = streq(key, field_table[i].name);
                if (!known)
                        return fail(ret_error, -EINVAL, path, printable(key, b), "unknown field");
        }
        /* In table order, so that the first error is the same whatever the
         * order in the file. */
        for (size_t i = 0; i < ELEMENTSOF(field_table); i++) {
                json_object *v;
                if (!json_object_object_get_ex(root, field_table[i].name, &v))
                        continue;
                r = field_table[i].parse(&c, field_table[i].name, v);
                if (r < 0)
                        return r;
        }
        r = check_across_fields(&c, root);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(p);
        return 0;
}

/* ---- loading ---- */

char **provider_dirs_free(char **dirs) {
        for (size_t i = 0; dirs && dirs[i]; i++)
                free(dirs[i]);
        return mfree(dirs);
}

int provider_default_dirs(const char *system_dir, char ***ret) {
        const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
        char **dirs = calloc(3, sizeof *dirs);
        size_t n = 0;
        int r = 0;

        if (!dirs)
                return -ENOMEM;
        /* XDG Base Directory: a relative XDG_CONFIG_HOME is invalid and ignored. */
        if (xdg && xdg[0] == '/')
                r = asprintf(&dirs[n++], "%s/tokend/providers", xdg);
        else if (home && home[0] == '/')
                r = asprintf(&dirs[n++], "%s/.config/tokend/providers", home);
        if (r < 0) {
                dirs[--n] = NULL;
                provider_dirs_free(dirs);
                return -ENOMEM;
        }
        if (system_dir && !(dirs[n++] = strdup(system_dir))) {
                provider_dirs_free(dirs);
                return -ENOMEM;
        }
        *ret = dirs;
        return 0;
}

int provider_preset_load(const char *name, const char *const *dirs, bool allow_insecure_loopback,
                         ProviderPreset **ret, char **ret_error) {
        char b[72];
        int r;

        if (!provider_name_valid(name))
                return fail(ret_error, -EINVAL, "provider", NULL,
                            "\"%s\" is not a valid preset name (1-%u characters of a-z, 0-9 and '-')",
                            printable(name, b), PROVIDER_NAME_MAX);

        for (size_t i = 0; dirs && dirs[i]; i++) {
                if (isempty(dirs[i]))
                        continue;
                _cleanup_free_ char *path = NULL, *text = NULL;
                size_t len;
                if (asprintf(&path, "%s/%s.json", dirs[i], name) < 0)
                        return fail(ret_error, -ENOMEM, "provider", NULL, "out of memory");
                r = read_file_full(path, PROVIDER_FILE_MAX, &text, &len);
                if (r == -ENOENT || r == -ENOTDIR)
                        continue;
                if (r == -EFBIG)
                        return fail(ret_error, r, path, NULL, "over the limit of %u bytes", PROVIDER_FILE_MAX);
                if (r == -EBADF)
                        return fail(ret_error, -EINVAL, path, NULL, "not a regular file");
                if (r < 0)
                        return fail(ret_error, r, path, NULL, "cannot read: %s", strerror(-r));

                _cleanup_provider_preset_ ProviderPreset *p = NULL;
                r = provider_preset_parse(path, text, len, allow_insecure_loopback, &p, ret_error);
                if (r < 0)
                        return r;
                if (!streq(p->name, name))
                        return fail(ret_error, -EINVAL, path, "name", "is \"%s\", but the file is %s.json", p->name,
                                    name);
                *ret = TAKE_PTR(p);
                return 0;
        }

        /* List where it looked, so that the user knows where to put one. */
        _cleanup_free_ char *where = strdup("");
        for (size_t i = 0; where && dirs && dirs[i]; i++) {
                char *n = NULL;
                if (asprintf(&n, "%s%s%s", where, *where ? ", " : "", dirs[i]) < 0)
                        n = NULL;
                free(where);
                where = n;
        }
        if (!where)
                return fail(ret_error, -ENOMEM, "provider", NULL, "out of memory");
        return fail(ret_error, -ENOENT, "provider", NULL, "no preset \"%s\" (looked for %s.json in: %s)", name, name,
                    *where ? where : "no directories");
}

/* ---- placeholders ---- */

/* The URL fields a placeholder may appear in, with their names. */
#define URL_FIELDS(p)                                                          \
        {                                                                      \
                { "issuer", &(p)->issuer },                                    \
                { "authorization_endpoint", &(p)->authorization_endpoint },    \
                { "token_endpoint", &(p)->token_endpoint },                    \
                { "device_authorization_endpoint", &(p)->device_authorization_endpoint }, \
                { "revocation_endpoint", &(p)->revocation_endpoint },          \
        }

typedef struct UrlField {
        const char *name;
        char **value;
} UrlField;

int provider_preset_expand_tenant(ProviderPreset *p, const char *tenant, char **ret_error) {
        UrlField fields[] = URL_FIELDS(p);
        char *out[ELEMENTSOF(fields)] = {};
        char b[72];
        int r = 0;

        if (!p->tenant) {
                if (tenant)
                        return fail(ret_error, -EINVAL, p->path, "tenant",
                                    "%s has no tenant in its URLs; a tenant cannot be given", p->name);
                return 0;
        }
        const char *t = tenant ?: p->default_tenant;
        if (!t)
                return fail(ret_error, -EINVAL, p->path, "tenant",
                            "the URLs contain {tenant}, and there is no default_tenant: a tenant must be given");
        if (!provider_tenant_valid(t))
                return fail(ret_error, -EINVAL, p->path, "tenant",
                            "\"%s\" is not a valid tenant (1-%u characters of A-Z, a-z, 0-9, '.', '-')",
                            printable(t, b), PROVIDER_TENANT_MAX);

        for (size_t i = 0; i < ELEMENTSOF(fields); i++) {
                if (!*fields[i].value)
                        continue;
                out[i] = replace_all(*fields[i].value, PLACEHOLDER_TENANT, t);
                if (!out[i]) {
                        r = fail(ret_error, -ENOMEM, p->path, fields[i].name, "out of memory");
                        goto out;
                }
                if (strlen(out[i]) > OAUTH_URL_MAX) {
                        r = fail(ret_error, -EINVAL, p->path, fields[i].name, "longer than %u bytes with the tenant",
                                 OAUTH_URL_MAX);
                        goto out;
                }
        }
        for (size_t i = 0; i < ELEMENTSOF(fields); i++)
                if (out[i]) {
                        free(*fields[i].value);
                        *fields[i].value = TAKE_PTR(out[i]);
                }
        p->tenant = false;
out:
        for (size_t i = 0; i < ELEMENTSOF(fields); i++)
                free(out[i]);
        return r;
}

static bool uses_issuer_placeholder(const ProviderPreset *p) {
        const char *const endpoints[] = {
                p->authorization_endpoint, p->token_endpoint, p->device_authorization_endpoint,
                p->revocation_endpoint,
        };
        for (size_t i = 0; i < ELEMENTSOF(endpoints); i++)
                if (endpoints[i] && startswith(endpoints[i], PLACEHOLDER_ISSUER))
                        return true;
        return false;
}

int provider_preset_set_issuer(ProviderPreset *p, const char *issuer, bool allow_insecure_loopback,
                               char **ret_error) {
        UrlField fields[] = URL_FIELDS(p);
        char *out[ELEMENTSOF(fields)] = {};
        const char *reason;
        int r = 0;

        if (issuer) {
                if (!p->discovery && !uses_issuer_placeholder(p))
                        return fail(ret_error, -EINVAL, p->path, "issuer",
                                    "%s has fixed endpoints and no discovery; an issuer cannot be given", p->name);
                if (oauth_check_url(issuer, allow_insecure_loopback, &reason) < 0)
                        return fail(ret_error, -EINVAL, p->path, "issuer", "%s", reason);
                if (strpbrk(issuer, "?{}"))
                        return fail(ret_error, -EINVAL, p->path, "issuer", "must not contain a query or braces");
        }
        const char *base = issuer ?: p->issuer;
        bool placeholders = uses_issuer_placeholder(p);
        if (placeholders && !base)
                return fail(ret_error, -EINVAL, p->path, "issuer", "required: the endpoints start with {issuer}");
        if (placeholders && strstr(base, PLACEHOLDER_TENANT))
                return fail(ret_error, -EINVAL, p->path, "issuer", "expand {tenant} first");

        /* The issuer without trailing slashes, so that "{issuer}/x" has one. */
        size_t bl = base ? strlen(base) : 0;
        while (bl > 0 && base[bl - 1] == '/')
                bl--;
        for (size_t i = 0; i < ELEMENTSOF(fields); i++) {
                const char *v = *fields[i].value, *rest;
                if (i == 0 && issuer)
                        out[i] = strdup(issuer);
                else if (v && (rest = startswith(v, PLACEHOLDER_ISSUER))) {
                        if (asprintf(&out[i], "%.*s%s", (int) bl, base, rest) < 0)
                                out[i] = NULL;
                        else if (oauth_check_url(out[i], allow_insecure_loopback, &reason) < 0) {
                                r = fail(ret_error, -EINVAL, p->path, fields[i].name, "%s", reason);
                                goto out;
                        }
                } else
                        continue;
                if (!out[i]) {
                        r = fail(ret_error, -ENOMEM, p->path, fields[i].name, "out of memory");
                        goto out;
                }
        }
        for (size_t i = 0; i < ELEMENTSOF(fields); i++)
                if (out[i]) {
                        free(*fields[i].value);
                        *fields[i].value = TAKE_PTR(out[i]);
                }
out:
        for (size_t i = 0; i < ELEMENTSOF(fields); i++)
                free(out[i]);
        return r;
}

int provider_preset_check_complete(const ProviderPreset *p, char **ret_error) {
        UrlField fields[] = URL_FIELDS((ProviderPreset *) p);

        for (size_t i = 0; i < ELEMENTSOF(fields); i++) {
                const char *v = *fields[i].value;
                if (v && strstr(v, PLACEHOLDER_TENANT))
                        return fail(ret_error, -EINVAL, p->path, "tenant", "not expanded: %s still contains {tenant}",
                                    fields[i].name);
                if (v && strstr(v, PLACEHOLDER_ISSUER))
                        return fail(ret_error, -EINVAL, p->path, "issuer",
                                    "required: %s starts with {issuer}, and no issuer was given", fields[i].name);
        }
        if (p->discovery && !p->issuer)
                return fail(ret_error, -EINVAL, p->path, "issuer",
                            "required: %s finds its endpoints by discovery from an issuer you name", p->name);
        return 0;
}
