/* SPDX-License-Identifier: MIT */
/* client/tokenctl-credential.c: see tokenctl-credential.h.
 *
 * git runs "HELPER get|store|erase" through the shell and writes key=value
 * lines on its standard input. "get" answers only for protocol https and a
 * host given with --host, so that a token never goes to a host it was not
 * meant for, whatever URL git was pointed at; for anything else it prints
 * nothing and exits 0, and git asks its next helper. "store" and "erase" read
 * the description and do nothing: tokend owns the tokens and renews them, and
 * the password git passes (which may be this helper's token, or one another
 * helper or a human gave) must not be written anywhere. Input is read through
 * a buffer of our own, wiped afterwards, never through stdio. */
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>

#include "common/util.h"
#include "tokenctl-credential.h"
#include "tokenctl-token.h"
#include "tokenctl.h"
#include "varlink.h"

typedef struct Reader {
        int fd;
        int error; /* negative errno of a failed read, else 0 */
        size_t pos, len;
        char buf[4096];
} Reader;

static void reader_wipe(Reader *r) {
        explicit_bzero(r, sizeof *r);
}

/* The next byte, or -1 at the end of the input or on an error (r->error). */
static int reader_get(Reader *r) {
        if (r->pos == r->len) {
                ssize_t n;
                do
                        n = read(r->fd, r->buf, sizeof r->buf);
                while (n < 0 && errno == EINTR);
                if (n <= 0) {
                        r->error = n < 0 ? -errno : 0;
                        return -1;
                }
                r->pos = 0;
                r->len = (size_t) n;
        }
        return (unsigned char) r->buf[r->pos++];
}

void tokenctl_credential_input_done(CredentialInput *in) {
        in->protocol = mfree(in->protocol);
        in->host = mfree(in->host);
        in->username = mfree(in->username);
}

/* Says why the input is refused, never quoting it (it may hold a password). */
_printf_(2, 3) static int input_error(int r, const char *format, ...) {
        va_list ap;
        fprintf(stderr, "tokenctl credential-helper: refusing the input from git: ");
        va_start(ap, format);
        vfprintf(stderr, format, ap);
        va_end(ap);
        fprintf(stderr, ".\n");
        return r;
}

/* One key=value line (NUL-terminated, n bytes). */
static int input_line(CredentialInput *in, const char *line, size_t n) {
        const char *eq = memchr(line, '=', n);
        if (!eq || eq == line)
                return input_error(-EBADMSG, "a line is not key=value");
        size_t lk = (size_t) (eq - line);
        char **field = lk == 8 && memcmp(line, "protocol", 8) == 0 ? &in->protocol
                     : lk == 4 && memcmp(line, "host", 4) == 0     ? &in->host
                     : lk == 8 && memcmp(line, "username", 8) == 0 ? &in->username
                                                                    : NULL;
        if (!field)
                return 0; /* path, password, and what newer gits send */
        char *v = strdup(eq + 1);
        if (!v)
                return input_error(-ENOMEM, "out of memory");
        free(*field);
        *field = v;
        return 0;
}

int tokenctl_credential_input_read(int fd, CredentialInput *ret) {
        _cleanup_(reader_wipe) Reader rd = { .fd = fd };
        _cleanup_erase_ char *line = malloc(CREDENTIAL_LINE_MAX + 1);
        _cleanup_(tokenctl_credential_input_done) CredentialInput in = {};
        size_t total = 0;

        if (!line)
                return input_error(-ENOMEM, "out of memory");
        for (;;) {
                size_t n = 0;
                int ch;
                while ((ch = reader_get(&rd)) >= 0 && ch != '\n') {
                        if (++total > CREDENTIAL_INPUT_MAX)
                                return input_error(-E2BIG, "it is longer than %u bytes", CREDENTIAL_INPUT_MAX);
                        if (ch == 0)
                                return input_error(-EBADMSG, "it holds a NUL byte");
                        if (n >= CREDENTIAL_LINE_MAX)
                                return input_error(-E2BIG, "a line is longer than %u bytes", CREDENTIAL_LINE_MAX);
                        line[n++] = (char) ch;
                }
                if (rd.error < 0) {
                        fprintf(stderr, "tokenctl credential-helper: cannot read standard input: %s.\n",
                                strerror(-rd.error));
                        return rd.error;
                }
                if (ch == '\n' && ++total > CREDENTIAL_INPUT_MAX)
                        return input_error(-E2BIG, "it is longer than %u bytes", CREDENTIAL_INPUT_MAX);
                if (n > 0 && line[n - 1] == '\r')
                        n--;
                line[n] = 0;
                if (n == 0)
                        break; /* a blank line, or the end */
                int r = input_line(&in, line, n);
                explicit_bzero(line, n);
                if (r < 0)
                        return r;
                if (ch < 0)
                        break; /* the end, after a line without a newline */
        }
        *ret = in;
        in = (CredentialInput) {};
        return 0;
}

