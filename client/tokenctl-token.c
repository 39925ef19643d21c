/* SPDX-License-Identifier: MIT */
/* client/tokenctl-token.c: see tokenctl-token.h. Tokens come through
 * libtokend (linked statically), as for any agent. The token travels from
 * tokend's reply to stdout (or to the helper that passes it on) and nowhere
 * else: the replies are released with json_object_put_erase(), and no
 * message ever shows a token. */
#include <getopt.h>
#include <inttypes.h>
#include <time.h>

#include "common/util.h"
#include "libtokend-internal.h"
#include "tokenctl-token.h"
#include "tokenctl.h"
#include "tokend.h"
#include "varlink.h"

/* Explains a failed tokend_get_token() as tokenctl explains every error,
 * and returns the exit code. */
static int report_library_error(tokend_client *c, int code, const char *method, const char *name) {
        const tokend_error *e = tokend_client_error(c);
        const char *error = tokend_error_name(e);
        if (error) {
                /* The daemon answered with an error: the same words as for any call. */
                _cleanup_(json_object_putp) json_object *p = json_tokener_parse(tokend_error_parameters_json(e));
                return tokenctl_report_error(method, error, p, name);
        }
        switch (code) {
        case TOKEND_ERR_NOT_REACHABLE:
                fprintf(stderr, "tokenctl: cannot connect to tokend at %s: %s.\n"
                        "Is it running? Try 'systemctl --user start tokend.socket'.\n",
                        strna(tokend_client_socket_path(c)), strna(tokend_error_reason(e)));
                return EXIT_NO_DAEMON;
        case TOKEND_ERR_DISCONNECTED:
                fprintf(stderr, "tokenctl: talking to tokend failed: %s.\n", tokend_strerror(code));
                return EXIT_NO_DAEMON;
        case TOKEND_ERR_INVALID_ARGUMENT:
                fprintf(stderr, "tokenctl: %s.\n", tokend_strerror(code));
                return EXIT_USAGE;
        default:
                fprintf(stderr, "tokenctl: talking to tokend failed: %s.\n", tokend_strerror(code));
                return EXIT_FAILURE_;
        }
}

/* The reply as tokend sent it: token, token_type, expires_at, scopes. */
static json_object *token_to_json(const tokend_token *t) {
        json_object *o = json_object_new_object(), *a = json_object_new_array();
        if (!o || !a) {
                json_object_put(o);
                json_object_put(a);
                return NULL;
        }
        json_object_object_add(o, "token", json_object_new_string(tokend_token_value(t)));
        json_object_object_add(o, "token_type", json_object_new_string(strempty(tokend_token_type(t))));
        json_object_object_add(o, "expires_at", json_object_new_int64(tokend_token_expires_at(t)));
        for (const char *const *s = tokend_token_scopes(t); s && *s; s++)
                json_object_array_add(a, json_object_new_string(*s));
        json_object_object_add(o, "scopes", a);
        return o;
}

int tokenctl_fetch_token(const char *name, json_object *scopes, const char *resource, int64_t min_ttl,
                         json_object **ret_reply) {
        /* The owner (whom the manager interface answers) gets its own token
         * without policy or consent. Anyone else, e.g. an agent running
         * tokenctl in its own unit, is an agent: its policy applies, and in
         * ask mode the call waits for the owner's consent (tokend bounds that
         * wait: --consent-timeout). tokend tells which from the kernel, in the
         * same call: io.tokend.agent.GetToken with "as_owner". One connection
         * and one round trip, because "tokenctl token" runs once per tool
         * call of an agent. (Asking the manager interface first and falling
         * back would cost an agent a refusal in the audit trail every time.)
         * Not knowing which, the call gets the agent's timeout. */
        size_t n = scopes ? json_object_array_length(scopes) : 0;
        _cleanup_free_ const char **sv = calloc(n + 1, sizeof *sv);
        if (!sv)
                return EXIT_FAILURE_;
        for (size_t i = 0; i < n; i++)
                sv[i] = json_object_get_string(json_object_array_get_idx(scopes, i));

        _cleanup_(varlink_client_freep) VarlinkClient *conn = NULL;
        int r = tokenctl_connect(&conn);
        if (r < 0)
                return -r;
        _cleanup_free_ char *path = NULL;
        if (tokenctl_socket_path(&path) < 0)
                return EXIT_FAILURE_; /* found above: only out of memory */

        tokend_client *c = NULL;
        int code = tokend_client_new(path, &c);
        if (code < 0) {
                fprintf(stderr, "tokenctl: %s.\n", tokend_strerror(code));
                return EXIT_FAILURE_;
        }
        tokend_client_adopt_connection(c, TAKE_PTR(conn));
        (void) tokend_client_set_timeout(c, AGENT_TOKEN_TIMEOUT_USEC);
        tokend_token *t = NULL;
        code = tokend_get_token(c, name, n > 0 ? sv : NULL, resource, min_ttl >= 0 ? min_ttl : TOKEND_MIN_TTL_DEFAULT,
                                TOKEND_FLAG_AS_OWNER, &t);
        if (code < 0)
                r = report_library_error(c, code, "io.tokend.agent.GetToken", name);
        else if (!(*ret_reply = token_to_json(t)))
                r = EXIT_FAILURE_;
        else
                r = EXIT_OK;
        tokend_token_free(t);
        tokend_client_free(c);
        return r;
}

