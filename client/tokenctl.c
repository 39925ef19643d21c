/* SPDX-License-Identifier: MIT */
/* client/tokenctl.c: the owner's command line tool. One verb table drives
 * both dispatch and help. Secrets come from stdin or files, never argv. */
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>

#include "common/fileio.h"
#include "common/util.h"
#include "tokenctl-audit.h"
#include "tokenctl-consent.h"
#include "tokenctl-credential.h"
#include "tokenctl-exec.h"
#include "tokenctl-token.h"
#include "tokenctl.h"
#include "varlink.h"

#define SECRET_INPUT_MAX (16U * 1024U)

static const char *arg_socket;
bool arg_json;

typedef struct Verb {
        const char *name;
        const char *args;
        const char *help;
        int (*run)(int argc, char *argv[]);
} Verb;

static const Verb verbs[];

int tokenctl_socket_path(char **ret) {
        const char *p = arg_socket ?: getenv("TOKEND_SOCKET");
        if (p) {
                *ret = strdup(p);
                return *ret ? 0 : -ENOMEM;
        }
        const char *rt = getenv("XDG_RUNTIME_DIR");
        if (!rt || rt[0] != '/')
                return -ENXIO;
        return asprintf(ret, "%s/tokend/socket", rt) < 0 ? -ENOMEM : 0;
}

int tokenctl_connect(VarlinkClient **ret) {
        _cleanup_free_ char *path = NULL;
        int r = tokenctl_socket_path(&path);
        if (r < 0) {
                fprintf(stderr, "tokenctl: cannot find tokend: set $XDG_RUNTIME_DIR or $TOKEND_SOCKET, or pass --socket.\n");
                return -EXIT_NO_DAEMON;
        }
        r = varlink_client_connect(path, ret);
        if (r < 0) {
                fprintf(stderr, "tokenctl: cannot connect to tokend at %s: %s.\n"
                        "Is it running? Try 'systemctl --user start tokend.socket'.\n", path, strerror(-r));
                return -EXIT_NO_DAEMON;
        }
        return 0;
}

void tokenctl_print_json(json_object *o, bool pretty) {
        printf("%s\n", json_object_to_json_string_ext(o, pretty ? JSON_C_TO_STRING_PRETTY : JSON_C_TO_STRING_PLAIN));
}

/* The length of the UTF-8 sequence at p that is fine to show, or 0: invalid,
 * overlong, a surrogate, a C1 control, or a bidirectional override (which
 * could make an executable's path read as another's). */
static size_t utf8_printable_len(const unsigned char *p) {
        size_t n;
        if (p[0] >= 0xc2 && p[0] <= 0xdf)
                n = 2;
        else if (p[0] >= 0xe0 && p[0] <= 0xef)
                n = 3;
        else if (p[0] >= 0xf0 && p[0] <= 0xf4)
                n = 4;
        else
                return 0;
        for (size_t i = 1; i < n; i++)
                if (p[i] < 0x80 || p[i] > 0xbf)
                        return 0;
        if ((p[0] == 0xc2 && p[1] < 0xa0) ||                           /* C1 controls */
            (p[0] == 0xe0 && p[1] < 0xa0) || (p[0] == 0xf0 && p[1] < 0x90) || /* overlong */
            (p[0] == 0xed && p[1] > 0x9f) ||                           /* surrogates */
            (p[0] == 0xf4 && p[1] > 0x8f) ||                           /* past U+10FFFF */
            (p[0] == 0xe2 && p[1] == 0x80 && p[2] >= 0xaa && p[2] <= 0xae) || /* LRE..RLO */
            (p[0] == 0xe2 && p[1] == 0x81 && p[2] >= 0xa6 && p[2] <= 0xa9))   /* LRI..PDI */
                return 0;
        return n;
}

char *tokenctl_escape(const char *s) {
        size_t l = strlen(s);
        if (l > (SIZE_MAX - 1) / 4)
                return NULL;
        char *r = malloc(l * 4 + 1), *q = r;
        if (!r)
                return NULL;
        for (const unsigned char *p = (const unsigned char *) s; *p;) {
                size_t n = *p >= 0x20 && *p < 0x7f ? 1 : *p >= 0x80 ? utf8_printable_len(p) : 0;
                if (n == 0) {
                        q += sprintf(q, "\\x%02x", *p);
                        p++;
                        continue;
                }
                memcpy(q, p, n);
                q += n;
                p += n;
        }
        *q = 0;
        return r;
}

void tokenctl_print_scopes(FILE *f, json_object *a) {
        for (size_t i = 0; a && json_object_is_type(a, json_type_array) && i < json_object_array_length(a); i++) {
                json_object *v = json_object_array_get_idx(a, i);
                _cleanup_free_ char *e = tokenctl_escape(strempty(json_object_get_string(v)));
                fprintf(f, "%s%s", i ? " " : "", strna(e));
        }
}

void tokenctl_print_escaped(FILE *f, const char *prefix, const char *s) {
        if (!s)
                return;
        _cleanup_free_ char *e = tokenctl_escape(s);
        fprintf(f, "%s%s", prefix, strna(e));
}

/* On PermissionDenied from the manager interface: asks tokend, on a new
 * connection, how it classifies this process, and says why it is refused
 * when that tells. Best effort: says nothing when WhoAmI fails too. */
static void explain_manager_denied(void) {
        _cleanup_(varlink_client_freep) VarlinkClient *c = NULL;
        _cleanup_(json_object_putp) json_object *who = NULL;
        _cleanup_free_ char *path = NULL;
        const char *error = NULL;
        json_object *policy = NULL;

        if (tokenctl_socket_path(&path) < 0 || varlink_client_connect(path, &c) < 0 ||
            varlink_client_call(c, "io.tokend.agent.WhoAmI", NULL, 0, 5 * USEC_PER_SEC, &who, &error, NULL) < 0 ||
            error)
                return;
        if (!json_object_object_get_ex(who, "policy", &policy) || !json_object_is_type(policy, json_type_object))
                return;
        const char *agent = json_str(policy, "name");
        if (agent) {
                _cleanup_free_ char *e = tokenctl_escape(agent),
                                    *file = tokenctl_escape(strna(json_str(policy, "file")));
                fprintf(stderr, "tokend classifies this process as agent '%s' (%s:%" PRId64 ").\n"
                        "Run tokenctl where that agent's selectors do not match (see 'tokenctl whoami' and "
                        "tokend.policy(5)).\n", strna(e), strna(file), json_int(policy, "line", 0));
        } else if (json_int(who, "uid", -1) == (int64_t) getuid())
                fprintf(stderr, "No agent matches this process, so tokend's policy probably failed to load: until it\n"
                        "loads, tokend manages nothing (the failsafe policy). Fix the file named in\n"
                        "'journalctl --user -u tokend', then run 'systemctl --user reload tokend'.\n");
}