static char ascii_lower(char c) {
        return c >= 'A' && c <= 'Z' ? (char) (c - 'A' + 'a') : c;
}

static bool ascii_case_equal(const char *a, const char *b) {
        for (; *a && *b; a++, b++)
                if (ascii_lower(*a) != ascii_lower(*b))
                        return false;
        return *a == *b;
}

bool tokenctl_credential_host_match(const char *host, char *const *hosts, size_t n_hosts) {
        for (size_t i = 0; host && i < n_hosts; i++)
                if (ascii_case_equal(host, hosts[i]))
                        return true;
        return false;
}

static bool is_digit(char c) {
        return c >= '0' && c <= '9';
}

static bool is_hex(char c) {
        return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* HOST or HOST:PORT as git writes it: a name of letters, digits, '-', '.'
 * and '_', or an IPv6 literal in brackets; a port of 1 to 65535. */
static bool host_valid(const char *h) {
        const char *p = h;
        if (strlen(h) > CREDENTIAL_HOST_LEN_MAX)
                return false;
        if (*p == '[') {
                for (p++; is_hex(*p) || *p == ':' || *p == '.'; p++)
                        ;
                if (*p != ']' || p == h + 1)
                        return false;
                p++;
        } else {
                for (; is_digit(*p) || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '-' ||
                       *p == '.' || *p == '_';
                     p++)
                        ;
                if (p == h)
                        return false;
        }
        if (*p == 0)
                return true;
        if (*p != ':' || !is_digit(p[1]))
                return false;
        unsigned port = 0;
        for (p++; is_digit(*p) && port <= 65535; p++)
                port = port * 10 + (unsigned) (*p - '0');
        return *p == 0 && port >= 1 && port <= 65535;
}

static bool username_valid(const char *u) {
        size_t l = strlen(u);
        if (l == 0 || l > CREDENTIAL_USERNAME_MAX)
                return false;
        for (const unsigned char *p = (const unsigned char *) u; *p; p++)
                if (*p < ' ' || *p == 0x7f)
                        return false;
        return true;
}

static int usage(void) {
        fprintf(stderr, "tokenctl credential-helper: usage: tokenctl credential-helper NAME --host HOST\n"
                "       [--host HOST]... [--username USER] [--scope S]... [--resource URI] [--min-ttl SECONDS]\n"
                "       get|store|erase\n");
        return EXIT_USAGE;
}

static int write_all(int fd, const char *p, size_t n) {
        while (n > 0) {
                ssize_t w = write(fd, p, n);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0)
                        return w < 0 ? -errno : -EIO;
                p += w;
                n -= (size_t) w;
        }
        return 0;
}

