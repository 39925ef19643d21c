/* SPDX-License-Identifier: MIT */
/* daemon/manager.c: the context: configuration, state file, socket, lifecycle. */
#include <malloc.h>
#include <stdio.h>
#include <sys/stat.h>

#include <systemd/sd-daemon.h>

#include "audit.h"
#include "common/fileio.h"
#include "common/log.h"
#include "common/util.h"
#include "credential.h"
#include "consent.h"
#include "engine.h"
#include "peer.h"
#include "policy.h"
#include "provider.h"
#include "store-migrate.h"

#define STATE_FILE "credentials.json"
#define INSTANCE_FILE "instance-id"
/* CREDENTIALS_MAX entries of up to about 2 KiB each (URLs are the long part). */
#define STATE_FILE_MAX (32U * 1024U * 1024U)
#define STOP_GRACE_USEC (10 * USEC_PER_SEC)
/* --store auto: how long the Secret Service has to answer at start-up. */
#define STORE_AUTO_PROBE_USEC (2 * USEC_PER_SEC)

static int env_dir(const char *var, const char *home_fallback, const char *suffix, char **ret) {
        const char *e = getenv(var);
        if (e && e[0] == '/')
                return asprintf(ret, "%s/%s", e, suffix) < 0 ? -ENOMEM : 0;
        const char *home = getenv("HOME");
        if (!home || home[0] != '/')
                return -ENXIO;
        return asprintf(ret, "%s/%s/%s", home, home_fallback, suffix) < 0 ? -ENOMEM : 0;
}

int manager_new(const ManagerConfig *cfg, Manager **ret) {
        Manager *m = calloc(1, sizeof *m);
        int r;

        if (!m)
                return -ENOMEM;
        m->owner_uid = geteuid();
        m->keep_fresh_usec = cfg->keep_fresh_usec;
        m->request_timeout_usec = cfg->request_timeout_usec ?: 15 * USEC_PER_SEC;
        m->consent_timeout_usec = cfg->consent_timeout_usec ?: CONSENT_TIMEOUT_DEFAULT_USEC;
        m->audit_coalesce_usec = cfg->audit_coalesce_usec;
        m->store_mode = strdup(cfg->store ?: "auto");
        if (!m->store_mode) {
                free(m);
                return -ENOMEM;
        }

        if (cfg->state_dir)
                m->state_dir = strdup(cfg->state_dir);
        else if (env_dir("XDG_STATE_HOME", ".local/state", "tokend", &m->state_dir) < 0)
                m->state_dir = NULL;
        if (!m->state_dir) {
                manager_free(m);
                return log_error_errno(ENXIO, "Cannot determine the state directory: set $XDG_STATE_HOME or $HOME");
        }
        if (cfg->policy_dir)
                m->policy_dir = strdup(cfg->policy_dir);
        else if (env_dir("XDG_CONFIG_HOME", ".config", "tokend/policy.d", &m->policy_dir) < 0)
                m->policy_dir = NULL;
        if (!m->policy_dir) {
                manager_free(m);
                return log_error_errno(ENXIO, "Cannot determine the policy directory: set $XDG_CONFIG_HOME or $HOME");
        }

        r = provider_default_dirs(PROVIDERS_DIR, &m->provider_dirs);
        if (r >= 0 && cfg->providers_dir) {
                /* Put the given directory first. */
                size_t n = 0;
                while (m->provider_dirs[n])
                        n++;
                char **d = realloc(m->provider_dirs, (n + 2) * sizeof(char *));
                if (d) {
                        m->provider_dirs = d;
                        memmove(d + 1, d, (n + 1) * sizeof(char *));
                        d[0] = strdup(cfg->providers_dir);
                }
                if (!d || !d[0])
                        r = -ENOMEM;
        }
        if (r < 0) {
                manager_free(m);
                return log_error_errno(r, "Cannot determine provider preset directories: %m");
        }

        /* Not sd_event_default(): the default loop checks it runs in its
         * thread with a gettid() syscall on every iteration. */
        r = sd_event_new(&m->event);
        if (r < 0) {
                manager_free(m);
                return log_error_errno(r, "Cannot create event loop: %m");
        }
        (void) sd_event_set_watchdog(m->event, true);

        r = hash_key_new(&m->hash_key);
        if (r >= 0)
                r = engine_new(m, &m->engine);
        if (r < 0) {
                manager_free(m);
                return log_error_errno(r, "Cannot set up the token cache: %m");
        }

        HttpOptions ho = { .ca_file = cfg->ca_file };
        r = http_new(m->event, &ho, &m->http);
        if (r >= 0)
                r = varlink_server_new(m->event, &m->varlink);
        if (r < 0) {
                manager_free(m);
                return log_error_errno(r, "Cannot set up: %m");
        }
        *ret = m;
        return 0;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        /* Pending adds are cancelled with their connections when the server goes. */
        m->varlink = varlink_server_free(m->varlink);
        store_migrate_free(m);
        consent_done(m);
        while (m->credentials) {
                Credential *c = m->credentials;
                credential_unlink(c);
                credential_free(c);
        }
        hashtab_done(&m->credentials_by_name);
        m->engine = engine_free(m->engine);
        m->http = http_free(m->http);
        m->store = store_free(m->store);
        m->audit = audit_free(m->audit);
        m->policy = policy_free(m->policy);
        free(m->policy_dir);
        sd_event_source_disable_unref(m->stop_timer);
        sd_event_source_disable_unref(m->status_timer);
        if (m->socket_path)
                (void) unlink(m->socket_path);
        free(m->socket_path);
        free(m->state_dir);
        free(m->instance);
        free(m->store_mode);
        provider_dirs_free(m->provider_dirs);
        sd_event_unref(m->event);
        free(m);
        return NULL;
}