int tokenctl_report_error(const char *method, const char *error, json_object *p, const char *name) {
        const char *member = strrchr(error, '.');
        member = member ? member + 1 : error;
        const char *cred = json_str(p, "credential") ?: json_str(p, "name") ?: name ?: "?";
        const char *id = json_str(p, "id") ?: name ?: "?";

        if (streq(member, "NoSuchCredential")) {
                fprintf(stderr, "tokenctl: no credential named '%s'. See 'tokenctl list'.\n", cred);
                return EXIT_NO_SUCH;
        }
        if (streq(member, "ReauthenticationRequired")) {
                fprintf(stderr, "tokenctl: credential '%s' needs a new login: the provider rejected its refresh token "
                        "or its client credentials ('tokenctl list' shows which).\n"
                        "Log in again ('tokenctl login %s ...'), or add a new refresh token with "
                        "'tokenctl add %s --replace ...'.\n", cred, cred, cred);
                return EXIT_REAUTH;
        }
        if (streq(member, "ProviderUnavailable")) {
                int64_t ra = json_int(p, "retry_after", -1);
                fprintf(stderr, "tokenctl: the provider of '%s' is unavailable: %s.", cred, strna(json_str(p, "reason")));
                if (ra >= 0)
                        fprintf(stderr, " Try again in %" PRId64 " s.", ra);
                fputc('\n', stderr);
                return EXIT_UNAVAILABLE;
        }
        if (streq(member, "ScopeNotAllowed")) {
                json_object *allowed = json_array(p, "allowed");
                const char *reason = json_str(p, "reason");
                if (!reason && !allowed) {
                        fprintf(stderr, "tokenctl: credential '%s' does not hold scope(s): ", cred);
                        tokenctl_print_scopes(stderr, json_array(p, "scopes"));
                        fprintf(stderr, ". See 'tokenctl list' for the scopes it holds.\n");
                        return EXIT_REFUSED;
                }
                fprintf(stderr, "tokenctl: scope(s) not allowed with credential '%s': ", cred);
                tokenctl_print_scopes(stderr, json_array(p, "scopes"));
                tokenctl_print_escaped(stderr, ": ", reason);
                fprintf(stderr, ".\n");
                if (allowed && json_object_array_length(allowed) == 0)
                        fprintf(stderr, "No scope at all is allowed with it.\n");
                else if (allowed) {
                        fprintf(stderr, "Allowed: ");
                        tokenctl_print_scopes(stderr, allowed);
                        fprintf(stderr, ". Ask for those only, or for none to get them all.\n");
                }
                return EXIT_REFUSED;
        }
        if (streq(member, "PolicyDenied")) {
                fprintf(stderr, "tokenctl: the policy refuses this request for credential '%s'", cred);
                tokenctl_print_escaped(stderr, ": ", json_str(p, "reason"));
                fprintf(stderr, ".\nAsking again does not help: change the agent's policy (tokend.policy(5)), then "
                        "'tokenctl reload'.\n");
                return EXIT_DENIED;
        }
        if (streq(member, "ConsentRequired")) {
                const char *req = json_str(p, "request");
                fprintf(stderr, "tokenctl: credential '%s' needs the owner's consent", cred);
                tokenctl_print_escaped(stderr, ": ", json_str(p, "reason"));
                fprintf(stderr, ".\n");
                if (req)
                        fprintf(stderr, "Approve it with 'tokenctl approve %s' while it waits "
                                "(see 'tokenctl pending').\n", req);
                else
                        fprintf(stderr, "Watch for requests with 'tokenctl watch' and approve them with "
                                "'tokenctl approve'.\n");
                return EXIT_REFUSED;
        }
        if (streq(member, "ConsentDenied")) {
                fprintf(stderr, "tokenctl: the owner denied request %s for credential '%s'.\n",
                        strna(json_str(p, "request")), cred);
                return EXIT_DENIED;
        }
        if (streq(member, "NoSuchRequest")) {
                fprintf(stderr, "tokenctl: no request '%s' is waiting: it was answered, timed out, or its caller "
                        "gave up.\nSee 'tokenctl pending'.\n", id);
                return EXIT_NO_SUCH;
        }
        if (streq(member, "NoSuchGrant")) {
                fprintf(stderr, "tokenctl: no grant '%s' is in force: it was revoked, used up, or expired.\n"
                        "See 'tokenctl grants'.\n", id);
                return EXIT_NO_SUCH;
        }
        if (streq(member, "ApprovalTooWide")) {
                fprintf(stderr, "tokenctl: the approval is wider than the policy allows");
                tokenctl_print_escaped(stderr, ": ", json_str(p, "reason"));
                fprintf(stderr, ".\nApprove fewer scopes (--scope), or widen the agent's policy (tokend.policy(5))"
                        " and run 'tokenctl reload'.\n");
                return EXIT_REFUSED;
        }
        if (streq(member, "TooManyGrants")) {
                fprintf(stderr, "tokenctl: too many grants are in force. Revoke some first: see 'tokenctl grants'"
                        " and\n'tokenctl grants revoke ID'.\n");
                return EXIT_REFUSED;
        }
        if (streq(member, "TooManyWatchers")) {
                fprintf(stderr, "tokenctl: too many 'tokenctl watch' streams are open (at most 16); close one first.\n");
                return EXIT_REFUSED;
        }
        if (streq(member, "PolicyInvalid")) {
                fprintf(stderr, "tokenctl: the policy has an error, so the policy in force was kept:\n");
                tokenctl_print_escaped(stderr, "  ", strna(json_str(p, "reason")));
                fprintf(stderr, "\nFix the file, then run 'tokenctl reload' again.\n");
                return EXIT_FAILURE_;
        }
        if (streq(member, "LifetimeTooShort")) {
                fprintf(stderr, "tokenctl: the provider issues tokens for '%s' that live only %" PRId64
                        " s; ask for a shorter --min-ttl.\n", cred, json_int(p, "lifetime", 0));
                return EXIT_REFUSED;
        }
        if (streq(member, "StoreUnavailable") || streq(member, "StoreFailed")) {
                fprintf(stderr, "tokenctl: tokend cannot save secrets: %s.\n", strna(json_str(p, "reason")));
                return EXIT_FAILURE_;
        }
        if (streq(member, "CredentialExists")) {
                fprintf(stderr, "tokenctl: a credential named '%s' exists already; pass --replace to replace it.\n", cred);
                return EXIT_REFUSED;
        }
        if (streq(member, "InvalidURL")) {
                fprintf(stderr, "tokenctl: invalid %s: %s.\n", strna(json_str(p, "field")), strna(json_str(p, "reason")));
                return EXIT_REFUSED;
        }
        if (streq(member, "DiscoveryFailed")) {
                fprintf(stderr, "tokenctl: discovery at %s failed: %s. Pass --token-endpoint instead.\n",
                        strna(json_str(p, "issuer")), strna(json_str(p, "reason")));
                return EXIT_UNAVAILABLE;
        }
        if (streq(member, "AuthenticationFailed")) {
                const char *d = json_str(p, "description");
                fprintf(stderr, "tokenctl: the provider refused the refresh token or client: %s%s%s.\n",
                        strna(json_str(p, "error")), d ? ": " : "", strempty(d));
                return EXIT_REAUTH;
        }
        if (streq(member, "PermissionDenied")) {
                if (startswith(method, "io.tokend.manager.")) {
                        fprintf(stderr, "tokenctl: permission denied: tokend answers its manager interface only to "
                                "its owner,\nand never to a process its policy classifies as an agent "
                                "(see 'tokenctl whoami').\n");
                        explain_manager_denied();
                } else
                        fprintf(stderr, "tokenctl: permission denied: tokend serves another user.\n");
                return EXIT_DENIED;
        }
        if (streq(member, "LoginFailed")) {
                fprintf(stderr, "tokenctl: login failed: %s.\n", strna(json_str(p, "reason")));
                return EXIT_FAILURE_;
        }
        if (streq(member, "PresetInvalid")) {
                fprintf(stderr, "tokenctl: provider preset: %s.\n", strna(json_str(p, "reason")));
                return EXIT_REFUSED;
        }
        if (streq(member, "NoRevocationEndpoint")) {
                fprintf(stderr, "tokenctl: the provider of '%s' has no revocation endpoint, so it was kept.\n"
                        "Remove it here with 'tokenctl remove %s' and revoke the app's access in the provider's settings.\n",
                        cred, cred);
                return EXIT_REFUSED;
        }
        if (streq(member, "RevocationFailed")) {
                fprintf(stderr, "tokenctl: revoking '%s' at the provider failed: %s. It was kept; try again later.\n",
                        cred, strna(json_str(p, "reason")));
                return EXIT_UNAVAILABLE;
        }
        if (streq(member, "MethodNotFound") || streq(member, "InterfaceNotFound") ||
            streq(member, "MethodNotImplemented")) {
                fprintf(stderr, "tokenctl: tokend does not implement %s: it is older than this tokenctl.\n"
                        "Restart it after upgrading: 'systemctl --user restart tokend'.\n", method);
                return EXIT_FAILURE_;
        }
        if (streq(member, "ExpectedMore")) {
                fprintf(stderr, "tokenctl: tokend expected a streaming call.\n");
                return EXIT_FAILURE_;
        }
        if (streq(member, "InvalidParameter") && streq_ptr(json_str(p, "parameter"), "as_owner")) {
                fprintf(stderr, "tokenctl: tokend does not take %s's parameter as_owner: it is older than this "
                        "tokenctl.\nRestart it after upgrading: 'systemctl --user restart tokend'.\n", method);
                return EXIT_FAILURE_;
        }
        if (streq(member, "InvalidParameter")) {
                fprintf(stderr, "tokenctl: tokend rejected parameter '%s'.\n", strna(json_str(p, "parameter")));
                return EXIT_REFUSED;
        }
        fprintf(stderr, "tokenctl: tokend answered %s.\n", error);
        return EXIT_FAILURE_;
}

