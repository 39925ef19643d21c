/* SPDX-License-Identifier: MIT */
/* daemon/main.c: tokend entry point: arguments, hardening, event loop. */
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include <systemd/sd-daemon.h>

#include "common/log.h"
#include "common/util.h"
#include "audit.h"
#include "consent.h"
#include "manager.h"

static const char *arg_socket;
static const char *arg_ca_file;
static const char *arg_providers_dir;
static const char *arg_store = "auto";
static uint64_t arg_keep_fresh_usec = 15 * 60 * USEC_PER_SEC;
static uint64_t arg_request_timeout_usec = 15 * USEC_PER_SEC;
static const char *arg_policy_dir;
static uint64_t arg_consent_timeout_usec = CONSENT_TIMEOUT_DEFAULT_USEC;
static uint64_t arg_audit_coalesce_usec = AUDIT_COALESCE_USEC;

static void help(void) {
        printf("Usage: tokend [OPTIONS]\n\n"
               "Brokers short-lived OAuth access tokens to local agents over Varlink.\n\n"
               "  -h --help                  Show this help\n"
               "     --version               Show the version\n"
               "     --socket PATH           Listen on PATH (default: socket activation, or\n"
               "                             $XDG_RUNTIME_DIR/tokend/socket)\n"
               "     --ca-file FILE          CA bundle for provider TLS (default: the system's)\n"
               "     --providers-dir DIR     Look for provider presets in DIR first (then\n"
               "                             $XDG_CONFIG_HOME/tokend/providers, then " PROVIDERS_DIR ")\n"
               "     --keep-fresh SECONDS    Keep refreshing a token this long after its last\n"
               "                             use (default: 900; 0: only refresh on demand)\n"
               "     --request-timeout SECONDS\n"
               "                             Longest wait of a GetToken for the provider (default: 15)\n"
               "     --policy-dir DIR        Read the agent policy from DIR (default:\n"
               "                             $XDG_CONFIG_HOME/tokend/policy.d); reread on SIGHUP\n"
               "     --consent-timeout SECONDS\n"
               "                             How long a request waits for the owner's consent\n"
               "                             (default: 120)\n"
               "     --audit-coalesce SECONDS\n"
               "                             The same token issued again to the same connection\n"
               "                             within this is counted in one audit record (default:\n"
               "                             1; 0: a record for every issue; at most 60)\n"
               "     --store STORE           Where new credentials keep their secrets: auto,\n"
               "                             keyring or secret-service (default: auto, the\n"
               "                             Secret Service when it runs unlocked, else keyring)\n"
               "     --log-level LEVEL       debug, info, notice, warning or err (default: info)\n\n"
               "State lives in $XDG_STATE_HOME/tokend, secrets in the Secret Service (durable)\n"
               "or the kernel keyring (RAM only); each credential stays in the store that\n"
               "holds it until 'tokenctl store migrate'.\n");
}

static int parse_seconds(const char *s, uint64_t max, uint64_t *ret) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno != 0 || end == s || *end != 0 || s[0] == '-' || v > max)
                return -EINVAL;
        *ret = (uint64_t) v * USEC_PER_SEC;
        return 0;
}