int manager_load_policy(Manager *m, char **ret_error) {
        _cleanup_free_ char *error = NULL;
        Policy *p = NULL;

        int r = policy_load_dir(m->policy_dir, &p, &error);
        if (r < 0) {
                if (!m->policy) {
                        m->policy = policy_new_failsafe();
                        if (!m->policy)
                                return log_error_errno(ENOMEM, "Cannot set up the failsafe policy: %m");
                        log_error("Policy: %s. Running with the failsafe policy: every caller must ask, and the "
                                  "manager interface answers nobody until a reload succeeds",
                                  error ?: "out of memory");
                } else
                        log_error("Policy: %s. Keeping the policy in force", error ?: "out of memory");
                if (ret_error)
                        *ret_error = TAKE_PTR(error);
                return r;
        }
        policy_free(m->policy);
        m->policy = p;
        log_info("Policy: %zu agents from %s", policy_n_agents(p), m->policy_dir);
        consent_policy_changed(m);
        return 0;
}

uint64_t manager_name_hash(Manager *m, const char *name) {
        return siphash24(name, strlen(name), &m->hash_key);
}

Credential *manager_find_credential(Manager *m, const char *name) {
        for (HashNode *n = hashtab_first(&m->credentials_by_name, manager_name_hash(m, name)); n; n = hashtab_next(n)) {
                Credential *c = HASHTAB_ITEM(n, Credential, name_node);
                if (streq(c->name, name))
                        return c;
        }
        return NULL;
}

int manager_save_state(Manager *m) {
        _cleanup_(json_object_putp) json_object *root = json_object_new_object();
        json_object *a = json_object_new_array();
        if (!root || !a) {
                json_object_put(a);
                return log_error_errno(ENOMEM, "Cannot save state: %m");
        }
        json_object_object_add(root, "version", json_object_new_int(1));
        json_object_object_add(root, "credentials", a);
        for (Credential *c = m->credentials; c; c = c->next)
                json_object_array_add(a, credential_to_json(c, true));

        size_t len;
        const char *text = json_object_to_json_string_length(root, JSON_C_TO_STRING_PRETTY, &len);
        if (!text)
                return log_error_errno(ENOMEM, "Cannot save state: %m");
        int r = write_file_atomic(m->state_dir, STATE_FILE, text, len, 0600);
        if (r < 0)
                return log_error_errno(r, "Cannot write %s/%s: %m", m->state_dir, STATE_FILE);
        return 0;
}