int tokenctl_call_on(VarlinkClient *c, const char *method, json_object *params, json_object **ret,
                     const char *name) {
        _cleanup_(json_object_put_erasep) json_object *reply = NULL;
        const char *error = NULL;
        int r = varlink_client_call(c, method, params, 0, CALL_TIMEOUT_USEC, &reply, &error, NULL);
        if (r < 0) {
                fprintf(stderr, "tokenctl: talking to tokend failed: %s.\n", strerror(-r));
                return r == -EPERM || r == -ECONNRESET ? EXIT_NO_DAEMON : EXIT_FAILURE_;
        }
        if (error)
                return tokenctl_report_error(method, error, reply, name);
        *ret = TAKE_PTR(reply);
        return EXIT_OK;
}

int tokenctl_call(const char *method, json_object *params, json_object **ret, const char *name) {
        _cleanup_(varlink_client_freep) VarlinkClient *c = NULL;
        int r = tokenctl_connect(&c);
        if (r < 0) {
                json_object_put_erase(params);
                return -r;
        }
        return tokenctl_call_on(c, method, params, ret, name);
}

bool tokenctl_id_valid(const char *verb, const char *id) {
        size_t l = strlen(id);
        if (l == 0 || l > ID_MAX) {
                fprintf(stderr, "tokenctl %s: an id has 1 to %u characters.\n", verb, ID_MAX);
                return false;
        }
        for (const char *c = id; *c; c++)
                if ((unsigned char) *c <= ' ' || (unsigned char) *c >= 0x7f) {
                        fprintf(stderr, "tokenctl %s: an id has no blanks, control or non-ASCII characters.\n", verb);
                        return false;
                }
        return true;
}

/* ---- verbs ---- */

/* "--scope a --scope b" and "--scope 'a b'" (or "a,b") both work. */
int tokenctl_add_scopes(json_object *array, char *arg) {
        if (!array) {
                fprintf(stderr, "tokenctl: out of memory.\n");
                return -ENOMEM;
        }
        for (char *s = arg, *save = NULL, *tok; (tok = strtok_r(s, " ,", &save)); s = NULL) {
                if (json_object_array_length(array) >= SCOPES_MAX) {
                        fprintf(stderr, "tokenctl: at most %u scopes can be given.\n", SCOPES_MAX);
                        return -E2BIG;
                }
                if (strlen(tok) > SCOPE_LEN_MAX) {
                        fprintf(stderr, "tokenctl: a scope has at most %u characters.\n", SCOPE_LEN_MAX);
                        return -E2BIG;
                }
                json_object *v = json_object_new_string(tok);
                if (!v || json_object_array_add(array, v) < 0) {
                        json_object_put(v);
                        fprintf(stderr, "tokenctl: out of memory.\n");
                        return -ENOMEM;
                }
        }
        return 0;
}

