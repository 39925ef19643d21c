/* SPDX-License-Identifier: MIT */
/* protocol/varlink.h: the Varlink wire protocol on json-c, for servers on
 * sd-event and for blocking clients. See protocol/PROTOCOL.md. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <json-c/json.h>
#include <systemd/sd-event.h>

/* Default caps. A frame larger than the message cap, or nested deeper than the
 * depth cap, closes that connection and nothing else. */
#define VARLINK_MESSAGE_MAX_DEFAULT (128U * 1024U)
#define VARLINK_DEPTH_MAX_DEFAULT 32
#define VARLINK_OUTPUT_MAX (16U * 1024U * 1024U)
#define VARLINK_CONNECTIONS_MAX_DEFAULT 4096U
/* A connection with this much output unread gets no further call answered
 * until its reader catches up: what a caller that never reads costs stays
 * near this, not VARLINK_OUTPUT_MAX. */
#define VARLINK_OUTPUT_BACKPRESSURE (1U * 1024U * 1024U)
/* Calls taken from one connection before the others get their turn. */
#define VARLINK_DISPATCH_BATCH 16U

/* Standard errors of org.varlink.service. */
#define VARLINK_ERROR_INTERFACE_NOT_FOUND "org.varlink.service.InterfaceNotFound"
#define VARLINK_ERROR_METHOD_NOT_FOUND "org.varlink.service.MethodNotFound"
#define VARLINK_ERROR_METHOD_NOT_IMPLEMENTED "org.varlink.service.MethodNotImplemented"
#define VARLINK_ERROR_INVALID_PARAMETER "org.varlink.service.InvalidParameter"
#define VARLINK_ERROR_PERMISSION_DENIED "org.varlink.service.PermissionDenied"
#define VARLINK_ERROR_EXPECTED_MORE "org.varlink.service.ExpectedMore"
/* Not part of org.varlink.service: sent when a handler fails without replying
 * (out of memory and the like). Carries "errno". */
#define VARLINK_ERROR_INTERNAL "io.tokend.InternalError"

typedef struct VarlinkServer VarlinkServer;
typedef struct VarlinkConnection VarlinkConnection;
typedef struct VarlinkCall VarlinkCall;
typedef struct VarlinkClient VarlinkClient;

typedef enum VarlinkCallFlags {
        VARLINK_CALL_MORE = 1 << 0,
        VARLINK_CALL_ONEWAY = 1 << 1,
} VarlinkCallFlags;

/* A method handler. It must answer the call exactly once with
 * varlink_call_reply() or varlink_call_error(), either before returning or
 * later from the event loop (keep the call pointer, and register a cancel
 * callback to learn when it goes away). Returning a negative errno without
 * having answered makes the library answer VARLINK_ERROR_INTERNAL.
 * `parameters` is always an object (an empty one when the caller sent none
 * or null) and is borrowed for the duration of the handler. */
typedef int (*VarlinkMethodFn)(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags,
                               void *userdata);

typedef enum VarlinkMethodFlags {
        VARLINK_METHOD_REQUIRES_MORE = 1 << 0, /* answered ExpectedMore without "more" */
} VarlinkMethodFlags;

typedef struct VarlinkMethod {
        const char *name;   /* unqualified, e.g. "GetToken" */
        VarlinkMethodFn fn; /* NULL: declared but answered MethodNotImplemented */
        unsigned flags;     /* VarlinkMethodFlags */
} VarlinkMethod;

typedef struct VarlinkInterface {
        const char *name;            /* e.g. "io.tokend.agent" */
        const char *description;     /* the IDL text, returned by GetInterfaceDescription */
        const VarlinkMethod *methods; /* terminated by an entry with name == NULL */
        /* NULL, or decides per call whether the caller may use the interface
         * at all; false answers PermissionDenied before the method is looked up. */
        bool (*authorize)(VarlinkCall *call, void *userdata);
} VarlinkInterface;