static int manager_load_instance(Manager *m) {
        _cleanup_free_ char *path = NULL, *text = NULL;
        int r;

        if (asprintf(&path, "%s/%s", m->state_dir, INSTANCE_FILE) < 0)
                return -ENOMEM;
        r = read_file_full(path, 64, &text, NULL);
        if (r >= 0) {
                text[strcspn(text, "\n")] = 0;
                if (strlen(text) == 32 && strspn(text, "0123456789abcdef") == 32) {
                        m->instance = TAKE_PTR(text);
                        return 0;
                }
                log_warning("%s is malformed, creating a new instance id", path);
        } else if (r != -ENOENT)
                return log_error_errno(r, "Cannot read %s: %m", path);

        uint8_t id[16];
        char hex[34];
        r = random_bytes(id, sizeof id);
        if (r < 0)
                return log_error_errno(r, "Cannot get random bytes: %m");
        for (size_t i = 0; i < sizeof id; i++)
                snprintf(hex + 2 * i, 3, "%02x", id[i]);
        hex[32] = '\n';
        hex[33] = 0;
        r = write_file_atomic(m->state_dir, INSTANCE_FILE, hex, 33, 0600);
        if (r < 0)
                return log_error_errno(r, "Cannot write %s: %m", path);
        hex[32] = 0;
        m->instance = strdup(hex);
        return m->instance ? 0 : -ENOMEM;
}

/* Reads the state file: *ret is NULL when there is none. */
static int manager_read_state(Manager *m, json_object **ret) {
        _cleanup_free_ char *path = NULL, *text = NULL;
        size_t len;
        int r;

        if (asprintf(&path, "%s/%s", m->state_dir, STATE_FILE) < 0)
                return -ENOMEM;
        r = read_file_full(path, STATE_FILE_MAX, &text, &len);
        if (r == -ENOENT) {
                *ret = NULL;
                return 0;
        }
        if (r < 0)
                return log_error_errno(r, "Cannot read %s: %m", path);

        json_object *root = json_tokener_parse(text), *a;
        if (!root || !json_object_object_get_ex(root, "credentials", &a) || !json_object_is_type(a, json_type_array)) {
                json_object_put(root);
                return log_error_errno(EBADMSG, "%s is malformed; refusing to start rather than lose credentials", path);
        }
        *ret = root;
        return 0;
}

/* The backend an entry of the state file says holds its secrets. Entries
 * written before there was a choice name none: the keyring. */
static const char *state_entry_store(json_object *o) {
        json_object *v;
        if (!json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, "store", &v) ||
            json_object_is_type(v, json_type_null))
                return STORE_KEYRING;
        return json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
}

static bool store_name_known(const char *name) {
        return streq(name, STORE_KEYRING) || streq(name, STORE_SECRET_SERVICE);
}

int manager_open_store(Manager *m, const char *name, Store **ret) {
        Store *b = store_router_get(m->store, name);
        int r;

        if (!b) {
                if (streq(name, STORE_KEYRING))
                        r = store_keyring_open(m->instance, &b);
                else if (streq(name, STORE_SECRET_SERVICE))
                        r = store_secret_open(m->event, m->instance, NULL, &b);
                else
                        r = -EINVAL;
                if (r < 0)
                        return r;
                r = store_router_add(m->store, b);
                if (r < 0)
                        return r;
        }
        if (ret)
                *ret = b;
        return 0;
}

static void manager_on_store_state(Store *s, void *userdata);