/* Adds a string member when the value is given. */
static void add_opt_string(json_object *o, const char *key, const char *value) {
        if (value)
                json_object_object_add(o, key, json_object_new_string(value));
}

/* Adds a boolean member when it is true (false is every method's default). */
static void add_flag(json_object *o, const char *key, bool value) {
        if (value)
                json_object_object_add(o, key, json_object_new_boolean(true));
}

static int read_secret_stream(FILE *f, const char *what, char **ret) {
        _cleanup_erase_ char *buf = malloc(SECRET_INPUT_MAX + 2);
        if (!buf)
                return -ENOMEM;
        size_t n = fread(buf, 1, SECRET_INPUT_MAX + 1, f);
        if (n > SECRET_INPUT_MAX) {
                fprintf(stderr, "tokenctl: the %s is longer than %u bytes.\n", what, SECRET_INPUT_MAX);
                return -E2BIG;
        }
        buf[n] = 0;
        /* The first line, without surrounding whitespace. */
        buf[strcspn(buf, "\r\n")] = 0;
        char *s = buf;
        while (*s == ' ' || *s == '\t')
                s++;
        size_t l = strlen(s);
        while (l > 0 && (s[l - 1] == ' ' || s[l - 1] == '\t'))
                s[--l] = 0;
        if (l == 0) {
                fprintf(stderr, "tokenctl: no %s given.\n", what);
                return -ENODATA;
        }
        *ret = secret_strdup(s);
        return *ret ? 0 : -ENOMEM;
}

static int read_refresh_token(char **ret) {
        if (!isatty(STDIN_FILENO))
                return read_secret_stream(stdin, "refresh token (on standard input)", ret);

        struct termios old, quiet;
        fprintf(stderr, "Refresh token (input hidden): ");
        bool restore = tcgetattr(STDIN_FILENO, &old) >= 0;
        if (restore) {
                quiet = old;
                quiet.c_lflag &= ~(tcflag_t) ECHO;
                (void) tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
        }
        _cleanup_erase_ char *line = malloc(SECRET_INPUT_MAX + 2);
        char *got = line ? fgets(line, SECRET_INPUT_MAX + 2, stdin) : NULL;
        if (restore)
                (void) tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        fputc('\n', stderr);
        if (!got) {
                fprintf(stderr, "tokenctl: no refresh token given.\n");
                return -ENODATA;
        }
        line[strcspn(line, "\r\n")] = 0;
        if (!*line) {
                fprintf(stderr, "tokenctl: no refresh token given.\n");
                return -ENODATA;
        }
        *ret = secret_strdup(line);
        return *ret ? 0 : -ENOMEM;
}

static int verb_add(int argc, char *argv[]) {
        enum { ARG_ISSUER = 0x100, ARG_ENDPOINT, ARG_CLIENT_ID, ARG_SECRET_FILE, ARG_AUTH, ARG_SCOPE, ARG_INSECURE, ARG_REPLACE };
        static const struct option options[] = {
                { "issuer", required_argument, NULL, ARG_ISSUER },
                { "token-endpoint", required_argument, NULL, ARG_ENDPOINT },
                { "client-id", required_argument, NULL, ARG_CLIENT_ID },
                { "client-secret-file", required_argument, NULL, ARG_SECRET_FILE },
                { "auth-method", required_argument, NULL, ARG_AUTH },
                { "scope", required_argument, NULL, ARG_SCOPE },
                { "insecure-loopback", no_argument, NULL, ARG_INSECURE },
                { "replace", no_argument, NULL, ARG_REPLACE },
                {},
        };
        const char *issuer = NULL, *endpoint = NULL, *client_id = NULL, *secret_file = NULL, *auth = NULL;
        bool insecure = false, replace = false;
        _cleanup_(json_object_putp) json_object *scopes = json_object_new_array();
        _cleanup_erase_ char *rt = NULL, *secret = NULL;
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0) {
                switch (c) {
                case ARG_ISSUER: issuer = optarg; break;
                case ARG_ENDPOINT: endpoint = optarg; break;
                case ARG_CLIENT_ID: client_id = optarg; break;
                case ARG_SECRET_FILE: secret_file = optarg; break;
                case ARG_AUTH: auth = optarg; break;
                case ARG_SCOPE:
                        if (tokenctl_add_scopes(scopes, optarg) < 0)
                                return EXIT_USAGE;
                        break;
                case ARG_INSECURE: insecure = true; break;
                case ARG_REPLACE: replace = true; break;
                default: return EXIT_USAGE;
                }
        }
        if (optind != argc - 1 || !client_id || (!issuer && !endpoint)) {
                fprintf(stderr, "tokenctl add: usage: tokenctl add NAME (--issuer URL | --token-endpoint URL) --client-id ID\n"
                        "       [--client-secret-file FILE] [--auth-method M] [--scope S]... [--insecure-loopback] [--replace]\n"
                        "The refresh token is read from standard input.\n");
                return EXIT_USAGE;
        }
        const char *name = argv[optind];

        if (secret_file) {
                FILE *f = fopen(secret_file, "re");
                if (!f) {
                        fprintf(stderr, "tokenctl: cannot open %s: %m.\n", secret_file);
                        return EXIT_USAGE;
                }
                int r = read_secret_stream(f, "client secret", &secret);
                fclose(f);
                if (r < 0)
                        return EXIT_USAGE;
        }
        if (read_refresh_token(&rt) < 0)
                return EXIT_USAGE;

        json_object *p = json_object_new_object();
        if (!p)
                return EXIT_FAILURE_;
        json_object_object_add(p, "name", json_object_new_string(name));
        add_opt_string(p, "issuer", issuer);
        add_opt_string(p, "token_endpoint", endpoint);
        json_object_object_add(p, "client_id", json_object_new_string(client_id));
        add_opt_string(p, "client_secret", secret);
        add_opt_string(p, "auth_method", auth);
        if (json_object_array_length(scopes) > 0)
                json_object_object_add(p, "scopes", json_object_get(scopes));
        json_object_object_add(p, "refresh_token", json_object_new_string(rt));
        add_flag(p, "insecure_loopback", insecure);
        add_flag(p, "replace", replace);

        _cleanup_(json_object_putp) json_object *reply = NULL;
        int r = tokenctl_call("io.tokend.manager.AddCredential", p, &reply, name);
        if (r != EXIT_OK)
                return r;
        json_object *cred = NULL;
        json_object_object_get_ex(reply, "credential", &cred);
        if (arg_json)
                printf("%s\n", json_object_to_json_string_ext(cred, JSON_C_TO_STRING_PRETTY));
        else {
                fprintf(stderr, "Added credential '%s' (scopes: ", name);
                json_object *s = NULL;
                json_object_object_get_ex(cred, "scopes", &s);
                tokenctl_print_scopes(stderr, s);
                fprintf(stderr, ").\n");
        }
        return EXIT_OK;
}

