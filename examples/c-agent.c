/* SPDX-License-Identifier: MIT */
/* examples/c-agent.c: an agent in C that gets its OAuth access tokens from
 * tokend through libtokend (lib/tokend.h).
 *
 *   c-agent [--socket PATH] [--scope S]... [--min-ttl SECS] CREDENTIAL
 *       One token (tokend_get_token()); prints one line about it.
 *   c-agent [options] --subscribe N CREDENTIAL
 *       A subscription (tokend_subscribe()): tokend pushes a fresh token
 *       before the previous one runs low. Prints one line per token and
 *       exits after N tokens.
 *
 * A token line looks like
 *   token fp=3fa2c1d04e5b expires_at=1795894812 (19:40:12Z) ttl=19s type=Bearer scopes=read,write
 * (with --subscribe: "token #2 fp=..."). fp is the first 12 hex digits of the
 * token's SHA-256, as on tokend's audit trail. The token itself is never
 * printed: a real agent would hand tokend_token_value() to its HTTP client.
 *
 * Exit status, as tokenctl's: 0 ok, 1 other failure, 2 usage, 3 tokend
 * unreachable, 4 no such credential, 5 re-authentication needed, 6 provider
 * unavailable, 7 request refused, 8 permission denied.
 *
 * Build it outside the tree (SHA-256 for the fingerprint comes from OpenSSL):
 *   cc -o c-agent c-agent.c $(pkg-config --cflags --libs libtokend libcrypto)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* getopt_long(), gmtime_r() */
#endif
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <tokend.h>

#define PROG "c-agent"

enum {
        STATUS_OK = 0,
        STATUS_FAILURE = 1,
        STATUS_USAGE = 2,
        STATUS_UNREACHABLE = 3,
        STATUS_NO_SUCH = 4,
        STATUS_REAUTH = 5,
        STATUS_UNAVAILABLE = 6,
        STATUS_REFUSED = 7,
        STATUS_DENIED = 8,
};

/* A stream promises the next token before the previous one runs out; when
 * none came this long after the previous one expired, tokend has stalled. */
#define STREAM_GRACE_SECONDS 30

/* Strings from the daemon are shown with anything unprintable replaced. */
static void put_safe(FILE *f, const char *s) {
        for (const unsigned char *p = (const unsigned char *) (s ? s : "?"); *p; p++)
                fputc(*p >= 0x20 && *p != 0x7f ? *p : '?', f);
}

/* First 12 hex digits of SHA-256 of the token. */
static void fingerprint(const char *token, char out[13]) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned n = 0;
        if (!EVP_Digest(token, strlen(token), md, &n, EVP_sha256(), NULL) || n < 6) {
                strcpy(out, "????????????");
                return;
        }
        for (unsigned i = 0; i < 6; i++)
                snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static void print_token(const tokend_token *t, unsigned number) {
        char fp[13], when[16] = "?";
        int64_t expires_at = tokend_token_expires_at(t);
        time_t e = (time_t) expires_at;
        struct tm tm;
        if (gmtime_r(&e, &tm))
                strftime(when, sizeof when, "%H:%M:%SZ", &tm);
        fingerprint(tokend_token_value(t), fp);

        if (number > 0)
                printf("token #%u ", number);
        else
                printf("token ");
        printf("fp=%s expires_at=%" PRId64 " (%s) ttl=%" PRId64 "s type=", fp, expires_at, when,
               expires_at - (int64_t) time(NULL));
        put_safe(stdout, tokend_token_type(t));
        printf(" scopes=");
        const char *const *scopes = tokend_token_scopes(t);
        for (size_t i = 0; scopes[i]; i++) {
                if (i > 0)
                        putchar(',');
                put_safe(stdout, scopes[i]);
        }
        putchar('\n');
        fflush(stdout);
}

