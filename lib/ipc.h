/* ipc.h - typed, bounds-checked messages between processes (STYLE rule 6).
 *
 * Owns the wire format of ipc_msgs.def messages: a frame is
 *   u32 length (of what follows) | u16 type | payload
 * and the payload is a sequence of fields, each 'u' + 8-byte big-endian
 * integer or 's' + u32 length + bytes (no NUL inside). Encoders and decoders
 * check every field against the schema declared in ipc_msgs.def, and
 * ipc_end() fails on trailing bytes. Frames are at most IPC_FRAME_MAX.
 *
 * Errors: every ipc_get_* returns false on a type, bound or length mismatch
 * and marks the message bad; the caller then drops the peer (control socket)
 * or exits (internal peer), as STYLE rule 6 says. */
#ifndef BW_IPC_H
#define BW_IPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define IPC_VERSION 1
#define IPC_FRAME_MAX (1024 * 1024)
#define IPC_STR_MAX (IPC_FRAME_MAX - 16)

enum ipc_type {
    IPC_NONE = 0,
#define MSG(name, from, to, fields, doc) IPC_##name,
#include "ipc_msgs.def"
#undef MSG
    IPC_TYPE_MAX
};

/* ipc_type_name - "CTL_REQUEST", or "unknown" */
const char *ipc_type_name(unsigned type);

/* ipc_type_fields - the declared field list of a type, or NULL. */
const char *ipc_type_fields(unsigned type);

/* A message being built or read. Owns its buffer. */
struct ipc_msg {
    unsigned type;
    struct buf data;   /* whole frame when building; payload when reading */
    size_t pos;        /* read cursor in data */
    const char *schema;/* next expected field */
    bool bad;
};

/* ipc_begin - start a message of a type; false for an unknown type. */
bool ipc_begin(struct ipc_msg *m, unsigned type);
bool ipc_put_u64(struct ipc_msg *m, uint64_t v);
bool ipc_put_str(struct ipc_msg *m, const char *s);
/* ipc_finish - check that all declared fields were put (a repeated last field
 * may be given zero times) and fill in the length: data holds the frame. */
bool ipc_finish(struct ipc_msg *m);

/* ipc_parse - take one frame from in[0..len): 1 with *used set and m filled,
 * 0 when more bytes are needed, -1 on a malformed frame (too long, bad type). */
int ipc_parse(const void *in, size_t len, size_t *used, struct ipc_msg *m);

bool ipc_get_u64(struct ipc_msg *m, uint64_t *v);
/* ipc_get_str - pointer into the message (valid until ipc_msg_free). */
bool ipc_get_str(struct ipc_msg *m, const char **s);
/* ipc_more - true when fields remain (for repeated fields). */
bool ipc_more(const struct ipc_msg *m);
/* ipc_end - true when every byte was consumed and nothing was bad. */
bool ipc_end(struct ipc_msg *m);

void ipc_msg_free(struct ipc_msg *m);

/* Blocking helpers for command-line clients (mailctl): whole frames over fd
 * with a deadline in milliseconds. -1 with errno (ETIMEDOUT, EPROTO). */
int ipc_send_fd(int fd, struct ipc_msg *m, int timeout_ms);
int ipc_recv_fd(int fd, struct ipc_msg *m, int timeout_ms);

#endif
