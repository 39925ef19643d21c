/* SPDX-License-Identifier: MIT */
/* daemon/manager.c: the context: configuration, state file, socket, lifecycle. */
#include <stdio.h>
#include <sys/stat.h>

#include <systemd/sd-daemon.h>

#include "common/fileio.h"
#include "common/log.h"
#include "common/util.h"
#include "credential.h"
#include "engine.h"
#include "provider.h"

#define STATE_FILE "credentials.json"
#define INSTANCE_FILE "instance-id"
#define STATE_FILE_MAX (4U * 1024U * 1024U)
#define STOP_GRACE_USEC (10 * USEC_PER_SEC)

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

        if (cfg->state_dir)
                m->state_dir = strdup(cfg->state_dir);
        else if (env_dir("XDG_STATE_HOME", ".local/state", "tokend", &m->state_dir) < 0)
                m->state_dir = NULL;
        if (!m->state_dir) {
                manager_free(m);
                return log_error_errno(ENXIO, "Cannot determine the state directory: set $XDG_STATE_HOME or $HOME");
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

        r = sd_event_default(&m->event);
        if (r < 0) {
                manager_free(m);
                return log_error_errno(r, "Cannot create event loop: %m");
        }
        (void) sd_event_set_watchdog(m->event, true);

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
        while (m->credentials) {
                Credential *c = m->credentials;
                credential_unlink(c);
                credential_free(c);
        }
        m->http = http_free(m->http);
        m->store = store_free(m->store);
        sd_event_source_disable_unref(m->stop_timer);
        if (m->socket_path)
                (void) unlink(m->socket_path);
        free(m->socket_path);
        free(m->state_dir);
        free(m->instance);
        provider_dirs_free(m->provider_dirs);
        sd_event_unref(m->event);
        free(m);
        return NULL;
}

Credential *manager_find_credential(Manager *m, const char *name) {
        for (Credential *c = m->credentials; c; c = c->next)
                if (streq(c->name, name))
                        return c;
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

static int manager_load_state(Manager *m) {
        _cleanup_free_ char *path = NULL, *text = NULL;
        size_t len;
        int r;

        if (asprintf(&path, "%s/%s", m->state_dir, STATE_FILE) < 0)
                return -ENOMEM;
        r = read_file_full(path, STATE_FILE_MAX, &text, &len);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return log_error_errno(r, "Cannot read %s: %m", path);

        _cleanup_(json_object_putp) json_object *root = json_tokener_parse(text);
        json_object *a;
        if (!root || !json_object_object_get_ex(root, "credentials", &a) || !json_object_is_type(a, json_type_array))
                return log_error_errno(EBADMSG, "%s is malformed; refusing to start rather than lose credentials", path);

        for (size_t i = 0; i < json_object_array_length(a); i++) {
                Credential *c;
                r = credential_from_json(m, json_object_array_get_idx(a, i), &c);
                if (r < 0) {
                        log_error_errno(r, "%s: entry %zu is malformed, skipping: %m", path, i);
                        continue;
                }
                if (manager_find_credential(m, c->name) || m->n_credentials >= CREDENTIALS_MAX) {
                        log_error("%s: duplicate or excess entry %s, skipping", path, c->name);
                        credential_free(c);
                        continue;
                }
                r = store_load(m->store, c->name, SECRET_REFRESH_TOKEN, &c->refresh_token);
                if (r < 0) {
                        log_error_errno(r, "Credential %s: refresh token not in the %s store (%m); re-authentication required",
                                        c->name, store_name(m->store));
                        c->state = CREDENTIAL_REAUTH_REQUIRED;
                        credential_set_last_error(c, "refresh token missing from the %s store", store_name(m->store));
                        c->refresh_token = secret_strdup("-");
                }
                if (c->auth_method != OAUTH_AUTH_NONE) {
                        r = store_load(m->store, c->name, SECRET_CLIENT_SECRET, &c->client_secret);
                        if (r < 0) {
                                log_error_errno(r, "Credential %s: client secret not in the store (%m)", c->name);
                                c->state = CREDENTIAL_REAUTH_REQUIRED;
                                credential_set_last_error(c, "client secret missing from the %s store",
                                                          store_name(m->store));
                        }
                }
                credential_link(m, c);
        }
        log_info("Loaded %u credentials from %s", m->n_credentials, path);
        return 0;
}

static int on_connect(VarlinkServer *s, VarlinkConnection *conn, void *userdata) {
        Manager *m = userdata;
        const VarlinkPeer *peer = varlink_connection_peer(conn);
        (void) s;

        if (m->stopping)
                return -ESHUTDOWN;
        if (peer->uid != m->owner_uid) {
                log_notice("Refusing connection from uid %u (pid %d): tokend serves uid %u only", (unsigned) peer->uid,
                           (int) peer->pid, (unsigned) m->owner_uid);
                return -EPERM;
        }
        return 0;
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

        r = manager_load_instance(m);
        if (r < 0)
                return r;
        r = store_keyring_open(m->instance, &m->store);
        if (r < 0)
                return r;
        r = manager_load_state(m);
        if (r < 0)
                return r;

        (void) varlink_server_set_info(m->varlink, "tokend", "tokend", PACKAGE_VERSION, PACKAGE_URL);
        varlink_server_set_callbacks(m->varlink, on_connect, NULL, m);
        if ((r = varlink_server_add_interface(m->varlink, &agent_interface)) < 0 ||
            (r = varlink_server_add_interface(m->varlink, &manager_interface)) < 0)
                return log_error_errno(r, "Cannot register interfaces: %m");
        return manager_listen(m, socket_path);
}

void manager_update_status(Manager *m) {
        unsigned reauth = 0;
        for (Credential *c = m->credentials; c; c = c->next)
                reauth += c->state != CREDENTIAL_OK;
        (void) sd_notifyf(false, "STATUS=%u credentials (%u need login), %u tokens cached, store: %s",
                          m->n_credentials, reauth, engine_count_cached(m), m->store ? store_name(m->store) : "none");
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
        (void) sd_notify(false, "STOPPING=1\nSTATUS=Stopping: finishing refreshes in flight");
        log_info("Stopping");
        if (!engine_busy(m)) {
                (void) sd_event_exit(m->event, 0);
                return;
        }
        (void) sd_event_add_time_relative(m->event, &m->stop_timer, CLOCK_MONOTONIC, STOP_GRACE_USEC, 0,
                                          on_stop_timeout, m);
}