/* Prints why a call failed and returns the exit status for it. */
static int report(const tokend_error *e, int code, const char *credential) {
        const char *reason = tokend_error_reason(e);
        const char *cred = tokend_error_parameter(e, "credential");
        if (!cred)
                cred = credential;
        int status = STATUS_FAILURE;

        fprintf(stderr, PROG ": ");
        switch (code) {
        case TOKEND_ERR_NOT_REACHABLE:
                fprintf(stderr, "cannot reach tokend");
                status = STATUS_UNREACHABLE;
                break;
        case TOKEND_ERR_INVALID_ARGUMENT:
                fprintf(stderr, "invalid arguments (a name, scope or resource too long or malformed)");
                status = STATUS_USAGE;
                break;
        case TOKEND_ERR_NO_SUCH_CREDENTIAL:
                fprintf(stderr, "tokend holds no credential named '");
                put_safe(stderr, cred);
                fprintf(stderr, "' (see 'tokenctl list')");
                reason = NULL;
                status = STATUS_NO_SUCH;
                break;
        case TOKEND_ERR_REAUTHENTICATION_REQUIRED:
                fprintf(stderr, "credential '");
                put_safe(stderr, cred);
                fprintf(stderr, "' needs a new login: the provider rejected its refresh token; retrying does not help");
                status = STATUS_REAUTH;
                break;
        case TOKEND_ERR_PROVIDER_UNAVAILABLE: {
                int64_t after = tokend_error_retry_after(e);
                fprintf(stderr, "the provider of '");
                put_safe(stderr, cred);
                fprintf(stderr, "' is unavailable");
                if (reason) {
                        fprintf(stderr, ": ");
                        put_safe(stderr, reason);
                        reason = NULL;
                }
                if (after >= 0)
                        fprintf(stderr, "; retry in %" PRId64 " s", after);
                else
                        fprintf(stderr, "; retry later");
                status = STATUS_UNAVAILABLE;
                break;
        }
        case TOKEND_ERR_SCOPE_NOT_ALLOWED:
                /* The reason names the scopes and what is allowed. */
                fprintf(stderr, "scope(s) not allowed with credential '");
                put_safe(stderr, cred);
                fprintf(stderr, "'");
                status = STATUS_REFUSED;
                break;
        case TOKEND_ERR_LIFETIME_TOO_SHORT:
                fprintf(stderr, "the provider issues tokens for '");
                put_safe(stderr, cred);
                fprintf(stderr, "' that live shorter than --min-ttl; ask for less (details: ");
                put_safe(stderr, tokend_error_parameters_json(e));
                fprintf(stderr, ")");
                status = STATUS_REFUSED;
                break;
        case TOKEND_ERR_POLICY_DENIED:
                fprintf(stderr, "tokend's policy refuses this process the credential '");
                put_safe(stderr, cred);
                fprintf(stderr, "'; asking again does not help, the owner must change the policy");
                status = STATUS_DENIED;
                break;
        case TOKEND_ERR_CONSENT_REQUIRED: {
                const char *request = tokend_error_parameter(e, "request");
                fprintf(stderr, "credential '");
                put_safe(stderr, cred);
                fprintf(stderr, "' needs the owner's consent, and none came");
                if (request) {
                        fprintf(stderr, " (the owner can approve it with 'tokenctl approve ");
                        put_safe(stderr, request);
                        fprintf(stderr, "' while it waits)");
                }
                status = STATUS_REFUSED;
                break;
        }
        case TOKEND_ERR_CONSENT_DENIED:
                fprintf(stderr, "the owner denied request ");
                put_safe(stderr, tokend_error_parameter(e, "request"));
                fprintf(stderr, " for credential '");
                put_safe(stderr, cred);
                fprintf(stderr, "'");
                status = STATUS_DENIED;
                break;
        case TOKEND_ERR_CONSENT_ENDED: {
                const char *grant = tokend_error_parameter(e, "grant");
                fprintf(stderr, "the consent this stream ran under ended");
                if (grant) {
                        fprintf(stderr, " (grant ");
                        put_safe(stderr, grant);
                        fprintf(stderr, ")");
                }
                fprintf(stderr, "; subscribing again asks the owner again");
                status = STATUS_DENIED;
                break;
        }
        case TOKEND_ERR_TOO_MANY_SUBSCRIPTIONS:
                fprintf(stderr, "too many subscriptions are open on tokend; close one first");
                status = STATUS_REFUSED;
                break;
        case TOKEND_ERR_STORE_UNAVAILABLE:
                fprintf(stderr, "tokend withheld the token because it cannot save secrets; it keeps retrying");
                break;
        case TOKEND_ERR_CALLER_GONE:
                fprintf(stderr, "tokend could not establish this process's identity any more");
                break;
        case TOKEND_ERR_PERMISSION_DENIED:
                fprintf(stderr, "permission denied: this tokend serves another user");
                status = STATUS_DENIED;
                break;
        case TOKEND_ERR_INVALID_PARAMETER:
                fprintf(stderr, "tokend rejected parameter '");
                put_safe(stderr, tokend_error_parameter(e, "parameter"));
                fprintf(stderr, "'");
                status = STATUS_REFUSED;
                break;
        case TOKEND_ERR_NOT_SUPPORTED:
                fprintf(stderr, "this tokend is too old for this call: upgrade and restart it");
                break;
        default:
                /* NO_MEMORY, DISCONNECTED, TIMEOUT, PROTOCOL, DAEMON, and codes
                 * newer than this program: the library describes them all. */
                fprintf(stderr, "%s", tokend_strerror(code));
                if (tokend_error_name(e)) {
                        fprintf(stderr, " (");
                        put_safe(stderr, tokend_error_name(e));
                        fprintf(stderr, ")");
                }
                break;
        }
        if (reason) {
                fprintf(stderr, ": ");
                put_safe(stderr, reason);
        }
        fprintf(stderr, ".\n");
        return status;
}