static void format_time(int64_t t, char *buf, size_t size) {
        time_t tt = (time_t) t;
        struct tm tm;
        int64_t left = t - (int64_t) time(NULL);
        if (!localtime_r(&tt, &tm) || strftime(buf, size, "%H:%M:%S", &tm) == 0)
                snprintf(buf, size, "%" PRId64, t);
        size_t l = strlen(buf);
        snprintf(buf + l, size - l, " (%" PRId64 "s)", left);
}

static int verb_list(int argc, char *argv[]) {
        _cleanup_(json_object_putp) json_object *reply = NULL;
        (void) argv;
        if (argc > 1) {
                fprintf(stderr, "tokenctl list: takes no arguments.\n");
                return EXIT_USAGE;
        }
        int r = tokenctl_call("io.tokend.manager.ListCredentials", NULL, &reply, NULL);
        if (r != EXIT_OK)
                return r;
        json_object *a = NULL;
        a = json_array(reply, "credentials");
        if (arg_json) {
                printf("%s\n", json_object_to_json_string_ext(a, JSON_C_TO_STRING_PRETTY));
                return EXIT_OK;
        }
        /* e.g. "Store: secret-service (locked: the login collection is locked; 1 write pending)" */
        const char *store = json_str(reply, "store"), *store_reason = json_str(reply, "store_reason");
        int64_t pending = json_int(reply, "store_pending", 0);
        if (store) {
                printf("Store: %s (%s", store, strna(json_str(reply, "store_state")));
                if (store_reason)
                        printf(": %s", store_reason);
                if (pending > 0)
                        printf("; %" PRId64 " write%s pending", pending, pending == 1 ? "" : "s");
                printf(")\n");
        }
        size_t n = a ? json_object_array_length(a) : 0;
        if (n == 0) {
                printf("No credentials. Add one with 'tokenctl add'.\n");
                return EXIT_OK;
        }
        printf("%-20s %-16s %-36s %-30s %s\n", "NAME", "STATE", "ISSUER", "SCOPES", "CACHED");
        for (size_t i = 0; i < n; i++) {
                /* What tokend sent is checked like any input: a wrong type is no data. */
                json_object *c = json_object_array_get_idx(a, i), *s = json_array(c, "scopes"),
                            *cached = json_array(c, "cached");
                char scopes[256] = "";
                for (size_t j = 0; s && j < json_object_array_length(s); j++) {
                        size_t l = strlen(scopes);
                        snprintf(scopes + l, sizeof scopes - l, "%s%s", j ? " " : "",
                                 json_object_get_string(json_object_array_get_idx(s, j)));
                }
                size_t nc = cached ? json_object_array_length(cached) : 0;
                printf("%-20s %-16s %-36s %-30s %zu\n", strna(json_str(c, "name")), strna(json_str(c, "state")),
                       strna(json_str(c, "issuer") ?: json_str(c, "token_endpoint")), scopes, nc);
                for (size_t j = 0; j < nc; j++) {
                        json_object *e = json_object_array_get_idx(cached, j), *es = json_array(e, "scopes");
                        char exp[64], ref[64] = "-";
                        format_time(json_int(e, "expires_at", 0), exp, sizeof exp);
                        if (json_int(e, "refresh_at", -1) >= 0)
                                format_time(json_int(e, "refresh_at", 0), ref, sizeof ref);
                        printf("    token: expires %s, refresh %s, scopes: ", exp, ref);
                        tokenctl_print_scopes(stdout, es);
                        putchar('\n');
                }
                const char *last_error = json_str(c, "last_error");
                if (last_error)
                        printf("    last error: %s\n", last_error);
                if (store && json_str(c, "store") && !streq(json_str(c, "store"), store))
                        printf("    store: %s\n", json_str(c, "store"));
        }
        return EXIT_OK;
}

/* How many elements the array `key` of a reply to `method` has, or -1 when
 * tokend did not answer it (an older tokend, or not allowed). */
static int64_t count_of(VarlinkClient *client, const char *method, const char *key) {
        _cleanup_(json_object_putp) json_object *reply = NULL;
        const char *error = NULL;
        if (varlink_client_call(client, method, NULL, 0, CALL_TIMEOUT_USEC, &reply, &error, NULL) < 0 || error)
                return -1;
        json_object *a = json_array(reply, key);
        return a ? (int64_t) json_object_array_length(a) : -1;
}