/* What the kernel says about the peer, captured at accept(). */
typedef struct VarlinkPeer {
        uid_t uid;
        gid_t gid;
        pid_t pid;
        int pidfd; /* -1 when the kernel has no SO_PEERPIDFD; owned by the connection */
} VarlinkPeer;

/* Called for every accepted connection; return 0 to serve it, -EPERM to answer
 * each of its calls with PermissionDenied and then close it, any other
 * negative errno to close it at once. */
typedef int (*VarlinkConnectFn)(VarlinkServer *server, VarlinkConnection *conn, void *userdata);
/* Called when a connection goes away (after its pending call was cancelled). */
typedef void (*VarlinkDisconnectFn)(VarlinkServer *server, VarlinkConnection *conn, void *userdata);
/* Called when the connection of a pending call goes away before the call was
 * answered; the call is freed right after it returns. */
typedef void (*VarlinkCancelFn)(VarlinkCall *call, void *userdata);

/* ---- server ---- */

int varlink_server_new(sd_event *event, VarlinkServer **ret);
VarlinkServer *varlink_server_free(VarlinkServer *s); /* closes all connections, cancelling pending calls */

int varlink_server_set_info(VarlinkServer *s, const char *vendor, const char *product, const char *version,
                            const char *url);
void varlink_server_set_limits(VarlinkServer *s, size_t message_max, int depth_max, unsigned connections_max);
void varlink_server_set_callbacks(VarlinkServer *s, VarlinkConnectFn on_connect, VarlinkDisconnectFn on_disconnect,
                                  void *userdata);
void *varlink_server_get_userdata(VarlinkServer *s);

/* The interface and its strings must outlive the server. */
int varlink_server_add_interface(VarlinkServer *s, const VarlinkInterface *iface);

/* Takes ownership of a listening socket (e.g. from sd_listen_fds()). */
int varlink_server_listen_fd(VarlinkServer *s, int fd);
/* Binds and listens on a Unix socket path with the given mode, replacing a stale socket. */
int varlink_server_listen_path(VarlinkServer *s, const char *path, mode_t mode);

unsigned varlink_server_connection_count(VarlinkServer *s);
/* Connections open from uid (a new one counts once its connect callback runs). */
unsigned varlink_server_connections_of_uid(VarlinkServer *s, uid_t uid);

/* ---- connections and calls (server side) ---- */

const VarlinkPeer *varlink_connection_peer(VarlinkConnection *c);
void varlink_connection_set_userdata(VarlinkConnection *c, void *userdata);
void *varlink_connection_get_userdata(VarlinkConnection *c);

VarlinkConnection *varlink_call_connection(VarlinkCall *call);
const char *varlink_call_method(VarlinkCall *call); /* fully qualified */
VarlinkCallFlags varlink_call_flags(VarlinkCall *call);
void varlink_call_set_cancel(VarlinkCall *call, VarlinkCancelFn fn, void *userdata);
/* A short string the handler attaches to a call (copied; freed with the call),
 * e.g. the grant a token request goes under, for the audit record of its answer. */
int varlink_call_set_tag(VarlinkCall *call, const char *tag);
const char *varlink_call_get_tag(VarlinkCall *call); /* NULL call or no tag: NULL */

/* All reply functions take ownership of `parameters` (NULL means {}), and wipe
 * every string in it once serialized, so tokens do not linger in freed memory.
 * varlink_call_reply() and varlink_call_error() complete the call; the call
 * pointer is invalid afterwards. varlink_call_reply_more() sends a reply with
 * "continues": true and returns -EINVAL unless the caller asked for "more". */
int varlink_call_reply(VarlinkCall *call, json_object *parameters);
int varlink_call_reply_more(VarlinkCall *call, json_object *parameters);

/* A reply parameter written straight into the connection's output buffer:
 * the hot path (a cached token) builds no json-c objects to serialize, wipe
 * and free. */
