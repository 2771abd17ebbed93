/*
** stream.h
** What stream.c (transports and servers over any uv_stream_t) shares with
** the files that make their sockets: tcp.c (TCP) and pipe.c (Unix domain
** sockets).
*/

#ifndef loom_stream_h
#define loom_stream_h

#include <sys/un.h>

#include "internal.h"

#define TRANSPORT_MT "loom.TCPTransport"
#define SERVER_MT "loom.Server"

/* User values of a transport. */
enum { TUV_PROTO = 1,  /* the protocol (the factory while connecting) */
       TUV_LOOP,       /* the loop */
       TUV_SERVER,     /* the server that accepted it, or nil */
       TUV_ERR,        /* the error connection_lost gets, or nil */
       TUV_SINK,       /* the StreamReader it reads into, or nil */
       TUV_DATAFN,     /* the protocol's data_received, once looked up */
       TUV_GETBUF,     /* a buffered protocol's get_buffer, or nil */
       TUV_UPDATED,    /* a buffered protocol's buffer_updated */
       TUV_BUF,        /* the Buffer read into, from alloc_cb to read_cb;
                          or the error of a get_buffer that failed */
       TUV_COUNT = TUV_BUF };

/* User values of a server. */
enum { SUV_FACTORY = 1, SUV_LOOP, SUV_WAITERS, SUV_CONNS,
       SUV_FOREVER,    /* serve_forever's future, or nil */
       SUV_COUNT = SUV_FOREVER };

/* What a transport defers while its protocol's get_buffer runs inside
** libuv's alloc callback, until the read callback: libuv goes on with
** the read after alloc_cb, so the handle must still be reading then. */
enum { LOOM_DEFER_STOP = 1,   /* uv_read_stop */
       LOOM_DEFER_CLOSE = 2,  /* uv_close */
       LOOM_DEFER_SWITCH = 4  /* set_protocol: the next read is the new
                                 protocol's, the old one's Buffer unused */
};

/* The kinds of socket a stream handle can be. */
enum { LOOM_SOCK_TCP, LOOM_SOCK_UNIX };

/* The handle of a transport or listener: TCP or a Unix domain socket
** (uv_pipe_t with ipc=0). Everything but creating, connecting, binding
** and naming goes through the uv_stream_t API. */
typedef union loom_sockh {
  uv_tcp_t tcp;
  uv_pipe_t pipe;
} loom_sockh;

struct loom_tcp_ud;
struct loom_sendfile;

typedef struct loom_conn {
  loom_sockh h;             /* first: the close callback frees the conn */
  uv_connect_t creq;        /* while connecting */
  loom_loop *loop;
  lua_State *mainL;         /* for the writes' luaL_unref */
  struct loom_tcp_ud *ud;   /* NULL once the userdata is finalized */
  int ref;                  /* anchors the userdata while the handle is open
                               (loom__anchor, as futref and drainref) */
  int futref;               /* create_connection's future while connecting */
  size_t queued;            /* bytes in pending uv_write requests */
  size_t high, low;         /* write buffer limits */
  int nwrites;              /* pending uv_write requests */
  uint8_t made;             /* connection_made was called */
  uint8_t closing;          /* close(): no more writes; closes when flushed */
  uint8_t closed;           /* uv_close started */
  uint8_t reading;          /* not paused by pause_reading */
  uint8_t started;          /* reading may run (connection made) */
  uint8_t eof_in;           /* the peer sent EOF */
  uint8_t eof_out;          /* write_eof was called */
  uint8_t paused;           /* pause_writing was called, not resumed */
  uint8_t kind;             /* LOOM_SOCK_* */
  uint8_t buffered;         /* the protocol has get_buffer (TUV_GETBUF) */
  uint8_t buferr;           /* get_buffer failed: TUV_BUF holds the error */
  uint8_t inbuf;            /* reading into a Buffer (TUV_BUF) */
  uint8_t ingetbuf;         /* inside get_buffer, called from alloc_cb */
  uint8_t defer;            /* LOOM_DEFER_*: what get_buffer asked for */
  /* loop:sendfile (fs.c): the native send in progress, which owns the
  ** socket meanwhile (writes raise), and a future completed once the
  ** write queue is down to drainlimit bytes or the transport is gone */
  struct loom_sendfile *sending;
  int drainref;
  size_t drainlimit;
  void *sink;               /* the StreamReader of TUV_SINK, or NULL */
} loom_conn;

/* The transport userdata. Its first field leads to the uv handle, as
** every transport's does (see loom__push_transport_socket). */
typedef struct loom_tcp_ud {
  loom_conn *c;             /* NULL once closed */
} loom_tcp_ud;

struct loom_srv_ud;

typedef struct loom_lsn {
  loom_sockh h;             /* first */
  loom_loop *loop;
  struct loom_srv_ud *ud;
  int ref;                  /* anchors the server userdata (loom__anchor) */
  int idx;                  /* its slot in ud->s */
} loom_lsn;

/* Listening sockets of one server: one per address its host resolves
** to (a Unix server has one). */
#define LOOM_MAXLSN 16