/* Picks the store for new credentials (--store); for "auto", the Secret
 * Service when one is running and its default collection is unlocked.
 * *ret_probe is the Secret Service store opened to ask, if any; why[] says
 * why, for the log (it must outlive *ret_probe). */
static const char *manager_pick_store(Manager *m, Store **ret_probe, char *why, size_t why_size) {
        const char *reason = NULL;

        *ret_probe = NULL;
        why[0] = 0;
        if (streq(m->store_mode, STORE_KEYRING) || streq(m->store_mode, STORE_SECRET_SERVICE))
                return m->store_mode;
        if (!store_secret_bus_configured()) {
                snprintf(why, why_size, "no D-Bus session bus");
                return STORE_KEYRING;
        }
        int r = store_secret_open(m->event, m->instance, NULL, ret_probe);
        if (r < 0) {
                log_warning_errno(r, "Cannot set up the Secret Service store, ignoring: %m");
                snprintf(why, why_size, "cannot set up the Secret Service store");
                return STORE_KEYRING;
        }
        /* Do not let the bus start a Secret Service just to be asked. */
        store_secret_wait_ready(*ret_probe, STORE_AUTO_PROBE_USEC, true);
        if (streq(store_state(*ret_probe, &reason, NULL), STORE_STATE_OK)) {
                snprintf(why, why_size, "the Secret Service answered and its default collection is unlocked");
                return STORE_SECRET_SERVICE;
        }
        snprintf(why, why_size, "%s", reason ?: "the Secret Service is not usable");
        return STORE_KEYRING;
}

/* Opens, behind one router, the store for new credentials (first: the
 * router's default), the keyring (always: it is also the Secret Service's
 * write-ahead copy), and the Secret Service when a credential of the state
 * file keeps its secrets there. */
static int manager_open_stores(Manager *m, json_object *root) {
        json_object *a = NULL;
        bool want_secret_service = false;
        Store *probe = NULL;
        const char *reason;
        char why[256];
        unsigned pending;
        int r;

        if (root)
                json_object_object_get_ex(root, "credentials", &a);
        for (size_t i = 0; a && i < json_object_array_length(a); i++) {
                const char *where = state_entry_store(json_object_array_get_idx(a, i));
                if (!store_name_known(where))
                        return log_error_errno(EBADMSG,
                                               "Entry %zu of the state file keeps its secrets in store \"%s\", which "
                                               "this tokend does not know; refusing to start rather than lose them",
                                               i, where);
                want_secret_service = want_secret_service || streq(where, STORE_SECRET_SERVICE);
        }

        r = store_router_new(&m->store);
        if (r < 0)
                return log_error_errno(r, "Cannot set up the store: %m");

        const char *def = manager_pick_store(m, &probe, why, sizeof why);
        if (probe && (streq(def, STORE_SECRET_SERVICE) || want_secret_service))
                r = store_router_add(m->store, TAKE_PTR(probe));
        probe = store_free(probe);
        if (r >= 0)
                r = manager_open_store(m, def, NULL);
        if (r >= 0)
                r = store_router_set_default(m->store, def);
        if (r >= 0)
                r = manager_open_store(m, STORE_KEYRING, NULL);
        if (r >= 0 && want_secret_service)
                r = manager_open_store(m, STORE_SECRET_SERVICE, NULL);
        if (r < 0)
                return log_error_errno(r, "Cannot open the %s store: %m", def);

        Store *d = store_router_get(m->store, def);
        if (streq(def, STORE_SECRET_SERVICE))
                store_secret_wait_ready(d, 0, false);
        const char *st = store_state(d, &reason, &pending);
        log_info("Store for new credentials: %s (--store %s%s%s); its state: %s%s%s", def, m->store_mode,
                 why[0] ? ": " : "", why, st, reason ? ": " : "", strempty(reason));
        m->store_state_seen = store_state(m->store, NULL, NULL);
        store_watch(m->store, manager_on_store_state, m);
        return 0;
}