static int get_once(tokend_client *c, const char *credential, const char *const *scopes, int64_t min_ttl) {
        tokend_token *t = NULL;
        int r = tokend_get_token(c, credential, scopes, NULL, min_ttl, 0, &t);
        if (r < 0)
                return report(tokend_client_error(c), r, credential);
        print_token(t, 0);
        tokend_token_free(t); /* wipes the token */
        return STATUS_OK;
}

static int subscribe(tokend_client *c, const char *credential, const char *const *scopes, int64_t min_ttl,
                     unsigned wanted) {
        tokend_subscription *s = NULL;
        /* No callback: events are taken one by one with tokend_subscription_next().
         * An event loop would poll tokend_subscription_fd() instead. */
        int r = tokend_subscribe(c, credential, scopes, NULL, min_ttl, 0, NULL, NULL, &s);
        if (r < 0)
                return report(tokend_client_error(c), r, credential);

        /* The first token may wait for the owner's consent, which tokend
         * bounds itself (--consent-timeout). */
        uint64_t timeout = TOKEND_INFINITY;
        unsigned got = 0;
        int status = STATUS_OK;
        while (got < wanted) {
                r = tokend_subscription_next(s, timeout);
                if (r < 0) {
                        /* The stream ended with an error reply (or could not reconnect). */
                        if (got > 0)
                                fprintf(stderr, PROG ": the subscription ended after %u token(s).\n", got);
                        status = report(tokend_subscription_error(s), r, credential);
                        break;
                }
                if (r == TOKEND_EVENT_TOKEN) {
                        const tokend_token *t = tokend_subscription_token(s);
                        print_token(t, ++got);
                        int64_t left = tokend_token_expires_at(t) - (int64_t) time(NULL);
                        timeout = (uint64_t) ((left > 0 ? left : 0) + STREAM_GRACE_SECONDS) * UINT64_C(1000000);
                } else if (r == TOKEND_EVENT_DISCONNECTED)
                        /* The library resubscribes by itself; the last token stays
                         * usable until it expires. */
                        fprintf(stderr, PROG ": lost the connection to tokend; resubscribing.\n");
                else if (r == TOKEND_EVENT_NONE) {
                        fprintf(stderr, PROG ": no token from tokend after the last one expired.\n");
                        status = STATUS_FAILURE;
                        break;
                }
        }
        tokend_subscription_free(s); /* hangs up: tokend cancels the stream */
        if (status == STATUS_OK) {
                printf("received %u token(s); unsubscribed\n", got);
                fflush(stdout);
        }
        return status;
}