static int parse_argv(int argc, char *argv[]) {
        enum { ARG_VERSION = 0x100, ARG_SOCKET, ARG_CA_FILE, ARG_PROVIDERS_DIR, ARG_KEEP_FRESH, ARG_REQUEST_TIMEOUT,
               ARG_LOG_LEVEL, ARG_STORE, ARG_POLICY_DIR, ARG_CONSENT_TIMEOUT, ARG_AUDIT_COALESCE };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "socket", required_argument, NULL, ARG_SOCKET },
                { "ca-file", required_argument, NULL, ARG_CA_FILE },
                { "providers-dir", required_argument, NULL, ARG_PROVIDERS_DIR },
                { "keep-fresh", required_argument, NULL, ARG_KEEP_FRESH },
                { "request-timeout", required_argument, NULL, ARG_REQUEST_TIMEOUT },
                { "log-level", required_argument, NULL, ARG_LOG_LEVEL },
                { "store", required_argument, NULL, ARG_STORE },
                { "policy-dir", required_argument, NULL, ARG_POLICY_DIR },
                { "consent-timeout", required_argument, NULL, ARG_CONSENT_TIMEOUT },
                { "audit-coalesce", required_argument, NULL, ARG_AUDIT_COALESCE },
                {},
        };
        static const struct {
                const char *name;
                int level;
        } levels[] = {
                { "debug", LOG_DEBUG }, { "info", LOG_INFO }, { "notice", LOG_NOTICE },
                { "warning", LOG_WARNING }, { "err", LOG_ERR },
        };
        int c;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("tokend %s\n", PACKAGE_VERSION);
                        return 0;
                case ARG_SOCKET:
                        arg_socket = optarg;
                        break;
                case ARG_CA_FILE:
                        arg_ca_file = optarg;
                        break;
                case ARG_PROVIDERS_DIR:
                        arg_providers_dir = optarg;
                        break;
                case ARG_KEEP_FRESH:
                        if (parse_seconds(optarg, 7 * 24 * 3600, &arg_keep_fresh_usec) < 0)
                                return log_error_errno(EINVAL, "Invalid --keep-fresh: %s", optarg);
                        break;
                case ARG_REQUEST_TIMEOUT:
                        if (parse_seconds(optarg, 3600, &arg_request_timeout_usec) < 0 || arg_request_timeout_usec == 0)
                                return log_error_errno(EINVAL, "Invalid --request-timeout: %s", optarg);
                        break;
                case ARG_POLICY_DIR:
                        if (optarg[0] != '/')
                                return log_error_errno(EINVAL, "Invalid --policy-dir: %s (an absolute path)", optarg);
                        arg_policy_dir = optarg;
                        break;
                case ARG_CONSENT_TIMEOUT:
                        if (parse_seconds(optarg, 24 * 3600, &arg_consent_timeout_usec) < 0 ||
                            arg_consent_timeout_usec == 0)
                                return log_error_errno(EINVAL, "Invalid --consent-timeout: %s", optarg);
                        break;
                case ARG_AUDIT_COALESCE:
                        if (parse_seconds(optarg, 60, &arg_audit_coalesce_usec) < 0)
                                return log_error_errno(EINVAL, "Invalid --audit-coalesce: %s (0 to 60 seconds)", optarg);
                        break;
                case ARG_STORE:
                        if (!streq(optarg, "auto") && !streq(optarg, STORE_KEYRING) &&
                            !streq(optarg, STORE_SECRET_SERVICE))
                                return log_error_errno(EINVAL, "Invalid --store: %s (auto, keyring or secret-service)",
                                                       optarg);
                        arg_store = optarg;
                        break;
                case ARG_LOG_LEVEL: {
                        bool found = false;
                        for (size_t i = 0; i < ELEMENTSOF(levels); i++)
                                if (streq(optarg, levels[i].name)) {
                                        log_set_max_level(levels[i].level);
                                        found = true;
                                }
                        if (!found)
                                return log_error_errno(EINVAL, "Invalid --log-level: %s", optarg);
                        break;
                }
                case '?':
                        return -EINVAL;
                default:
                        return -EINVAL;
                }
        }
        if (optind < argc)
                return log_error_errno(EINVAL, "Unexpected argument: %s", argv[optind]);
        return 1;
}

/* No core dumps, no ptrace attach by other unprivileged processes of ours,
 * and enough file descriptors for many agents. */
static void harden_process(void) {
        struct rlimit rl = { 0, 0 };
        if (setrlimit(RLIMIT_CORE, &rl) < 0)
                log_warning_errno(errno, "Cannot disable core dumps, ignoring: %m");
        if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
                log_warning_errno(errno, "Cannot mark process non-dumpable, ignoring: %m");
        if (getrlimit(RLIMIT_NOFILE, &rl) >= 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max > 65536 ? 65536 : rl.rlim_max;
                (void) setrlimit(RLIMIT_NOFILE, &rl);
        }
}