static unsigned credential_secrets_needed(Credential *c) {
        return (1U << SECRET_REFRESH_TOKEN) | (c->auth_method != OAUTH_AUTH_NONE ? 1U << SECRET_CLIENT_SECRET : 0);
}

static const char *secret_kind_label(SecretKind k) {
        return k == SECRET_REFRESH_TOKEN ? "refresh token" : "client secret";
}

/* Loads a credential's secrets at start-up. A store that is locked or away
 * does not cost the credential its grant: it waits for the store. */
static void manager_load_secrets(Manager *m, Credential *c) {
        const char *where = store_where(m->store, c->name);
        bool wait = false, missing = false;

        for (SecretKind k = 0; k < _SECRET_KIND_MAX; k++) {
                if (!(credential_secrets_needed(c) & (1U << k)))
                        continue;
                char **slot = k == SECRET_REFRESH_TOKEN ? &c->refresh_token : &c->client_secret;
                int r = store_load(m->store, c->name, k, slot);
                if (r >= 0) {
                        c->secrets_loaded |= 1U << k;
                        continue;
                }
                if (store_error_is_transient(r) && c->state == CREDENTIAL_OK) {
                        wait = true;
                        continue;
                }
                log_error_errno(r, "Credential %s: %s not in the %s store (%m); re-authentication required", c->name,
                                secret_kind_label(k), where);
                c->state = CREDENTIAL_REAUTH_REQUIRED;
                credential_set_last_error(c, "%s missing from the %s store", secret_kind_label(k), where);
                missing = true;
        }
        /* Waiting is for credentials that would work once the store answers. */
        if (wait && !missing) {
                const char *reason;
                (void) store_state(m->store, &reason, NULL);
                log_warning("Credential %s: the %s store cannot be read now (%s); waiting for it", c->name, where,
                            strna(reason));
                c->secrets_deferred = true;
                c->state = CREDENTIAL_REAUTH_REQUIRED;
                credential_set_last_error(c, "waiting for the %s store: %s", where, strna(reason));
        }
        if (!c->refresh_token)
                c->refresh_token = secret_strdup("-");
}

static void manager_on_deferred_loaded(Store *s, const char *credential, SecretKind kind, int r, char *secret,
                                       void *userdata) {
        Manager *m = userdata;
        Credential *c = manager_find_credential(m, credential);
        (void) s;

        if (!c || !c->secrets_deferred) {
                erase_and_free(secret);
                return;
        }
        c->secrets_loading &= ~(1U << kind);
        if (r < 0) {
                if (store_error_is_transient(r))
                        return; /* tried again when the store says "ok" */
                log_error_errno(r, "Credential %s: %s not in the %s store (%m); re-authentication required", c->name,
                                secret_kind_label(kind), store_where(m->store, c->name));
                c->secrets_deferred = false;
                credential_set_last_error(c, "%s missing from the %s store", secret_kind_label(kind),
                                          store_where(m->store, c->name));
                manager_update_status(m);
                return;
        }
        char **slot = kind == SECRET_REFRESH_TOKEN ? &c->refresh_token : &c->client_secret;
        erase_and_free(*slot);
        *slot = secret;
        c->secrets_loaded |= 1U << kind;
        if ((c->secrets_loaded & credential_secrets_needed(c)) != credential_secrets_needed(c))
                return;
        c->secrets_deferred = false;
        c->state = CREDENTIAL_OK;
        c->last_error = mfree(c->last_error);
        log_info("Credential %s: secrets loaded from the %s store", c->name, store_where(m->store, c->name));
        manager_update_status(m);
}

