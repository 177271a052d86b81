/*
 * pjproject compile-time configuration for dialswitch.
 *
 * deploy/pjsua2/build.sh copies this file to pjlib/include/pj/config_site.h
 * before configuring pjproject. Every value here is baked into the wheel;
 * changing this file changes the build cache key, so the next build.sh run
 * rebuilds.
 *
 * The stock pjproject defaults are sized for a phone: 4 calls, a 64-handle
 * ioqueue and 4 players/recorders. uaConfig.maxCalls is silently clamped to
 * PJSUA_MAX_CALLS, so a switch needs these limits raised at compile time.
 */

#ifndef DIALSWITCH_PJ_CONFIG_SITE_H
#define DIALSWITCH_PJ_CONFIG_SITE_H

/* ---- Capacity ---------------------------------------------------------- */

/* Call slots, one per call leg: 2000 bridged calls and room for legs being
 * torn down. uaConfig.maxCalls may be set up to this value. Each slot costs
 * static memory whether used or not, which pjsua clears at start (about
 * 21 KB with PJMEDIA_MAX_SDP_MEDIA 4 below and patch 0034); keep the idle
 * process under 300 MB RSS.
 */
#define PJSUA_MAX_CALLS                 4096

/* Tone/prompt players and WAV recorders: two per call slot. */
#define PJSUA_MAX_PLAYERS               (2 * PJSUA_MAX_CALLS)
#define PJSUA_MAX_RECORDERS             (2 * PJSUA_MAX_CALLS)

/* Conference bridge ports: calls + players + recorders + tone generators. */
#define PJSUA_MAX_CONF_PORTS            (4 * PJSUA_MAX_CALLS)

/* Sockets each ioqueue can watch: the SIP one holds the SIP sockets, TCP/TLS
 * peers and browsers' ICE sockets; the media one (pjsua's own, for RTP) an
 * RTP and an RTCP socket per call leg. Every handle is preallocated.
 */
#define PJ_IOQUEUE_MAX_HANDLES          (4 * PJSUA_MAX_CALLS)
#define PJ_IOQUEUE_MAX_EVENTS_IN_SINGLE_POLL 64

/* Transaction and dialog hash tables (sizes must be 2^n - 1). Finished
 * transactions linger (PJSIP_TSX_LINGER below), so a busy switch holds many
 * at once.
 */
#define PJSIP_MAX_TSX_COUNT             (64 * 1024 - 1)
#define PJSIP_MAX_DIALOG_COUNT          (64 * 1024 - 1)

/* How long a transaction over UDP that has its final response stays to
 * absorb retransmissions (Timer D of an INVITE client transaction, Timer J
 * of a non-INVITE server transaction), keeping its messages and its dialog;
 * setting added by patches/0031-how-long-a-finished-transaction-lingers.patch.
 * RFC 3261 asks for 32 s; 8 s still answers a peer's retransmissions after
 * 0.5, 1.5, 3.5 and 7.5 s (four losses in a row), and a quarter of the
 * transactions linger at any time.
 */
#define PJSIP_TSX_LINGER                8000

/* Transport hash table: one entry per TCP/TLS connection. */
#define PJSIP_TPMGR_HTABLE_SIZE         1023

/* Seconds a connection a peer opened to us (TCP, TLS, a browser's relayed
 * WebSocket) stays open with no transaction using it. The stock 600 closed a
 * registered phone's or browser's connection between two REGISTERs longer
 * than that apart, and an answered call's between two session refreshes
 * (every 900 s with our Session-Expires of 1800), so requests to it (an
 * INVITE, the BYE) had nowhere to go. Two hours is more than [registrar]
 * max_expires (3600 by default) and a session refresh interval; a peer that
 * vanished is still noticed by TCP keep-alives (PJSIP_TCP_KEEP_ALIVE_INTERVAL)
 * and by the WebSocket edge's pings.
 */
#define PJSIP_TRANSPORT_SERVER_IDLE_TIME 7200

/* Connections waiting to be accepted on a tcp: or tls: listener, and on the
 * loopback listener every browser's WebSocket is relayed through. The stock 5
 * made a burst of phones or browsers wait for the kernel's SYN retries (1 s,
 * 3 s, 7 s...): 100 browsers connecting at once took over 10 s. The kernel
 * caps it at net.core.somaxconn (4096 on current Linux).
 */
#define PJSIP_TCP_TRANSPORT_BACKLOG     1024
#define PJ_SOMAXCONN                    1024

/* Accounts (local identities) the engine may create. */
#define PJSUA_MAX_ACC                   32

