/* ipc.h - messages between the processes of a node, over Unix socket pairs.
 *
 * Reactor threads, workers and task workers talk through SOCK_SEQPACKET socket
 * pairs created by the master before it forks.  A datagram is never split or
 * merged by the kernel, so a process killed mid-operation cannot leave half a
 * message in the socket for its replacement to misread; that is why these are
 * not stream sockets.  A message of any size up to the channel's limit is cut
 * into records of at most PG_IPC_DATAGRAM_MAX bytes (each record has its own
 * header, flagged BEGIN and/or END) and put back together by the reader.
 * Small messages sent in one callback share a datagram: sending only queues,
 * and the queue is flushed once the loop has run the current callbacks, so a
 * burst costs one system call, not one per message.  A message that may
 * wait (pg_ipc_send_within) leaves with the next flush or once its wait is
 * over: messages that come one by one from many sockets, such as browsers'
 * ACKs, then wake the peer once a wait, not once each.
 *
 * A channel belongs to one thread and one event loop. */
#ifndef PG_IPC_H
#define PG_IPC_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct event;

/* Largest datagram: below the default socket send buffer of Unix sockets. */
#define PG_IPC_DATAGRAM_MAX (64 * 1024)

enum {
    PG_IPC_BEGIN = 1,
    PG_IPC_END = 2,
};

/* Message types of the server engine. */
enum {
    PG_IPC_CONNECT = 1,   /* reactor -> worker: new connection (data: peer address) */
    PG_IPC_RECEIVE,       /* reactor -> worker: one complete packet */
    PG_IPC_CLOSE,         /* reactor -> worker: connection closed */
    PG_IPC_SEND,          /* worker -> reactor: bytes for a session (worker -> worker:
                             for a direct session of the other's, server_direct.c) */
    PG_IPC_SHUTDOWN,      /* worker -> reactor: close a session (data: protocol's reason;
                             worker -> worker: as PG_IPC_SEND) */
    PG_IPC_TASK,          /* worker -> task worker */
    PG_IPC_EVENT,         /* worker -> task worker: custom event "name\0data" */
    PG_IPC_FINISH,        /* task worker -> worker: result of a task */
    PG_IPC_PIPE,          /* worker -> worker: pg_server_send_message */
    PG_IPC_PROBE,         /* worker -> reactor: pg_server_probe */
};

typedef struct {
    uint64_t id;         /* session id, or task id */
    uint32_t length;     /* length of the whole message */
    uint32_t chunk;      /* bytes of the message in this record */
    uint16_t type;
    uint8_t flags;       /* PG_IPC_BEGIN | PG_IPC_END */
    uint8_t listener;    /* listening port index, for connection events */
    int32_t worker_id;   /* sender's worker id, where it matters */
} pg_ipc_header;

typedef struct pg_ipc_channel pg_ipc_channel;

/* Called for each complete message; data is valid only during the call. */
typedef void (*pg_ipc_message_fn)(pg_ipc_channel *ch, const pg_ipc_header *h,
                                  const char *data, void *arg);
/* Called once when the peer is gone (EOF) or the socket failed. */
typedef void (*pg_ipc_closed_fn)(pg_ipc_channel *ch, void *arg);

/* A non-blocking, close-on-exec SOCK_SEQPACKET pair with larger buffers. */
int pg_ipc_socketpair(int fds[2]);

/* A channel on fd (not owned: pg_ipc_channel_free does not close it), taking
 * messages up to max_message bytes; larger incoming ones are dropped and logged. */
pg_ipc_channel *pg_ipc_channel_new(struct event_base *base, int fd, size_t max_message,
                                   pg_ipc_message_fn on_message, pg_ipc_closed_fn on_closed,
                                   void *arg);
void pg_ipc_channel_free(pg_ipc_channel *ch);
int pg_ipc_channel_fd(const pg_ipc_channel *ch);

/* Start / stop reading. A stopped channel still finishes a message it is in
 * the middle of, so a worker that stops never leaves half a message behind. */
int pg_ipc_channel_start(pg_ipc_channel *ch);
void pg_ipc_channel_stop(pg_ipc_channel *ch);
/* 1 once the peer is gone (end of file or a failed socket). */
int pg_ipc_channel_closed(const pg_ipc_channel *ch);
/* 1 when the peer went with messages of ours unread (ECONNRESET).  Not
 * logged as a warning here: on_closed tells whether that was expected. */
int pg_ipc_channel_reset(const pg_ipc_channel *ch);
/* 1 while a message has been begun but not ended. */
int pg_ipc_channel_reading_message(const pg_ipc_channel *ch);

/* Queues a message (h->length and chunk are filled in); it leaves on the next
 * flush. 0, or -1 when len exceeds the limit or the queue is over max_pending. */
int pg_ipc_send(pg_ipc_channel *ch, const pg_ipc_header *h, const void *data, size_t len);
/* As pg_ipc_send, but the message may wait up to within_us (the loop's
 * timers round that up to its clock, a millisecond) for others to go with:
 * it leaves with the next flush that any message asks for, or when the wait
 * is over.  Order is kept: it never passes a message queued before it. */
int pg_ipc_send_within(pg_ipc_channel *ch, const pg_ipc_header *h, const void *data, size_t len,
                       unsigned within_us);
/* Sends what can be sent now. 1 all sent, 0 some left (a write event will
 * continue), -1 peer gone. */
int pg_ipc_flush(pg_ipc_channel *ch);
/* Sends everything, waiting for the peer up to timeout_ms. 0 all sent, -1 not. */
int pg_ipc_flush_blocking(pg_ipc_channel *ch, int timeout_ms);
/* Bytes queued and not yet sent. */
size_t pg_ipc_pending(const pg_ipc_channel *ch);
/* Bound on queued bytes (default 64 MiB). */
void pg_ipc_set_max_pending(pg_ipc_channel *ch, size_t max_pending);

#endif