/* Loads, without blocking, the secrets of credentials waiting for their store. */
static void manager_retry_deferred(Manager *m) {
        for (Credential *c = m->credentials; c; c = c->next) {
                if (!c->secrets_deferred)
                        continue;
                for (SecretKind k = 0; k < _SECRET_KIND_MAX; k++) {
                        unsigned bit = 1U << k;
                        if (!(credential_secrets_needed(c) & bit) || ((c->secrets_loaded | c->secrets_loading) & bit))
                                continue;
                        if (store_load_async(m->store, c->name, k, false, manager_on_deferred_loaded, m) >= 0)
                                c->secrets_loading |= bit;
                }
        }
}

static void manager_on_store_state(Store *s, void *userdata) {
        Manager *m = userdata;
        const char *reason;
        unsigned pending;
        const char *st = store_state(s, &reason, &pending);

        if (!streq_ptr(st, m->store_state_seen)) {
                const char *plural = pending == 1 ? "" : "s";
                if (streq(st, STORE_STATE_OK))
                        log_info("Store %s: ok (%u write%s pending)", store_name(s), pending, plural);
                else
                        log_warning("Store %s: %s (%s; %u write%s pending)", store_name(s), st, strna(reason), pending,
                                    plural);
                m->store_state_seen = st;
        }
        if (streq(st, STORE_STATE_OK))
                manager_retry_deferred(m);
        manager_update_status(m);
}

static int manager_load_state(Manager *m, json_object *root) {
        json_object *a;
        int r;

        if (!root)
                return 0;
        json_object_object_get_ex(root, "credentials", &a);
        for (size_t i = 0; i < json_object_array_length(a); i++) {
                json_object *o = json_object_array_get_idx(a, i);
                Credential *c;
                r = credential_from_json(m, o, &c);
                if (r < 0) {
                        log_error_errno(r, "%s/%s: entry %zu is malformed, skipping: %m", m->state_dir, STATE_FILE, i);
                        continue;
                }
                if (manager_find_credential(m, c->name) || m->n_credentials >= CREDENTIALS_MAX) {
                        log_error("%s/%s: duplicate or excess entry %s, skipping", m->state_dir, STATE_FILE, c->name);
                        credential_free(c);
                        continue;
                }
                r = store_router_place(m->store, c->name, state_entry_store(o));
                if (r < 0) {
                        credential_free(c);
                        return log_error_errno(r, "Cannot place credential %s: %m", c->name);
                }
                r = credential_link(m, c);
                if (r < 0) {
                        credential_free(c);
                        return log_error_errno(r, "Cannot load credential %s: %m", c->name);
                }
                manager_load_secrets(m, c);
        }
        log_info("Loaded %u credentials from %s/%s", m->n_credentials, m->state_dir, STATE_FILE);
        return 0;
}

/* Identifies the peer once, at connect: its identity, kept as the connection's
 * userdata, is what WhoAmI answers and what the audit trail records. */
static int on_connect(VarlinkServer *s, VarlinkConnection *conn, void *userdata) {
        Manager *m = userdata;
        const VarlinkPeer *peer = varlink_connection_peer(conn);

        if (m->stopping)
                return -ESHUTDOWN;

        PeerIdentity *id = calloc(1, sizeof *id);
        if (!id)
                return -ENOMEM;
        int r = peer_identify(peer, id);
        if (r == -ESRCH) {
                /* Gone, or its PID recycled, before it could be identified:
                 * nobody to answer. */
                free(id);
                log_debug("Refusing connection from pid %d: the caller is gone", (int) peer->pid);
                return -ECONNREFUSED;
        }
        if (r < 0) {
                /* /proc unreadable (another uid, hidepid=): keep what the
                 * kernel said at connect, without exe, cgroup or unit. */
                log_debug_errno(r, "Cannot identify pid %d fully, keeping its credentials only: %m", (int) peer->pid);
                *id = (PeerIdentity) { .uid = peer->uid, .gid = peer->gid, .pid = peer->pid, .pidfd = -1 };
        }
        varlink_connection_set_userdata(conn, id);

        if (peer->uid != m->owner_uid && !policy_match(m->policy, id)) {
                log_notice("Refusing connection from uid %u (pid %d): tokend serves uid %u, and other uids only "
                           "when its policy names them as agents", (unsigned) peer->uid, (int) peer->pid,
                           (unsigned) m->owner_uid);
                audit_log(m, &(AuditRecord) { .event = AUDIT_DENY, .agent = id,
                                              .reason = "org.varlink.service.PermissionDenied",
                                              .message = "tokend deny: connection from another uid refused" });
                return -EPERM;
        }
        if (peer->uid != m->owner_uid &&
            varlink_server_connections_of_uid(s, peer->uid) > CONNECTIONS_PER_UID_MAX) {
                /* A sandbox uid may not take the slots the owner and its
                 * agents need. */
                log_notice("Refusing connection from uid %u (pid %d): it has %u open already", (unsigned) peer->uid,
                           (int) peer->pid, CONNECTIONS_PER_UID_MAX);
                return -EUSERS;
        }
        return 0;
}

