/* ferry/status.h - the one status enum shared by ferryd, libferry and the wire.
 *
 * Every Ferry function that can fail returns 0 (FERRY_OK) or one of these
 * negative codes. The same numbers travel in ERROR frames (docs/protocol.md),
 * so a client sees the code the server chose. Names and texts are generated
 * from one X-macro so they can never drift apart.
 */
#ifndef FERRY_STATUS_H
#define FERRY_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

/* XX(name, value, text). Values are part of the wire protocol: never renumber. */
#define FERRY_STATUS_MAP(XX)                                                   \
    XX(OK, 0, "success")                                                       \
    XX(EINVAL, -1, "invalid argument")                                         \
    XX(ENOMEM, -2, "out of memory")                                            \
    XX(EIO, -3, "input/output error")                                          \
    XX(ENOTFOUND, -4, "no such resource")                                      \
    XX(EEXIST, -5, "resource already exists")                                  \
    XX(EFULL, -6, "resource is full")                                          \
    XX(ETOOBIG, -7, "message too large")                                       \
    XX(EPROTO, -8, "protocol error")                                           \
    XX(ECONN, -9, "connection failed")                                         \
    XX(ETIMEDOUT, -10, "timed out")                                            \
    XX(ENOTLEADER, -11, "node is not the leader")                              \
    XX(ECONFIG, -12, "invalid configuration")                                  \
    XX(ECORRUPT, -13, "corrupt data")                                          \
    XX(ENOSPC, -14, "no space left on device")                                 \
    XX(EBUSY, -15, "resource busy")                                            \
    XX(EWRONGTYPE, -16, "resource is of another kind")                         \
    XX(ESTATE, -17, "operation not valid in this state")                       \
    XX(ECLOSED, -18, "connection closed")                                      \
    XX(EUNAVAILABLE, -19, "service unavailable")                               \
    XX(EDEADLK, -20, "call would deadlock")                                    \
    XX(EINTERNAL, -21, "internal error")                                       \
    XX(EVERSION, -22, "unsupported protocol version")                          \
    XX(ENOTSUP, -23, "operation not supported")                                \
    XX(EAGAIN, -24, "try again")                                               \
    XX(ELIMIT, -25, "limit exceeded")

typedef enum {
#define FERRY_STATUS_ENUM(name, value, text) FERRY_##name = (value),
    FERRY_STATUS_MAP(FERRY_STATUS_ENUM)
#undef FERRY_STATUS_ENUM
} ferry_status_t;

/* Human text for a status ("resource is full"); never NULL. */
const char *ferry_strerror(int status);
/* Symbolic name of a status ("EFULL"); never NULL. */
const char *ferry_errname(int status);

#ifdef __cplusplus
}
#endif
#endif