/* Test-only fault switch (tests/system): with $TOKEND_TEST_FAULTS=1, SIGUSR2
 * makes the event loop hang for good, so that the service manager's watchdog
 * (WatchdogSec=) has to kill and restart the daemon. Off unless asked for. */
static bool test_faults_enabled(void) {
        const char *e = getenv("TOKEND_TEST_FAULTS");
        return e && streq(e, "1");
}

static int on_fault_hang(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        (void) s;
        (void) si;
        (void) userdata;
        log_warning("TOKEND_TEST_FAULTS: SIGUSR2 received, hanging the event loop on purpose");
        for (;;)
                sleep(60);
        return 0;
}

static int on_reload(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Manager *m = userdata;
        (void) s;
        (void) si;
        (void) sd_notifyf(false, "RELOADING=1\nMONOTONIC_USEC=%" PRIu64, now_monotonic_usec());
        (void) manager_load_policy(m, NULL); /* logs what is wrong */
        (void) sd_notify(false, "READY=1");
        manager_update_status(m);
        return 0;
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        (void) s;
        (void) si;
        manager_stop(userdata);
        return 0;
}

int main(int argc, char *argv[]) {
        Manager *m = NULL;
        int r;

        if (getenv("JOURNAL_STREAM"))
                log_set_prefix_priority(true);
        r = parse_argv(argc, argv);
        if (r <= 0)
                return r < 0 ? 2 : 0;

        harden_process();

        sigset_t ss;
        sigemptyset(&ss);
        sigaddset(&ss, SIGTERM);
        sigaddset(&ss, SIGINT);
        sigaddset(&ss, SIGHUP);
        sigaddset(&ss, SIGPIPE);
        if (test_faults_enabled())
                sigaddset(&ss, SIGUSR2);
        if (sigprocmask(SIG_BLOCK, &ss, NULL) < 0)
                return log_error_errno(errno, "Cannot block signals: %m"), 1;

        ManagerConfig cfg = {
                .socket_path = arg_socket,
                .ca_file = arg_ca_file,
                .providers_dir = arg_providers_dir,
                .keep_fresh_usec = arg_keep_fresh_usec,
                .request_timeout_usec = arg_request_timeout_usec,
                .store = arg_store,
                .policy_dir = arg_policy_dir,
                .consent_timeout_usec = arg_consent_timeout_usec,
                .audit_coalesce_usec = arg_audit_coalesce_usec,
        };
        r = manager_new(&cfg, &m);
        if (r < 0)
                goto finish;
        r = manager_start(m, arg_socket);
        if (r < 0)
                goto finish;
        if ((r = sd_event_add_signal(m->event, NULL, SIGTERM, on_signal, m)) < 0 ||
            (r = sd_event_add_signal(m->event, NULL, SIGINT, on_signal, m)) < 0 ||
            (r = sd_event_add_signal(m->event, NULL, SIGHUP, on_reload, m)) < 0) {
                log_error_errno(r, "Cannot watch signals: %m");
                goto finish;
        }
        if (test_faults_enabled()) {
                r = sd_event_add_signal(m->event, NULL, SIGUSR2, on_fault_hang, m);
                if (r < 0) {
                        log_error_errno(r, "Cannot watch SIGUSR2: %m");
                        goto finish;
                }
                log_warning("TOKEND_TEST_FAULTS=1: test fault switch armed (SIGUSR2 hangs the event loop)");
        }

        (void) sd_notify(false, "READY=1");
        manager_update_status(m);
        log_info("tokend %s ready (store: %s)", PACKAGE_VERSION, store_name(m->store));

        r = sd_event_loop(m->event);
        if (r < 0)
                log_error_errno(r, "Event loop failed: %m");
finish:
        manager_free(m);
        return r < 0 ? 1 : 0;
}