typedef enum VarlinkOutType {
        VARLINK_OUT_STRING, /* .string, .len bytes */
        VARLINK_OUT_INT,    /* .integer */
        VARLINK_OUT_STRV,   /* .strv, .len strings */
} VarlinkOutType;

typedef struct VarlinkOutField {
        const char *name; /* a JSON-safe key: written as it is */
        VarlinkOutType type;
        bool plain;       /* .string or every .strv item is json_plain(): written without escaping */
        const char *string;
        const char *const *strv;
        size_t len;
        int64_t integer;
} VarlinkOutField;

/* Runs once the reply is handed to the kernel (or queued, if the peer is
 * slow), while the call is still valid. */
typedef void (*VarlinkSentFn)(VarlinkCall *call, void *userdata);

/* As varlink_call_reply() (continues false) or varlink_call_reply_more()
 * (continues true), with the n parameters in `fields`. The output buffer is
 * wiped once sent, as for every reply. `sent` (may be NULL) runs after the
 * send, before the call is completed: work that must follow the reply but
 * need not delay it (tokend's audit record). */
int varlink_call_reply_fields(VarlinkCall *call, const VarlinkOutField *fields, size_t n, bool continues,
                              VarlinkSentFn sent, void *userdata);
int varlink_call_error(VarlinkCall *call, const char *error, json_object *parameters);
int varlink_call_error_invalid_parameter(VarlinkCall *call, const char *parameter);

/* ---- parameter parsing ---- */

typedef enum VarlinkFieldType {
        VARLINK_FIELD_STRING, /* const char * (borrowed from the parameters object) */
        VARLINK_FIELD_INT,    /* int64_t; INT64_MIN is refused: json-c clamps underflow to it */
        VARLINK_FIELD_BOOL,   /* bool */
        VARLINK_FIELD_STRV,   /* json_object * array, every element checked to be a string */
} VarlinkFieldType;

typedef enum VarlinkFieldFlags {
        VARLINK_FIELD_REQUIRED = 1 << 0,
        VARLINK_FIELD_NONEMPTY = 1 << 1, /* strings: not ""; arrays: at least one element */
} VarlinkFieldFlags;

typedef struct VarlinkField {
        const char *name;
        VarlinkFieldType type;
        size_t offset;  /* into the output struct */
        unsigned flags; /* VarlinkFieldFlags */
        size_t max;     /* strings: max bytes; arrays: max elements and each element max 256 bytes; 0: no cap */
        size_t present_offset; /* (size_t)-1, or offset of a bool set when the field was given (non-null) */
} VarlinkField;

#define VARLINK_NO_PRESENT ((size_t) -1)

/* Parses `parameters` into `out` following `fields` (terminated by name ==
 * NULL). Absent and null fields are left untouched. Unknown fields, wrong
 * types, missing required fields and caps exceeded all fail with -EINVAL and
 * *ret_bad_field naming the offending field. */
int varlink_parse_parameters(json_object *parameters, const VarlinkField fields[], void *out,
                             const char **ret_bad_field);

/* Builds a parameters object of up to two string members; a member whose key
 * or value is NULL is left out. NULL when out of memory. */
json_object *varlink_params_kv(const char *k1, const char *v1, const char *k2, const char *v2);

/* ---- framing, shared by server and client; exposed for tests and fuzzing ---- */

typedef struct VarlinkStream {
        int fd;
        char *rbuf;
        size_t rsize, rlen;
        char *wbuf;
        size_t wsize, wlen, wpos;
        size_t message_max;
        int depth_max;
        bool read_eof;
        bool drained; /* the last fill read less than it asked for: nothing more is pending now */
} VarlinkStream;

void varlink_stream_init(VarlinkStream *s, int fd, size_t message_max, int depth_max);
void varlink_stream_done(VarlinkStream *s); /* wipes and frees buffers, closes fd */