/* tokenctl status: the daemon at a glance, in the manner of systemctl status. */
static int verb_status(int argc, char *argv[]) {
        _cleanup_(varlink_client_freep) VarlinkClient *client = NULL;
        _cleanup_(json_object_putp) json_object *info = NULL, *list = NULL;
        const char *error = NULL;
        (void) argv;

        if (argc > 1) {
                fprintf(stderr, "tokenctl status: takes no arguments.\n");
                return EXIT_USAGE;
        }
        int r = tokenctl_connect(&client);
        if (r < 0)
                return -r;
        r = varlink_client_call(client, "org.varlink.service.GetInfo", NULL, 0, CALL_TIMEOUT_USEC, &info, &error, NULL);
        if (r < 0 || error) {
                fprintf(stderr, "tokenctl: tokend did not answer GetInfo%s%s.\n", error ? ": " : "", strempty(error));
                return r < 0 ? EXIT_NO_DAEMON : EXIT_FAILURE_;
        }
        r = varlink_client_call(client, "io.tokend.manager.ListCredentials", NULL, 0, CALL_TIMEOUT_USEC, &list, &error,
                                NULL);
        if (r < 0)
                return EXIT_NO_DAEMON;
        if (error)
                return tokenctl_report_error("io.tokend.manager.ListCredentials", error, list, NULL);

        json_object *creds = json_array(list, "credentials");
        size_t n = creds ? json_object_array_length(creds) : 0, cached = 0, trouble = 0;
        for (size_t i = 0; i < n; i++) {
                json_object *c = json_object_array_get_idx(creds, i), *e = json_array(c, "cached");
                if (e)
                        cached += json_object_array_length(e);
                trouble += !streq(strempty(json_str(c, "state")), "ok");
        }
        const char *store_state = strna(json_str(list, "store_state"));
        int64_t requests = count_of(client, "io.tokend.manager.ListPending", "requests");
        int64_t grants = count_of(client, "io.tokend.manager.ListGrants", "grants");

        if (arg_json) {
                json_object *o = json_object_new_object();
                json_object_object_add(o, "version", json_object_get(json_object_object_get(info, "version")));
                json_object_object_add(o, "store", json_object_get(json_object_object_get(list, "store")));
                json_object_object_add(o, "store_state", json_object_get(json_object_object_get(list, "store_state")));
                json_object_object_add(o, "credentials", json_object_new_int64((int64_t) n));
                json_object_object_add(o, "cached_tokens", json_object_new_int64((int64_t) cached));
                json_object_object_add(o, "credentials_not_ok", json_object_new_int64((int64_t) trouble));
                json_object_object_add(o, "requests_pending", requests >= 0 ? json_object_new_int64(requests) : NULL);
                json_object_object_add(o, "grants", grants >= 0 ? json_object_new_int64(grants) : NULL);
                printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY));
                json_object_put(o);
                return EXIT_OK;
        }
        bool healthy = trouble == 0 && streq(store_state, "ok");
        printf("%s tokend %s\n", healthy ? "\xe2\x97\x8f" : "\xc3\x97", strna(json_str(info, "version")));
        _cleanup_free_ char *path = NULL;
        (void) tokenctl_socket_path(&path);
        printf("      Socket: %s\n", strna(path));
        printf("       Store: %s (%s", strna(json_str(list, "store")), store_state);
        if (json_str(list, "store_reason"))
                printf(": %s", json_str(list, "store_reason"));
        int64_t pending = json_int(list, "store_pending", 0);
        if (pending > 0)
                printf("; %" PRId64 " write%s pending", pending, pending == 1 ? "" : "s");
        printf(")\n");
        printf(" Credentials: %zu (%zu not ok)\n", n, trouble);
        printf("Cached tokens: %zu\n", cached);
        if (requests > 0)
                printf("   Approvals: %" PRId64 " pending (see 'tokenctl pending')\n", requests);
        else
                printf("   Approvals: %s\n", requests == 0 ? "none pending" : "n/a");
        if (grants >= 0)
                printf("      Grants: %" PRId64 " in force\n", grants);
        else
                printf("      Grants: n/a\n");
        for (size_t i = 0; i < n; i++) {
                json_object *c = json_object_array_get_idx(creds, i);
                if (streq(strempty(json_str(c, "state")), "ok") && !json_str(c, "last_error"))
                        continue;
                printf("  %s: %s%s%s\n", strna(json_str(c, "name")), strna(json_str(c, "state")),
                       json_str(c, "last_error") ? ": " : "", strempty(json_str(c, "last_error")));
        }
        return healthy ? EXIT_OK : EXIT_FAILURE_;
}

static int verb_remove(int argc, char *argv[]) {
        _cleanup_(json_object_putp) json_object *reply = NULL;
        if (argc != 2) {
                fprintf(stderr, "tokenctl remove: usage: tokenctl remove NAME\n");
                return EXIT_USAGE;
        }
        json_object *p = json_object_new_object();
        if (!p)
                return EXIT_FAILURE_;
        json_object_object_add(p, "name", json_object_new_string(argv[1]));
        int r = tokenctl_call("io.tokend.manager.RemoveCredential", p, &reply, argv[1]);
        if (r == EXIT_OK)
                fprintf(stderr, "Removed credential '%s'.\n", argv[1]);
        return r;
}

static void on_interrupt(int sig) {
        static const char msg[] = "\ntokenctl: login cancelled.\n";
        (void) sig;
        /* Exiting closes the connection, which cancels the login in tokend. */
        (void) !write(STDERR_FILENO, msg, sizeof msg - 1);
        _exit(130);
}

static void open_browser(const char *url) {
        extern char **environ;
        if (!getenv("DISPLAY") && !getenv("WAYLAND_DISPLAY"))
                return;
        posix_spawn_file_actions_t fa;
        pid_t pid;
        char *argv[] = { (char *) "xdg-open", (char *) url, NULL };
        if (posix_spawn_file_actions_init(&fa) != 0)
                return;
        posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
        posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
        if (posix_spawnp(&pid, "xdg-open", &fa, NULL, argv, environ) == 0)
                fprintf(stderr, "Opened your browser.\n");
        posix_spawn_file_actions_destroy(&fa);
}