int tokenctl_token_usable(json_object *reply, const char **ret_token, int64_t *ret_expires_at) {
        json_object *v;
        if (!json_object_object_get_ex(reply, "token", &v) || !json_object_is_type(v, json_type_string)) {
                fprintf(stderr, "tokenctl: tokend's reply holds no token.\n");
                return EXIT_FAILURE_;
        }
        /* The length json-c knows, not strlen(): a "\u0000" would cut it short. */
        const char *token = json_object_get_string(v);
        size_t l = (size_t) json_object_get_string_len(v);
        if (l == 0 || l > TOKEN_LEN_MAX) {
                fprintf(stderr, "tokenctl: tokend's token is empty or longer than %u bytes.\n", TOKEN_LEN_MAX);
                return EXIT_FAILURE_;
        }
        for (size_t i = 0; i < l; i++)
                if ((unsigned char) token[i] <= ' ' || (unsigned char) token[i] >= 0x7f) {
                        fprintf(stderr, "tokenctl: tokend's token holds a blank, control or non-ASCII character, "
                                "so it is not passed on.\n");
                        return EXIT_FAILURE_;
                }
        int64_t expires_at = json_int(reply, "expires_at", -1);
        if (expires_at <= (int64_t) time(NULL)) {
                fprintf(stderr, "tokenctl: tokend's token has no expiry, or has expired.\n");
                return EXIT_FAILURE_;
        }
        *ret_token = token;
        *ret_expires_at = expires_at;
        return EXIT_OK;
}

bool tokenctl_credential_name_valid(const char *verb, const char *name) {
        if (strlen(name) > CREDENTIAL_NAME_MAX) {
                fprintf(stderr, "tokenctl %s: a credential name has at most %u characters.\n", verb,
                        CREDENTIAL_NAME_MAX);
                return false;
        }
        return true;
}

bool tokenctl_resource_valid(const char *verb, const char *resource) {
        if (strlen(resource) > RESOURCE_LEN_MAX) {
                fprintf(stderr, "tokenctl %s: --resource takes at most %u characters.\n", verb, RESOURCE_LEN_MAX);
                return false;
        }
        return true;
}

int tokenctl_parse_min_ttl(const char *verb, const char *arg, int64_t *ret) {
        char *end;
        errno = 0;
        long long v = strtoll(arg, &end, 10);
        if (errno || end == arg || *end || v < 0) {
                fprintf(stderr, "tokenctl %s: --min-ttl takes a number of seconds.\n", verb);
                return -EINVAL;
        }
        *ret = v;
        return 0;
}

int tokenctl_token_request_option(const char *verb, int c, char *arg, TokenRequestOptions *o) {
        switch (c) {
        case TOKEN_ARG_SCOPE:
                return tokenctl_add_scopes(o->scopes, arg) < 0 ? -1 : 1;
        case TOKEN_ARG_RESOURCE:
                if (!tokenctl_resource_valid(verb, arg))
                        return -1;
                o->resource = arg;
                return 1;
        case TOKEN_ARG_MIN_TTL:
                return tokenctl_parse_min_ttl(verb, arg, &o->min_ttl) < 0 ? -1 : 1;
        default:
                return 0;
        }
}

int tokenctl_token(int argc, char *argv[]) {
        static const struct option options[] = {
                TOKEN_REQUEST_OPTIONS,
                {},
        };
        _cleanup_(json_object_putp) json_object *scopes = json_object_new_array();
        TokenRequestOptions o = { .scopes = scopes, .min_ttl = -1 };
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0)
                if (tokenctl_token_request_option("token", c, optarg, &o) <= 0)
                        return EXIT_USAGE;
        if (optind != argc - 1) {
                fprintf(stderr, "tokenctl token: usage: tokenctl token NAME [--scope S]... [--resource URI] [--min-ttl SECONDS]\n");
                return EXIT_USAGE;
        }
        const char *name = argv[optind];
        if (!tokenctl_credential_name_valid("token", name))
                return EXIT_USAGE;

        _cleanup_(json_object_put_erasep) json_object *reply = NULL;
        int r = tokenctl_fetch_token(name, o.scopes, o.resource, o.min_ttl, &reply);
        if (r != EXIT_OK)
                return r;
        if (arg_json)
                printf("%s\n", json_object_to_json_string_ext(reply, JSON_C_TO_STRING_PLAIN));
        else
                printf("%s\n", strempty(json_str(reply, "token")));
        return fflush(stdout) == 0 ? EXIT_OK : EXIT_FAILURE_;
}