typedef struct loom_srv_ud {
  loom_lsn *s[LOOM_MAXLSN]; /* NULL once that listener is closed */
  int nlsn;                 /* slots used */
  int nconns;               /* its transports that are not yet closed */
  int backlog;
  uint8_t closed;
  uint8_t serving;          /* listening (start_serving) */
  uint8_t kind;             /* LOOM_SOCK_* */
  uint8_t abstract;         /* a Unix server on an abstract name */
  size_t pathlen;           /* Unix: length of path */
  char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
} loom_srv_ud;

/* stream.c: argument checks shared by the loop methods */
void loom__stream_checkcallable(lua_State *L, int idx);
void loom__stream_checkopts(lua_State *L, int idx, const char *const keys[]);
int loom__stream_hastimeout(lua_State *L, int idx);
int loom__stream_hasssl(lua_State *L, int idx);
int loom__stream_intask(lua_State *L, loom_loop *loop);
loom_loop *loom__stream_checktask(lua_State *L, const char *fname);
int loom__stream_byname(lua_State *L, const char *method);
void loom__stream_checkbacklog(lua_State *L, int oidx, int *backlog);

/* stream.c: connecting. begin_connect makes the transport (at 6) and the
** future (at 7) of a connection from the loop at 1 with the factory at
** 2; the caller starts the connect with &c->creq and loom__stream_connect_cb,
** then returns finish_connect(L, c, r), r the start's result. */
loom_conn *loom__stream_begin_connect(lua_State *L, loom_loop *loop,
                                      int kind);
int loom__stream_finish_connect(lua_State *L, loom_conn *c, int r);
void loom__stream_connect_cb(uv_connect_t *req, int status);
void loom__stream_connected(lua_State *L, loom_conn *c, int status);

/* stream.c: servers. newserver pushes a server of the loop at 1 with the
** factory at 2 (closed until the caller opens it); addlistener gives it
** a listener whose handle the bind function binds. */
typedef int (*loom_bindfn)(lua_State *L, loom_lsn *s, const void *addr,
                           int flags);
loom_srv_ud *loom__stream_newserver(lua_State *L, int kind);
int loom__stream_addlistener(lua_State *L, loom_loop *loop, loom_srv_ud *su,
                             int sidx, loom_bindfn bind, const void *addr,
                             int flags);
int loom__stream_listen(lua_State *L, loom_srv_ud *su, int sidx,
                        const char *fname);
void loom__stream_stop(loom_srv_ud *su);

/* stream.c: a child's stdio pipe (process.c). newpipe pushes a pinned
** transport over a uv_pipe_t not yet opened; pipe_start gives it the
** protocol on top, calls connection_made and starts reading. */
loom_conn *loom__stream_newpipe(lua_State *L, loom_loop *loop, int loopidx);
void loom__stream_pipe_start(lua_State *L, loom_conn *c, int tidx);

/* stream.c: a failed protocol call to the exception handler, (loop, err,
** transport, proto, lname) at 1..5 and the message at 6 (for pcall'd
** reporters of other transports) */
int loom__protocol_report(lua_State *L);

/* stream.c: transport methods a socket kind adds (upvalue 1: the
** transport metatable), and the checked transport at 1 */
void loom__stream_methods(lua_State *L, const luaL_Reg *l);
loom_tcp_ud *loom__stream_checkt(lua_State *L);

/* stream.c: transport:write(data) with the transport u at 1 and the data
** string at 2, both checked by the caller (StreamWriter.write). */
void loom__stream_write(lua_State *L, loom_tcp_ud *u);

/* tls.c: the TLS protocol's data_received, and the same taking the
** records as bytes (for the read path, which then makes no string). */
int loom__tls_data_received(lua_State *L);
int loom__tls_feed(lua_State *L, int pidx, const char *p, size_t n);

/* streambuf.c: a StreamReader that a transport reads into directly, in
** place of its protocol's data_received (a StreamReaderProtocol's, which
** would only feed the reader). sink_room gives the room for the next
** read (0: none, read into the shared buffer: always so when the reader
** is empty); sink_fed(reader, n [, p]) takes n bytes read into that room,
** or copies them from light userdata p, as feed_data does (into an empty
** reader, as a new kept string); it runs under the transport's protected
** call. */
int loom__sink_room(void *sink, uv_buf_t *buf);
int loom__sink_fed(lua_State *L);

/* tcp.c and pipe.c: the names of a socket (peer != 0: the peer's), pushed
** as get_extra_info and server:sockets() give them; 0 when unavailable
** (nothing pushed). */
int loom__tcp_name(lua_State *L, uv_tcp_t *h, int peer);
int loom__pipe_name(lua_State *L, uv_pipe_t *h, int peer);
int loom__pipe_server_name(lua_State *L, loom_srv_ud *su);

/* fs.c: the transport of a native sendfile closed (called by its close
** callback; calls no Lua) */
void loom__sendfile_lost(struct loom_sendfile *sf);

#endif