static int verb_login(int argc, char *argv[]) {
        enum { ARG_PROVIDER = 0x100, ARG_TENANT, ARG_ISSUER, ARG_CLIENT_ID, ARG_SECRET_FILE, ARG_AUTH, ARG_SCOPE,
               ARG_FLOW, ARG_INSECURE, ARG_REPLACE, ARG_NO_BROWSER };
        static const struct option options[] = {
                { "provider", required_argument, NULL, ARG_PROVIDER },
                { "tenant", required_argument, NULL, ARG_TENANT },
                { "issuer", required_argument, NULL, ARG_ISSUER },
                { "client-id", required_argument, NULL, ARG_CLIENT_ID },
                { "client-secret-file", required_argument, NULL, ARG_SECRET_FILE },
                { "auth-method", required_argument, NULL, ARG_AUTH },
                { "scope", required_argument, NULL, ARG_SCOPE },
                { "flow", required_argument, NULL, ARG_FLOW },
                { "insecure-loopback", no_argument, NULL, ARG_INSECURE },
                { "replace", no_argument, NULL, ARG_REPLACE },
                { "no-browser", no_argument, NULL, ARG_NO_BROWSER },
                {},
        };
        const char *provider = NULL, *tenant = NULL, *issuer = NULL, *client_id = NULL, *secret_file = NULL,
                   *auth = NULL, *flow = NULL;
        bool insecure = false, replace = false, browser = true;
        _cleanup_(json_object_putp) json_object *scopes = json_object_new_array();
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0) {
                switch (c) {
                case ARG_PROVIDER: provider = optarg; break;
                case ARG_TENANT: tenant = optarg; break;
                case ARG_ISSUER: issuer = optarg; break;
                case ARG_CLIENT_ID: client_id = optarg; break;
                case ARG_SECRET_FILE: secret_file = optarg; break;
                case ARG_AUTH: auth = optarg; break;
                case ARG_SCOPE:
                        if (tokenctl_add_scopes(scopes, optarg) < 0)
                                return EXIT_USAGE;
                        break;
                case ARG_FLOW: flow = optarg; break;
                case ARG_INSECURE: insecure = true; break;
                case ARG_REPLACE: replace = true; break;
                case ARG_NO_BROWSER: browser = false; break;
                default: return EXIT_USAGE;
                }
        }
        if (optind != argc - 1 || !client_id || (!provider && !issuer)) {
                fprintf(stderr, "tokenctl login: usage: tokenctl login NAME (--provider P [--tenant T] | --issuer URL) --client-id ID\n"
                        "       [--client-secret-file FILE] [--scope S]... [--flow device|auth-code] [--no-browser]\n"
                        "       [--insecure-loopback] [--replace]\n");
                return EXIT_USAGE;
        }
        const char *name = argv[optind];
        char secret_path[PATH_MAX];
        if (secret_file && !realpath(secret_file, secret_path)) {
                fprintf(stderr, "tokenctl: cannot find %s: %m.\n", secret_file);
                return EXIT_USAGE;
        }

        json_object *p = json_object_new_object();
        if (!p)
                return EXIT_FAILURE_;
        json_object_object_add(p, "name", json_object_new_string(name));
        add_opt_string(p, "provider", provider);
        add_opt_string(p, "tenant", tenant);
        add_opt_string(p, "issuer", issuer);
        json_object_object_add(p, "client_id", json_object_new_string(client_id));
        if (secret_file)
                json_object_object_add(p, "client_secret_file", json_object_new_string(secret_path));
        add_opt_string(p, "auth_method", auth);
        if (json_object_array_length(scopes) > 0)
                json_object_object_add(p, "scopes", json_object_get(scopes));
        add_opt_string(p, "flow", flow);
        add_flag(p, "insecure_loopback", insecure);
        add_flag(p, "replace", replace);

        _cleanup_(varlink_client_freep) VarlinkClient *client = NULL;
        int r = tokenctl_connect(&client);
        if (r < 0) {
                json_object_put(p);
                return -r;
        }
        signal(SIGINT, on_interrupt);
        signal(SIGTERM, on_interrupt);

        bool continues = false;
        const char *error = NULL;
        json_object *reply = NULL;
        r = varlink_client_call(client, "io.tokend.manager.Login", p, VARLINK_CALL_MORE, 0, &reply, &error, &continues);
        for (;;) {
                if (r < 0) {
                        fprintf(stderr, "tokenctl: talking to tokend failed: %s.\n", strerror(-r));
                        return EXIT_FAILURE_;
                }
                if (error) {
                        int e = tokenctl_report_error("io.tokend.manager.Login", error, reply, name);
                        json_object_put(reply);
                        return e;
                }
                const char *event = strempty(json_str(reply, "event"));
                if (json_str(reply, "notes") && !arg_json)
                        fprintf(stderr, "Note: %s\n\n", json_str(reply, "notes"));
                if (arg_json) {
                        printf("%s\n", json_object_to_json_string_ext(reply, JSON_C_TO_STRING_PLAIN));
                        fflush(stdout);
                }
                if (streq(event, "device-code") && !arg_json) {
                        fprintf(stderr, "To log in, open %s\nand enter the code: %s\n", strna(json_str(reply, "verification_uri")),
                                strna(json_str(reply, "user_code")));
                        if (json_str(reply, "verification_uri_complete"))
                                fprintf(stderr, "(or open %s)\n", json_str(reply, "verification_uri_complete"));
                        fprintf(stderr, "Waiting for you to finish in the browser (Ctrl-C cancels)...\n");
                } else if (streq(event, "authorize")) {
                        const char *url = strna(json_str(reply, "authorization_url"));
                        if (browser)
                                open_browser(url);
                        if (!arg_json)
                                fprintf(stderr, "To log in, open this URL in a browser on this machine:\n  %s\n"
                                        "Waiting for the redirect (Ctrl-C cancels)...\n", url);
                } else if (streq(event, "done")) {
                        json_object *cred = NULL, *s = NULL;
                        json_object_object_get_ex(reply, "credential", &cred);
                        json_object_object_get_ex(cred, "scopes", &s);
                        fprintf(stderr, "Logged in: credential '%s' (scopes: ", name);
                        tokenctl_print_scopes(stderr, s);
                        fprintf(stderr, ").\n");
                }
                json_object_put(reply);
                reply = NULL;
                if (!continues)
                        return EXIT_OK;
                r = varlink_client_next(client, 0, &reply, &error, &continues);
        }
}

static int verb_revoke(int argc, char *argv[]) {
        _cleanup_(json_object_putp) json_object *reply = NULL;
        if (argc != 2) {
                fprintf(stderr, "tokenctl revoke: usage: tokenctl revoke NAME\n");
                return EXIT_USAGE;
        }
        json_object *p = json_object_new_object();
        if (!p)
                return EXIT_FAILURE_;
        json_object_object_add(p, "name", json_object_new_string(argv[1]));
        int r = tokenctl_call("io.tokend.manager.RevokeCredential", p, &reply, argv[1]);
        if (r == EXIT_OK)
                fprintf(stderr, "Revoked '%s' at the provider and removed it.\n", argv[1]);
        return r;
}

static int verb_store(int argc, char *argv[]) {
        static const struct option options[] = {
                { "to", required_argument, NULL, 't' },
                {},
        };
        _cleanup_(json_object_putp) json_object *reply = NULL;
        const char *to = NULL;
        int c;

        if (argc < 2 || !streq(argv[1], "migrate")) {
                fprintf(stderr, "tokenctl store: usage: tokenctl store migrate --to keyring|secret-service\n");
                return EXIT_USAGE;
        }
        optind = 0;
        while ((c = getopt_long(argc - 1, argv + 1, "", options, NULL)) >= 0) {
                if (c != 't')
                        return EXIT_USAGE;
                to = optarg;
        }
        if (!to || optind != argc - 1 || (!streq(to, "keyring") && !streq(to, "secret-service"))) {
                fprintf(stderr, "tokenctl store migrate: usage: tokenctl store migrate --to keyring|secret-service\n");
                return EXIT_USAGE;
        }
        json_object *p = json_object_new_object();
        if (!p)
                return EXIT_FAILURE_;
        json_object_object_add(p, "to", json_object_new_string(to));
        int r = tokenctl_call("io.tokend.manager.MigrateStore", p, &reply, NULL);
        if (r != EXIT_OK)
                return r;
        int64_t moved = json_int(reply, "moved", 0);
        if (arg_json)
                printf("%s\n", json_object_to_json_string_ext(reply, JSON_C_TO_STRING_PRETTY));
        else
                fprintf(stderr, "Moved %" PRId64 " credential%s to the %s store.\n", moved, moved == 1 ? "" : "s", to);
        return EXIT_OK;
}

static int verb_audit(int argc, char *argv[]) {
        return tokenctl_audit(argc, argv, arg_json);
}