/* Media lines per SDP. The stock 16 makes every call slot about 155 KB of
 * static memory (354 MB RSS at start with 2048 slots); 4 (audio plus room
 * for a declined video or extra line in an offer) brings it to about 39 KB,
 * and patches/0034-no-video-stream-info-in-a-build-without-video.patch to
 * about 21 KB (each media line, kept twice per slot, is 2.5 KB).
 */
#define PJMEDIA_MAX_SDP_MEDIA           4

/* Growth step of a SIP message's (tdata's) memory pool. Printing a message
 * for sending takes one PJSIP_MAX_PKT_LEN (4000 byte) buffer from its pool;
 * with the stock step of 4000 that buffer does not fit in one step (the
 * block header needs room too) and the pool grows by 8000 bytes instead.
 * Each call leg keeps some of its messages for the whole call (an outgoing
 * leg its INVITE and ACK, for retransmissions and redirects), so 4096 saves
 * about 4 KB per kept message. Must be at least PJSIP_MAX_PKT_LEN + 48.
 */
#define PJSIP_POOL_INC_TDATA            4096

/* First block of the memory pool a received SIP message is parsed into. The
 * stock 4000 bytes cannot hold even the pjsip_rx_data itself (4856 bytes: it
 * carries the PJSIP_MAX_PKT_LEN packet buffer), so every packet received
 * took a fresh block from malloc, and its parsed headers and SDP another,
 * both freed again once it was handled. With thousands of calls up malloc
 * walks a fragmented heap, and a profile of the event loop at 1800 calls up
 * put 12 % of it there. 16384 bytes holds the rx_data and a parsed INVITE
 * with SDP. One such pool lives per UDP read and per TCP/TLS connection.
 */
#define PJSIP_POOL_RDATA_LEN            16384

/* Bytes of released memory pools kept for reuse by pjsua's pool factory
 * (patch 0039; stock pjsua keeps none, so every pool of every transaction,
 * dialog and message was malloc'ed and freed). 8 MB is some thousands of
 * pools of the usual sizes (1-16 KB); how much of the churn it catches was
 * not measured on its own, only with the other changes (bench/README.md).
 */
#define PJSUA_POOL_CACHE_CAPACITY       (8 * 1024 * 1024)

/* Send buffers per UDP media transport (one per call leg) for RTP packets
 * whose send is still pending because the socket's kernel buffer is full;
 * each is PJMEDIA_MAX_MTU bytes plus an ioqueue operation key. The stock 4
 * cost about 7 KB per leg. A leg sends one packet per ptime (20 ms) and a
 * UDP send practically never waits, so 2 are plenty; when both are busy the
 * packet is dropped, as it would be with 4. (Setting added by
 * patches/0008-udp-media-transport-pending-writes-setting.patch.)
 */
#define PJMEDIA_TRANSPORT_UDP_MAX_PENDING 2

/* After a poll that handled some RTP, the media thread waits 500 us so that
 * the next poll takes the packets that arrived meanwhile together, instead
 * of sleeping in epoll and being woken for every packet or two. Setting
 * added by patches/0033-media-worker-coalesces-polls.patch: with 500
 * relayed calls it cut the CPU per relayed packet by a quarter (13.5 to
 * 10.0 us in bench/relay_bench.py) and added about 1 ms of delay (p99 under
 * 4 ms), well inside any jitter buffer.
 */
#define PJMEDIA_ENDPT_POLL_COALESCE_USEC 500

/* 4 MB kernel buffers on the SIP UDP socket, so bursts of INVITEs are not
 * dropped while the event loop is busy.
 */
#define PJSIP_UDP_SO_RCVBUF_SIZE        (4 * 1024 * 1024)
#define PJSIP_UDP_SO_SNDBUF_SIZE        (4 * 1024 * 1024)

/* ---- Features ---------------------------------------------------------- */

/* IPv6 transports and addresses. */
#define PJ_HAS_IPV6                     1

/* DTLS-SRTP (RFC 5764) besides SDES, using OpenSSL. (Video is left out by
 * configure's --disable-video.)
 */
#define PJMEDIA_SRTP_HAS_DTLS           1

/* ---- Build flavour ----------------------------------------------------- */

/* Release build: no debug assertions or pool tracing. */
#define PJ_DEBUG                        0
#define PJ_OS_HAS_CHECK_STACK           0

/* Keep every log level compiled in (5 is the most verbose pjproject uses
 * in a release build), so the runtime log level can be raised when
 * debugging a deployment. Filtering happens at run time
 * (EpConfig.logConfig.level / consoleLevel).
 */
#define PJ_LOG_MAX_LEVEL                5

#endif /* DIALSWITCH_PJ_CONFIG_SITE_H */