static void on_disconnect(VarlinkServer *s, VarlinkConnection *conn, void *userdata) {
        Manager *m = userdata;
        PeerIdentity *id = varlink_connection_get_userdata(conn);
        (void) s;

        varlink_connection_set_userdata(conn, NULL);
        if (id) {
                audit_agent_gone(m, id); /* the issues counted for it go on the record */
                peer_identity_done(id);
                free(id);
        }
}

static int manager_listen(Manager *m, const char *socket_path) {
        int n = sd_listen_fds(true);
        int r;

        if (n < 0)
                return log_error_errno(n, "Cannot get sockets from the service manager: %m");
        if (n > 0 && !socket_path) {
                for (int fd = SD_LISTEN_FDS_START; fd < SD_LISTEN_FDS_START + n; fd++) {
                        if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0)
                                return log_error_errno(EINVAL, "Passed file descriptor %d is not a listening Unix stream socket", fd);
                        r = varlink_server_listen_fd(m->varlink, fd);
                        if (r < 0)
                                return log_error_errno(r, "Cannot listen on passed socket: %m");
                }
                log_info("Listening on %d socket(s) passed by the service manager", n);
                return 0;
        }

        _cleanup_free_ char *path = NULL;
        if (socket_path)
                path = strdup(socket_path);
        else {
                const char *rt = getenv("XDG_RUNTIME_DIR");
                if (!rt || rt[0] != '/')
                        return log_error_errno(ENXIO, "$XDG_RUNTIME_DIR is not set; pass --socket PATH");
                _cleanup_free_ char *dir = NULL;
                if (asprintf(&dir, "%s/tokend", rt) < 0)
                        return -ENOMEM;
                r = mkdir_private(dir);
                if (r < 0)
                        return log_error_errno(r, "Cannot create %s: %m", dir);
                if (asprintf(&path, "%s/socket", dir) < 0)
                        return -ENOMEM;
        }
        if (!path)
                return -ENOMEM;
        r = varlink_server_listen_path(m->varlink, path, 0600);
        if (r == -EADDRINUSE)
                return log_error_errno(r, "Another tokend is already listening on %s", path);
        if (r < 0)
                return log_error_errno(r, "Cannot listen on %s: %m", path);
        log_info("Listening on %s", path);
        m->socket_path = TAKE_PTR(path);
        return 0;
}