static int verb_help(int argc, char *argv[]);

static const Verb verbs[] = {
        { "add", "NAME (--issuer URL | --token-endpoint URL) --client-id ID [--client-secret-file F] [--scope S]...",
          "Add a credential; the refresh token is read from standard input", verb_add },
        { "list", "", "List credentials, their state and cached tokens", verb_list },
        { "status", "", "Show the daemon's version, store, credentials, cached tokens and problems", verb_status },
        { "token", "NAME [--scope S]... [--resource URI] [--min-ttl SECONDS]",
          "Print one of your own access tokens (no policy, no consent)", tokenctl_token },
        { "exec", "NAME [--env VAR] [--scope S]... [--resource URI] [--min-ttl SECONDS] -- CMD [ARG]...",
          "Run CMD with an access token in its environment: $TOKEND_TOKEN (or VAR), never in argv.\n"
          "          The token is not renewed while CMD runs: it is good until $TOKEND_TOKEN_EXPIRES_AT\n"
          "          (VAR_EXPIRES_AT, seconds since the epoch), at least --min-ttl (default 300) seconds.\n"
          "          A long-running program should use a Subscribe stream or run 'tokenctl token' again.\n"
          "          Exit status: CMD's; tokenctl's (1-8) when no token was had (CMD not run);\n"
          "          127 when CMD is not found, 126 when it cannot be run",
          tokenctl_exec },
        { "credential-helper",
          "NAME --host HOST [--host HOST]... [--username USER] [--scope S]... [--resource URI] [--min-ttl SECONDS]\n"
          "          get|store|erase",
          "A git credential helper: 'get' answers https://HOST with username (default x-access-token)\n"
          "          and a fresh token; other hosts get nothing. 'store' and 'erase' do nothing: tokend\n"
          "          owns the tokens. E.g. git config credential.https://github.com.helper\n"
          "          '!tokenctl credential-helper gh --host github.com'",
          tokenctl_credential_helper },
        { "login", "NAME (--provider P [--tenant T] | --issuer URL) --client-id ID [--client-secret-file F] [--scope S]... [--flow device|auth-code]",
          "Log in at a provider (device flow or browser); tokend keeps the credential", verb_login },
        { "revoke", "NAME", "Revoke a credential at the provider, then remove it", verb_revoke },
        { "remove", "NAME", "Remove a credential and its secrets (local only)", verb_remove },
        { "store", "migrate --to keyring|secret-service", "Move every credential's secrets to another store",
          verb_store },
        { "audit", "[--since TIME] [--credential NAME] [--agent EXE-or-UNIT] [--json] [--state-dir DIR]",
          "Show the audit trail: tokens issued and refused, refreshes, logins (journal and fallback file)",
          verb_audit },
        { "pending", "", "List the token requests waiting for your consent", tokenctl_pending },
        { "watch", "", "Show consent events as they happen: new requests, approvals, denials, timeouts",
          tokenctl_watch },
        { "approve", "ID [--for DURATION] [--once | --process] [--scope S]...",
          "Approve a waiting request: grant its agent tokens for a while (DURATION e.g. 15m, 8h, 1h30m, 2d)",
          tokenctl_approve },
        { "deny", "ID", "Refuse a waiting request", tokenctl_deny },
        { "grants", "[revoke ID]", "List the grants in force, or end one", tokenctl_grants },
        { "reload", "", "Read the policy directory again", tokenctl_reload },
        { "whoami", "", "Show how tokend sees this process: identity, policy agent, manager access",
          tokenctl_whoami },
        { "help", "", "Show this help", verb_help },
        {},
};

static int verb_help(int argc, char *argv[]) {
        (void) argc;
        (void) argv;
        printf("Usage: tokenctl [--socket PATH] [--json] COMMAND ...\n\n"
               "Talks to tokend, the OAuth token broker.\n\nCommands:\n");
        for (const Verb *v = verbs; v->name; v++)
                printf("  %-7s %s\n          %s\n", v->name, v->args, v->help);
        printf("\nOptions:\n"
               "  --socket PATH  tokend's socket (default: $TOKEND_SOCKET, else $XDG_RUNTIME_DIR/tokend/socket)\n"
               "  --json         Machine-readable output\n"
               "  --version      Show the version\n\n"
               "Exit status: 0 ok, 1 failure, 2 usage, 3 tokend unreachable, 4 no such credential,\n"
               "request or grant, 5 re-authentication needed, 6 provider unavailable (retry later),\n"
               "7 request refused (scope, lifetime, name exists, bad input, approval too wide,\n"
               "too many grants, consent required), 8 permission denied (by tokend, the policy or\n"
               "the owner).\n");
        return EXIT_OK;
}

/* "tokenctl VERB ... --help": any --help or -h before "--". */
static bool verb_wants_help(int argc, char *argv[]) {
        for (int i = 1; i < argc && !streq(argv[i], "--"); i++)
                if (streq(argv[i], "--help") || streq(argv[i], "-h"))
                        return true;
        return false;
}

static int verb_usage(const Verb *v) {
        printf("Usage: tokenctl %s%s%s\n\n%s.\nSee tokenctl(1) for details.\n", v->name, *v->args ? " " : "", v->args,
               v->help);
        return EXIT_OK;
}

int main(int argc, char *argv[]) {
        enum { ARG_SOCKET = 0x100, ARG_JSON, ARG_VERSION };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "socket", required_argument, NULL, ARG_SOCKET },
                { "json", no_argument, NULL, ARG_JSON },
                { "version", no_argument, NULL, ARG_VERSION },
                {},
        };
        int c;

        /* "+": stop at the verb, whose own options are parsed by the verb. */
        while ((c = getopt_long(argc, argv, "+h", options, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        return verb_help(0, NULL);
                case ARG_SOCKET:
                        arg_socket = optarg;
                        break;
                case ARG_JSON:
                        arg_json = true;
                        break;
                case ARG_VERSION:
                        printf("tokenctl %s\n", PACKAGE_VERSION);
                        return EXIT_OK;
                default:
                        return EXIT_USAGE;
                }
        }
        if (optind >= argc) {
                verb_help(0, NULL);
                return EXIT_USAGE;
        }
        for (const Verb *v = verbs; v->name; v++)
                if (streq(v->name, argv[optind]))
                        return verb_wants_help(argc - optind, argv + optind) ? verb_usage(v)
                                                                              : v->run(argc - optind, argv + optind);
        fprintf(stderr, "tokenctl: unknown command '%s'. See 'tokenctl help'.\n", argv[optind]);
        return EXIT_USAGE;
}