/* Reads what is available, at most one chunk. 0: read something or nothing
 * pending (EAGAIN; drained is set when the socket had no more than was read);
 * -ECONNRESET on EOF; -ENOBUFS when the input buffer is at its cap;
 * other negative errno on error. */
int varlink_stream_fill(VarlinkStream *s);
/* Appends bytes as if read from the socket (tests, fuzzing). */
int varlink_stream_feed(VarlinkStream *s, const void *data, size_t len);
/* 1 and *ret set: a complete message; 0: need more input; -EMSGSIZE: frame over
 * the cap; -EBADMSG: not JSON, too deep, or not an object. */
int varlink_stream_next(VarlinkStream *s, json_object **ret);
/* The same, parsing with *cache (made when NULL) and keeping it for the next
 * message, wiped: one tokener for every connection of a single-threaded
 * server instead of one allocated per message. Free with varlink_tokener_free(). */
int varlink_stream_next_cached(VarlinkStream *s, json_tokener **cache, json_object **ret);
void varlink_tokener_free(json_tokener *tok);
/* The parse varlink_stream_next*() tries first: a message of the plain kind
 * calls nearly always are (objects, arrays, ASCII strings without escapes,
 * integers of up to 18 digits, true, false, null; nesting at most
 * depth_max - 2, and 16) parsed straight into json-c objects, without
 * json-c's tokener, which sets up and frees a locale on every parse. 1 and
 * *ret: parsed, the same tree json-c would make of it (checked by the
 * json-plain fuzz target); 0: not plain, valid or not, for json-c to decide;
 * -ENOMEM. p[0..len) is one frame, without its NUL. */
int varlink_json_parse_plain(const char *p, size_t len, int depth_max, json_object **ret);
/* Serializes and queues a message; wipes its strings and drops it. -ENOBUFS past VARLINK_OUTPUT_MAX. */
int varlink_stream_enqueue(VarlinkStream *s, json_object *message);
/* Queues {"parameters":{FIELDS}} (with "continues":true when asked) written
 * from `fields` directly. -ENOBUFS past VARLINK_OUTPUT_MAX; nothing of it
 * stays queued on error. */
int varlink_stream_enqueue_fields(VarlinkStream *s, const VarlinkOutField *fields, size_t n, bool continues);
/* Writes queued output. 0: all written; -EAGAIN: some left; other negative errno on error. */
int varlink_stream_flush(VarlinkStream *s);
bool varlink_stream_has_output(const VarlinkStream *s);

/* Wipes every string value in a json object tree, then drops the reference.
 * The caller must hold the only reference. Accepts NULL. */
void json_object_put_erase(json_object *o);

static inline void json_object_putp(json_object **o) {
        if (*o)
                json_object_put(*o);
}
static inline void json_object_put_erasep(json_object **o) {
        json_object_put_erase(*o);
}

/* ---- blocking client ---- */

int varlink_client_connect(const char *path, VarlinkClient **ret);
VarlinkClient *varlink_client_free(VarlinkClient *c);

/* Sends a call and waits for its (first) reply. Takes ownership of
 * `parameters`. On success returns 0, with *ret_parameters (owned by the
 * caller; may be NULL if not wanted) and *ret_error set to the error name or
 * NULL (valid until the next call on this client). *ret_continues, if given,
 * tells whether more replies follow (flags VARLINK_CALL_MORE). Transport
 * failures return negative errno. timeout_usec 0 means wait forever. */
int varlink_client_call(VarlinkClient *c, const char *method, json_object *parameters, VarlinkCallFlags flags,
                        uint64_t timeout_usec, json_object **ret_parameters, const char **ret_error,
                        bool *ret_continues);
/* Waits for the next reply of a "more" call. */
int varlink_client_next(VarlinkClient *c, uint64_t timeout_usec, json_object **ret_parameters,
                        const char **ret_error, bool *ret_continues);
int varlink_client_fd(VarlinkClient *c);

static inline void varlink_client_freep(VarlinkClient **c) {
        varlink_client_free(*c);
}