static int usage(void) {
        fprintf(stderr, "usage: " PROG " [--socket PATH] [--scope S]... [--min-ttl SECS] [--subscribe N] CREDENTIAL\n");
        return STATUS_USAGE;
}

static bool parse_number(const char *s, long long min, long long *ret) {
        char *end;
        long long v = strtoll(s, &end, 10);
        if (end == s || *end || v < min)
                return false;
        *ret = v;
        return true;
}

int main(int argc, char *argv[]) {
        static const struct option options[] = {
                { "socket", required_argument, NULL, 's' },
                { "scope", required_argument, NULL, 'S' },
                { "min-ttl", required_argument, NULL, 'm' },
                { "subscribe", required_argument, NULL, 'n' },
                { "help", no_argument, NULL, 'h' },
                { NULL, 0, NULL, 0 },
        };
        const char *socket_path = NULL; /* NULL: $TOKEND_SOCKET, else $XDG_RUNTIME_DIR/tokend/socket */
        const char *scopes[TOKEND_SCOPES_MAX + 1] = { NULL };
        size_t n_scopes = 0;
        int64_t min_ttl = TOKEND_MIN_TTL_DEFAULT;
        long long subscribe_count = 0, v;
        int c;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
                switch (c) {
                case 's':
                        socket_path = optarg;
                        break;
                case 'S':
                        if (n_scopes >= TOKEND_SCOPES_MAX) {
                                fprintf(stderr, PROG ": at most %u scopes.\n", TOKEND_SCOPES_MAX);
                                return STATUS_USAGE;
                        }
                        scopes[n_scopes++] = optarg;
                        break;
                case 'm':
                        if (!parse_number(optarg, 0, &v)) {
                                fprintf(stderr, PROG ": --min-ttl takes a number of seconds.\n");
                                return STATUS_USAGE;
                        }
                        min_ttl = v;
                        break;
                case 'n':
                        if (!parse_number(optarg, 1, &v) || v > 1000000) {
                                fprintf(stderr, PROG ": --subscribe takes a number of tokens of at least 1.\n");
                                return STATUS_USAGE;
                        }
                        subscribe_count = v;
                        break;
                case 'h':
                        usage();
                        return STATUS_OK;
                default:
                        return usage();
                }
        }
        if (optind != argc - 1)
                return usage();
        const char *credential = argv[optind];

        tokend_client *client = NULL;
        int r = tokend_client_new(socket_path, &client);
        if (r < 0) {
                if (r == TOKEND_ERR_NOT_REACHABLE) {
                        fprintf(stderr, PROG ": cannot find tokend: set $TOKEND_SOCKET or $XDG_RUNTIME_DIR, "
                                "or pass --socket.\n");
                        return STATUS_UNREACHABLE;
                }
                fprintf(stderr, PROG ": %s.\n", tokend_strerror(r));
                return r == TOKEND_ERR_INVALID_ARGUMENT ? STATUS_USAGE : STATUS_FAILURE;
        }

        int status = subscribe_count > 0
                ? subscribe(client, credential, scopes, min_ttl, (unsigned) subscribe_count)
                : get_once(client, credential, scopes, min_ttl);
        tokend_client_free(client);
        return status;
}