int manager_start(Manager *m, const char *socket_path) {
        int r;

        r = mkdir_private(m->state_dir);
        if (r < 0)
                return log_error_errno(r, "Cannot create state directory %s: %m", m->state_dir);
        remove_stale_temp_files(m->state_dir);
        r = audit_new(m->owner_uid, m->state_dir, &m->audit);
        if (r < 0)
                return log_error_errno(r, "Cannot set up the audit trail: %m");

        r = manager_load_instance(m);
        if (r < 0)
                return r;
        _cleanup_(json_object_putp) json_object *root = NULL;
        r = manager_read_state(m, &root);
        if (r < 0)
                return r;
        r = manager_open_stores(m, root);
        if (r < 0)
                return r;
        r = manager_load_state(m, root);
        if (r < 0)
                return r;
        /* The parsed state file can take tens of megabytes with thousands of
         * credentials: free it now, and give its pages back to the kernel
         * (they lie below the credentials allocated after it). */
        json_object_put(TAKE_PTR(root));
        (void) malloc_trim(0);
        (void) manager_load_policy(m, NULL);
        r = consent_load(m);
        if (r < 0)
                return r;

        (void) varlink_server_set_info(m->varlink, "tokend", "tokend", PACKAGE_VERSION, PACKAGE_URL);
        varlink_server_set_callbacks(m->varlink, on_connect, on_disconnect, m);
        if ((r = varlink_server_add_interface(m->varlink, &agent_interface)) < 0 ||
            (r = varlink_server_add_interface(m->varlink, &manager_interface)) < 0)
                return log_error_errno(r, "Cannot register interfaces: %m");
        return manager_listen(m, socket_path);
}

#define STATUS_PERIOD_USEC USEC_PER_SEC

static void manager_send_status(Manager *m) {
        unsigned reauth = 0;
        for (Credential *c = m->credentials; c; c = c->next)
                reauth += c->state != CREDENTIAL_OK;
        const char *st = m->store ? store_state(m->store, NULL, NULL) : "none";
        (void) sd_notifyf(false,
                          "STATUS=%u credentials (%u need login), %u tokens cached, %u waiting for consent, "
                          "%u grants, store: %s (%s)%s",
                          m->n_credentials, reauth, engine_count_cached(m), m->n_requests, m->n_grants,
                          m->store ? store_name(m->store) : "none", st,
                          policy_is_failsafe(m->policy) ? ", policy: failsafe (fix it and reload)" : "");
        m->status_sent = now_monotonic_usec();
}

static int on_status_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        (void) s;
        (void) usec;
        manager_send_status(userdata);
        return 0;
}

void manager_update_status(Manager *m) {
        manager_send_status(m);
}

void manager_update_status_soon(Manager *m) {
        /* Called after every refresh: with thousands of credentials, one
         * line a second says as much, for a fraction of the work. */
        uint64_t now = now_monotonic_usec();
        if (m->status_sent == 0 || now >= m->status_sent + STATUS_PERIOD_USEC || !m->event) {
                manager_send_status(m);
                return;
        }
        if (m->status_timer && sd_event_source_get_enabled(m->status_timer, NULL) > 0)
                return; /* one is coming */
        uint64_t when = m->status_sent + STATUS_PERIOD_USEC;
        int r = m->status_timer ? sd_event_source_set_time(m->status_timer, when)
                                : sd_event_add_time(m->event, &m->status_timer, CLOCK_MONOTONIC, when,
                                                    USEC_PER_SEC / 10, on_status_timer, m);
        if (r >= 0)
                r = sd_event_source_set_enabled(m->status_timer, SD_EVENT_ONESHOT);
        if (r < 0)
                manager_send_status(m);
}

static int on_stop_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        (void) s;
        (void) usec;
        log_warning("Refreshes still in flight after the grace period; exiting anyway");
        return sd_event_exit(m->event, 0);
}

void manager_check_stop(Manager *m) {
        if (m->stopping && !engine_busy(m))
                (void) sd_event_exit(m->event, 0);
}

void manager_stop(Manager *m) {
        if (m->stopping)
                return;
        m->stopping = true;
        consent_flush(m);
        engine_flush_stores(m);
        (void) sd_notify(false, "STOPPING=1\nSTATUS=Stopping: finishing refreshes in flight");
        log_info("Stopping");
        if (!engine_busy(m)) {
                (void) sd_event_exit(m->event, 0);
                return;
        }
        (void) sd_event_add_time_relative(m->event, &m->stop_timer, CLOCK_MONOTONIC, STOP_GRACE_USEC, 0,
                                          on_stop_timeout, m);
}
