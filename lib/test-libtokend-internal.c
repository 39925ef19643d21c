/* SPDX-License-Identifier: MIT */
/* lib/test-libtokend-internal.c: what tokenctl uses beyond libtokend's public
 * API (libtokend-internal.h), against the static library: a connection made
 * and used by the caller, handed to a client, carries its next GetToken, with
 * a reply already read into the connection's buffer taken from there. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/test.h"
#include "common/util.h"
#include "libtokend-internal.h"

static const char WHOAMI_REPLY[] = "{\"parameters\":{\"uid\":1000,\"manager\":true}}";
static const char TOKEN_REPLY[] = "{\"parameters\":{\"token\":\"tok-1\",\"token_type\":\"Bearer\","
                                  "\"expires_at\":4000000000,\"scopes\":[\"read\"]}}";

/* Reads everything the client sent until it hung up. */
static size_t read_all(int fd, char *buf, size_t size) {
        size_t n = 0;
        for (;;) {
                ASSERT_TRUE(n < size);
                ssize_t k = read(fd, buf + n, size - n);
                ASSERT_TRUE(k >= 0);
                if (k == 0)
                        return n;
                n += (size_t) k;
        }
}

TEST(adopted_connection) {
        char dir[] = "/tmp/test-libtokend-internal-XXXXXX", path[128], buf[4096];
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        ASSERT_TRUE(mkdtemp(dir));
        snprintf(path, sizeof path, "%s/sock", dir);
        strcpy(sa.sun_path, path);
        int listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        ASSERT_TRUE(listen_fd >= 0);
        ASSERT_OK(bind(listen_fd, (struct sockaddr *) &sa, sizeof sa));
        ASSERT_OK(listen(listen_fd, 8));

        /* Connecting completes in the backlog; both replies are queued at
         * once, so the client's first read takes them together. */
        VarlinkClient *conn = NULL;
        ASSERT_OK(varlink_client_connect(path, &conn));
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        ASSERT_TRUE(fd >= 0);
        ASSERT_EQ(write(fd, WHOAMI_REPLY, sizeof WHOAMI_REPLY), (ssize_t) sizeof WHOAMI_REPLY);
        ASSERT_EQ(write(fd, TOKEN_REPLY, sizeof TOKEN_REPLY), (ssize_t) sizeof TOKEN_REPLY);

        json_object *who = NULL;
        const char *error = NULL;
        ASSERT_OK(varlink_client_call(conn, "io.tokend.agent.WhoAmI", NULL, 0, 5 * USEC_PER_SEC, &who, &error,
                                      NULL));
        ASSERT_TRUE(!error && who);
        json_object_put(who);

        tokend_client *c = NULL;
        tokend_token *t = NULL;
        ASSERT_OK(tokend_client_new(path, &c));
        ASSERT_OK(tokend_client_set_timeout(c, 5 * USEC_PER_SEC)); /* a new connection would wait for nothing */
        tokend_client_adopt_connection(c, conn);
        ASSERT_EQ(tokend_get_token(c, "cred", NULL, NULL, -1, TOKEND_FLAG_MANAGER, &t), TOKEND_OK);
        ASSERT_STREQ(tokend_token_value(t), "tok-1");
        tokend_token_free(t);
        tokend_client_free(c); /* closes the adopted connection */

        /* Both calls came on the one connection, in order; no other connection was made. */
        buf[read_all(fd, buf, sizeof buf - 1)] = 0;
        ASSERT_TRUE(strstr(buf, "\"io.tokend.agent.WhoAmI\""));
        const char *second = buf + strlen(buf) + 1;
        ASSERT_TRUE(strstr(second, "\"io.tokend.manager.GetToken\""));
        ASSERT_TRUE(accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC) < 0);

        close(fd);
        close(listen_fd);
        unlink(path);
        rmdir(dir);
}

int main(void) {
        RUN(adopted_connection);
        return 0;
}