/* "get" for a description that matched: the token of credential name. */
static int answer_get(const char *name, json_object *scopes, const char *resource, int64_t min_ttl,
                      const char *username) {
        _cleanup_(json_object_put_erasep) json_object *reply = NULL;
        int r = tokenctl_fetch_token(name, scopes, resource, min_ttl, &reply);
        if (r != EXIT_OK)
                return r;
        const char *token;
        int64_t expires_at;
        r = tokenctl_token_usable(reply, &token, &expires_at);
        if (r != EXIT_OK)
                return r;

        /* git >= 2.41 takes password_expiry_utc and uses no password past it;
         * older ones ignore a key they do not know. */
        size_t size = strlen(username) + strlen(token) + 128;
        _cleanup_erase_ char *out = malloc(size);
        if (!out) {
                fprintf(stderr, "tokenctl: out of memory.\n");
                return EXIT_FAILURE_;
        }
        int n = snprintf(out, size, "username=%s\npassword=%s\npassword_expiry_utc=%" PRId64 "\n", username, token,
                         expires_at);
        if (n < 0 || (size_t) n >= size)
                return EXIT_FAILURE_;
        r = write_all(STDOUT_FILENO, out, (size_t) n);
        if (r < 0) {
                fprintf(stderr, "tokenctl credential-helper: cannot write the answer: %s.\n", strerror(-r));
                return EXIT_FAILURE_;
        }
        return EXIT_OK;
}

int tokenctl_credential_helper(int argc, char *argv[]) {
        enum { ARG_HOST = 0x100, ARG_USERNAME };
        static const struct option options[] = {
                { "host", required_argument, NULL, ARG_HOST },
                { "username", required_argument, NULL, ARG_USERNAME },
                TOKEN_REQUEST_OPTIONS,
                {},
        };
        _cleanup_(json_object_putp) json_object *scopes = json_object_new_array();
        TokenRequestOptions o = { .scopes = scopes, .min_ttl = TOKEN_HELPER_MIN_TTL_DEFAULT };
        char *hosts[CREDENTIAL_HOSTS_MAX];
        size_t n_hosts = 0;
        const char *username = CREDENTIAL_USERNAME_DEFAULT;
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0) {
                switch (c) {
                case ARG_HOST:
                        if (n_hosts >= CREDENTIAL_HOSTS_MAX) {
                                fprintf(stderr, "tokenctl credential-helper: at most %u --host can be given.\n",
                                        CREDENTIAL_HOSTS_MAX);
                                return EXIT_USAGE;
                        }
                        if (!host_valid(optarg)) {
                                fprintf(stderr, "tokenctl credential-helper: --host takes HOST or HOST:PORT, as in "
                                        "the URL: a name or [IPv6 address], a port of 1-65535.\n");
                                return EXIT_USAGE;
                        }
                        hosts[n_hosts++] = optarg;
                        break;
                case ARG_USERNAME:
                        if (!username_valid(optarg)) {
                                fprintf(stderr, "tokenctl credential-helper: --username takes 1 to %u characters, "
                                        "no control characters.\n", CREDENTIAL_USERNAME_MAX);
                                return EXIT_USAGE;
                        }
                        username = optarg;
                        break;
                default:
                        if (tokenctl_token_request_option("credential-helper", c, optarg, &o) <= 0)
                                return EXIT_USAGE;
                }
        }
        if (optind != argc - 2)
                return usage();
        const char *name = argv[optind], *op = argv[optind + 1];
        if (!tokenctl_credential_name_valid("credential-helper", name))
                return EXIT_USAGE;
        if (n_hosts == 0) {
                fprintf(stderr, "tokenctl credential-helper: give --host: the host(s) whose https URLs get the "
                        "token of '%s'.\n", name);
                return EXIT_USAGE;
        }

        bool get = streq(op, "get");
        if (!get && !streq(op, "store") && !streq(op, "erase"))
                return EXIT_OK; /* gitcredentials(7): ignore operations we do not know */

        _cleanup_(tokenctl_credential_input_done) CredentialInput in = {};
        if (tokenctl_credential_input_read(STDIN_FILENO, &in) < 0)
                return EXIT_USAGE;
        if (!get)
                return EXIT_OK; /* nothing stored, nothing to erase: tokend owns the tokens */

        /* Not ours to answer: git asks its next helper. A username other than
         * ours (from the URL, or config) may be another account. */
        if (!in.protocol || !ascii_case_equal(in.protocol, "https") ||
            !tokenctl_credential_host_match(in.host, hosts, n_hosts) ||
            (in.username && !streq(in.username, username)))
                return EXIT_OK;

        return answer_get(name, o.scopes, o.resource, o.min_ttl, username);
}
