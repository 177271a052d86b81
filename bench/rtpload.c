/*
 * rtpload: the RTP load generator of bench/relay_bench.py, and the "floor" relay.
 *
 * Built by relay_bench.py on first use (cc -O2); one thread, epoll, non-blocking
 * UDP sockets on 127.0.0.1 (ephemeral ports), Linux only.
 *
 *   rtpload gen N MAX_SECONDS [PTIME_MS]
 *                     Bind N sockets, each on an even port P of the ephemeral range
 *                     with P + 1 bound too (where a far end sends that stream's RTCP,
 *                     which is counted and dropped), print {"ports": [P...]} on
 *                     stdout, and read the plan on stdin, a line at a time, while
 *                     running:
 *                       peer J DIR HOST PORT RX    socket J starts sending its stream
 *                                                  (direction DIR, 0 or 1) to
 *                                                  HOST:PORT; it should arrive on
 *                                                  socket RX (-1: anywhere)
 *                       window WARMUP SECONDS DRAIN
 *                                                  the measuring window opens WARMUP
 *                                                  seconds from now (fractions allowed)
 *                     Every socket with a peer sends a packet every PTIME_MS (default
 *                     20 ms: 50 packets/s of PCMU, a 12-byte RTP header and 160 bytes
 *                     of payload; 8 bytes of payload per ms) from its peer line on,
 *                     the N sockets' slots spread evenly over the period, and everything
 *                     is received on the same sockets (symmetric RTP). Prints
 *                     "window-start" when the window opens, "window-end" when it
 *                     closes (SECONDS later; sending stops there), waits DRAIN for late
 *                     packets, then prints one JSON line of results and exits; or exits
 *                     2 without one after MAX_SECONDS, or if the plan ends first.
 *                     Loss and delay count the packets sent inside the window (a send
 *                     due more than two periods ago is skipped and counted, not
 *                     bursted).
 *
 *   rtpload relay K MAX_SECONDS
 *                     The one-recv-one-send floor: bind K pairs of sockets, print
 *                     {"ports": [a0, b0, a1, b1, ...]}, and forward every datagram that
 *                     arrives on one socket of a pair out of the other, to the address
 *                     that other socket latched from the first packet it received
 *                     (symmetric RTP); dropped until then. recvfrom + sendto per
 *                     packet. Exits on SIGTERM/SIGINT or after MAX_SECONDS.
 *
 * The payload survives a G.711 decode/encode (a conference bridge that transcodes):
 * a 20-byte record (magic, stream, sequence, CLOCK_MONOTONIC send time in ns, check)
 * is written one nibble per byte as 0x40 + nibble, four times over; the receiver
 * takes the first copy whose magic and check are right. Anything else that arrives
 * (silence, concealment frames, a relay's own packets) is counted as "foreign".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_PTIME_MS 60
#define MAX_PACKET (12 + 8 * MAX_PTIME_MS)
#define RECORD 20       /* bytes of the record before nibble encoding */
#define COPY (2 * RECORD)
#define MAGIC 0x524cu   /* "RL" */
#define BUCKET_NS 10000 /* delay histogram: 10 us buckets */
#define BUCKETS 500000  /* up to 5 s; later ones go to the last bucket */
#define SLICE_NS 100000000LL /* the window's timeline of slow packets: 100 ms slices */
#define SLICES 6000          /* up to 600 s of window */
#define SLOW_NS 5000000LL    /* a packet slower than 5 ms is counted in its slice */
#define BATCH 16

/* A packet every period_ns (the ptime) per stream, with payload_len bytes of PCMU. */
static int64_t period_ns = 20000000LL;
static int payload_len = 160;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static double cpu_self_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void die(const char *what) {
    fprintf(stderr, "rtpload: %s: %s\n", what, strerror(errno));
    exit(2);
}

/* Raise the soft open-file limit to what n sockets need (up to the hard limit). */
static void raise_nofile(int n) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        die("getrlimit");
    rlim_t want = (rlim_t)n + 64;
    if (rl.rlim_cur >= want)
        return;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want) {
        fprintf(stderr, "rtpload: %d sockets need RLIMIT_NOFILE %lu, hard limit is %lu\n", n,
                (unsigned long)want, (unsigned long)rl.rlim_max);
        exit(2);
    }
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        die("setrlimit");
}

static int udp_socket(int port) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int bound_port(int fd) {
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    return ntohs(a.sin_port);
}

static void watch(int ep, int fd, int index) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)index};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
        die("epoll_ctl");
}

/* n non-blocking UDP sockets on 127.0.0.1; prints their ports. With rtcp, each is an
 * even port P of the kernel's ephemeral range whose P + 1 is bound too, as fds[n + i]:
 * where a far end sends the stream's RTCP (RFC 3550 section 11), so that it neither
 * lands on another stream's socket nor on someone else's. Without, ephemeral ports. */
static int *bind_sockets(int n, int ep, int rtcp) {
    int *fds = calloc((size_t)(2 * n), sizeof *fds);
    if (!fds)
        die("calloc");
    int low = 32768, high = 60999;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f) {
        if (fscanf(f, "%d %d", &low, &high) != 2) {
            low = 32768;
            high = 60999;
        }
        fclose(f);
    }
    low += low & 1;
    int span = (high - low) / 2;
    srandom((unsigned)(getpid() ^ now_ns()));
    printf("{\"ports\": [");
    for (int i = 0; i < n; i++) {
        if (!rtcp) {
            fds[i] = udp_socket(0);
            if (fds[i] < 0)
                die("bind");
        } else {
            for (int tries = 0;; tries++) {
                if (tries == 10000) {
                    fprintf(stderr, "rtpload: no free even/odd port pair\n");
                    exit(2);
                }
                int port = low + 2 * (int)(random() % span);
                int a = udp_socket(port);
                if (a < 0)
                    continue;
                int b = udp_socket(port + 1);
                if (b < 0) {
                    close(a);
                    continue;
                }
                fds[i] = a;
                fds[n + i] = b;
                watch(ep, b, n + i);
                break;
            }
        }
        watch(ep, fds[i], i);
        printf("%s%d", i ? ", " : "", bound_port(fds[i]));
    }
    printf("]}\n");
    fflush(stdout);
    return fds;
}

/* ---- the payload record ------------------------------------------------------- */

static uint16_t check16(const uint8_t *p, int n) {
    uint32_t h = 0x811c9dc5u; /* FNV-1a, folded */
    for (int i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return (uint16_t)(h ^ (h >> 16));
}

static void put_be(uint8_t *p, uint64_t v, int bytes) {
    for (int i = bytes - 1; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t get_be(const uint8_t *p, int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v = (v << 8) | p[i];
    return v;
}

static void encode(uint8_t *payload, uint32_t stream, uint32_t seq, int64_t sent_ns) {
    uint8_t r[RECORD];
    put_be(r, MAGIC, 2);
    put_be(r + 2, stream, 4);
    put_be(r + 6, seq, 4);
    put_be(r + 10, (uint64_t)sent_ns, 8);
    put_be(r + 18, check16(r, 18), 2);
    for (int c = 0; c < payload_len / COPY; c++)
        for (int i = 0; i < RECORD; i++) {
            payload[c * COPY + 2 * i] = (uint8_t)(0x40 | (r[i] >> 4));
            payload[c * COPY + 2 * i + 1] = (uint8_t)(0x40 | (r[i] & 15));
        }
}

/* 1 and the fields when one copy of the record is intact, else 0. */
static int decode(const uint8_t *payload, int len, uint32_t *stream, uint32_t *seq,
                  int64_t *sent_ns) {
    for (int c = 0; (c + 1) * COPY <= len; c++) {
        const uint8_t *p = payload + c * COPY;
        uint8_t r[RECORD];
        int ok = 1;
        for (int i = 0; i < RECORD && ok; i++) {
            if ((p[2 * i] & 0xf0) != 0x40 || (p[2 * i + 1] & 0xf0) != 0x40)
                ok = 0;
            r[i] = (uint8_t)((p[2 * i] & 15) << 4 | (p[2 * i + 1] & 15));
        }
        if (ok && get_be(r, 2) == MAGIC && get_be(r + 18, 2) == check16(r, 18)) {
            *stream = (uint32_t)get_be(r + 2, 4);
            *seq = (uint32_t)get_be(r + 6, 4);
            *sent_ns = (int64_t)get_be(r + 10, 8);
            return 1;
        }
    }
    return 0;
}

/* ---- generator ------------------------------------------------------------------ */

typedef struct {
    int sends;            /* has a peer */
    int dir;              /* 0 or 1 */
    int rx;               /* socket its stream should arrive on, -1: any */
    struct sockaddr_in to;
    uint32_t seq;         /* next sequence number */
    uint32_t win_first;   /* first sequence number sent inside the window */
    int in_window;
    uint8_t *seen;        /* bitmap of the window's sequence numbers received */
} Stream;

typedef struct {
    uint64_t sent, received, dup, misrouted, rx_in_window, late_rx, beyond;
    uint64_t delay_n;
    int64_t delay_max;
    uint32_t *hist;
} Dir;

static void dir_init(Dir *d) {
    memset(d, 0, sizeof *d);
    d->hist = calloc(BUCKETS, sizeof *d->hist);
    if (!d->hist)
        die("calloc");
}

static void hist_add(Dir *d, int64_t delay) {
    int64_t b = delay < 0 ? 0 : delay / BUCKET_NS;
    if (b >= BUCKETS)
        b = BUCKETS - 1;
    d->hist[b]++;
    d->delay_n++;
    if (delay > d->delay_max)
        d->delay_max = delay;
}

/* Nearest-rank percentile in ms (the bucket's upper edge); -1 without samples. */
static double hist_pct(const uint32_t *h, uint64_t n, double p) {
    if (n == 0)
        return -1;
    uint64_t rank = (uint64_t)(p / 100.0 * (double)n + 0.5);
    if (rank < 1)
        rank = 1;
    uint64_t acc = 0;
    for (int b = 0; b < BUCKETS; b++) {
        acc += h[b];
        if (acc >= rank)
            return (b + 1) * (BUCKET_NS / 1e6);
    }
    return (BUCKETS) * (BUCKET_NS / 1e6);
}

static void print_dir(const char *name, Dir *d, int comma) {
    uint64_t lost = d->sent > d->received ? d->sent - d->received : 0;
    printf("\"%s\": {\"sent\": %llu, \"received\": %llu, \"lost\": %llu, \"dup\": %llu, "
           "\"misrouted\": %llu, \"rx_in_window\": %llu, \"late_rx\": %llu, \"beyond\": %llu, "
           "\"delay_ms\": {\"p50\": %.2f, \"p99\": %.2f, \"max\": %.3f}}%s",
           name, (unsigned long long)d->sent, (unsigned long long)d->received,
           (unsigned long long)lost, (unsigned long long)d->dup,
           (unsigned long long)d->misrouted, (unsigned long long)d->rx_in_window,
           (unsigned long long)d->late_rx, (unsigned long long)d->beyond, hist_pct(d->hist, d->delay_n, 50),
           hist_pct(d->hist, d->delay_n, 99), d->delay_max / 1e6, comma ? ", " : "");
}

typedef struct {
    int n;
    Stream *st;
    double warmup, seconds, drain; /* from the window line; seconds 0: not yet */
    size_t window_bits;
} Plan;

/* One line of the plan: 1 to go on, 0 for a bad line. */
static int plan_line(Plan *p, const char *line) {
    int j, dir, port, rx;
    char host[64];
    if (sscanf(line, "peer %d %d %63s %d %d", &j, &dir, host, &port, &rx) == 5) {
        if (j < 0 || j >= p->n || dir < 0 || dir > 1 || rx >= p->n)
            return 0;
        Stream *s = &p->st[j];
        s->dir = dir;
        s->rx = rx;
        s->to.sin_family = AF_INET;
        s->to.sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &s->to.sin_addr) != 1)
            return 0;
        s->sends = 1;
        return 1;
    }
    if (p->seconds == 0 &&
        sscanf(line, "window %lf %lf %lf", &p->warmup, &p->seconds, &p->drain) == 3)
        return p->seconds > 0 && p->warmup >= 0 && p->drain >= 0;
    return 0;
}

static int gen(int n, double max_seconds) {
    raise_nofile(2 * n + 16);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    int *fds = bind_sockets(n, ep, 1);
    Stream *st = calloc((size_t)n, sizeof *st);
    if (!st)
        die("calloc");
    for (int i = 0; i < n; i++)
        st[i].rx = -1;
    Plan plan = {.n = n, .st = st};
    const int STDIN_INDEX = 2 * n; /* epoll index of the plan; n..2n-1 are RTCP */
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    watch(ep, 0, STDIN_INDEX);
    char inbuf[65536];
    size_t inlen = 0;

    Dir dirs[2];
    dir_init(&dirs[0]);
    dir_init(&dirs[1]);
    uint64_t foreign = 0, foreign_in_window = 0, skipped = 0, send_errors = 0, late_sends = 0;
    uint64_t unknown_stream = 0, rtcp = 0;
    int64_t send_late_max = 0;

    int64_t t0 = now_ns() + 5000000; /* the first slot, 5 ms from now */
    int64_t give_up = t0 + (int64_t)(max_seconds * 1e9);
    int64_t w0 = INT64_MAX, w1 = INT64_MAX, t_end = INT64_MAX;
    uint32_t *slow = calloc(SLICES, sizeof *slow);      /* per slice of send time */
    int64_t *slow_max = calloc(SLICES, sizeof *slow_max);
    if (!slow || !slow_max)
        die("calloc");
    int in_window = 0, window_done = 0;
    double cpu_w0 = 0, cpu_w1 = 0;
    int64_t wall_w0 = 0, wall_w1 = 0;

    /* The send schedule: socket k's slot is t0 + cycle * PERIOD + k * PERIOD / n; a
     * socket sends in its slots from the plan line that gives it a peer on. */
    int64_t cycle = 0;
    int k = 0;
    uint8_t pkt[MAX_PACKET];
    const int packet = 12 + payload_len;
    struct epoll_event evs[256];
    struct mmsghdr msgs[BATCH];
    struct iovec iovs[BATCH];
    uint8_t bufs[BATCH][1500];
    struct sockaddr_in froms[BATCH];

    for (;;) {
        int64_t now = now_ns();
        if (now >= give_up) {
            fprintf(stderr, "rtpload: no window within %g s\n", max_seconds);
            return 2;
        }
        if (!in_window && !window_done && now >= w0) {
            in_window = 1;
            cpu_w0 = cpu_self_s();
            wall_w0 = now;
            printf("window-start\n");
            fflush(stdout);
        }
        if (in_window && now >= w1) {
            in_window = 0;
            window_done = 1;
            cpu_w1 = cpu_self_s();
            wall_w1 = now;
            printf("window-end\n");
            fflush(stdout);
        }
        if (now >= t_end)
            break;
        int64_t due = INT64_MAX;
        while (!window_done) {
            due = t0 + cycle * period_ns + (int64_t)k * period_ns / n;
            if (due > now || due >= w1)
                break;
            Stream *s = &st[k];
            int64_t late = now - due;
            if (!s->sends) {
                /* no peer (yet): an empty slot */
            } else if (late > 2 * period_ns) { /* skipped, not bursted */
                skipped++;
            } else {
                if (late > send_late_max)
                    send_late_max = late;
                if (late > 5000000)
                    late_sends++;
                int64_t t = now_ns();
                pkt[0] = 0x80;
                pkt[1] = 0; /* PCMU */
                put_be(pkt + 2, s->seq & 0xffff, 2);
                put_be(pkt + 4, (uint64_t)s->seq * (uint64_t)payload_len, 4);
                put_be(pkt + 8, 0x52000000u | (uint32_t)k, 4);
                encode(pkt + 12, (uint32_t)k, s->seq, t);
                if (sendto(fds[k], pkt, (size_t)packet, 0, (struct sockaddr *)&s->to,
                           sizeof s->to) == packet) {
                    if (t >= w0 && t < w1) {
                        if (!s->in_window) {
                            s->in_window = 1;
                            s->win_first = s->seq;
                        }
                        dirs[s->dir].sent++;
                    }
                    s->seq++;
                } else {
                    send_errors++;
                }
            }
            if (++k == n) {
                k = 0;
                cycle++;
            }
        }
        int64_t wake = due < t_end ? due : t_end;
        if (!window_done && wake > w1)
            wake = w1;
        if (!in_window && !window_done && wake > w0)
            wake = w0;
        if (wake > give_up)
            wake = give_up;
        int64_t wait_ns = wake - now_ns();
        int timeout = wait_ns <= 0 ? 0 : (int)((wait_ns + 999999) / 1000000);
        int nev = epoll_wait(ep, evs, 256, timeout);
        if (nev < 0 && errno != EINTR)
            die("epoll_wait");
        for (int e = 0; e < nev; e++) {
            int j = (int)evs[e].data.u32;
            if (j == STDIN_INDEX) {
                ssize_t got = read(0, inbuf + inlen, sizeof inbuf - 1 - inlen);
                if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) {
                    epoll_ctl(ep, EPOLL_CTL_DEL, 0, NULL);
                    if (plan.seconds == 0) {
                        fprintf(stderr, "rtpload: the plan ended without a window line\n");
                        return 2;
                    }
                    continue;
                }
                if (got < 0)
                    continue;
                inlen += (size_t)got;
                inbuf[inlen] = 0;
                char *line = inbuf, *nl;
                while ((nl = strchr(line, '\n')) != NULL) {
                    *nl = 0;
                    int had_window = plan.seconds > 0;
                    if (!plan_line(&plan, line)) {
                        fprintf(stderr, "rtpload: bad plan line: %s\n", line);
                        return 2;
                    }
                    if (!had_window && plan.seconds > 0) {
                        int64_t t = now_ns();
                        w0 = t + (int64_t)(plan.warmup * 1e9);
                        w1 = w0 + (int64_t)(plan.seconds * 1e9);
                        t_end = w1 + (int64_t)(plan.drain * 1e9);
                        give_up = t_end + 5000000000LL;
                        plan.window_bits = (size_t)(plan.seconds * 1e9 / (double)period_ns) + 64;
                        for (int i = 0; i < n; i++) {
                            st[i].seen = calloc(plan.window_bits / 8 + 1, 1);
                            if (!st[i].seen)
                                die("calloc");
                        }
                    }
                    line = nl + 1;
                }
                inlen = (size_t)(inbuf + inlen - line);
                memmove(inbuf, line, inlen);
                if (inlen == sizeof inbuf - 1) {
                    fprintf(stderr, "rtpload: plan line too long\n");
                    return 2;
                }
                continue;
            }
            for (int b = 0; b < BATCH; b++) {
                iovs[b].iov_base = bufs[b];
                iovs[b].iov_len = sizeof bufs[b];
                memset(&msgs[b].msg_hdr, 0, sizeof msgs[b].msg_hdr);
                msgs[b].msg_hdr.msg_iov = &iovs[b];
                msgs[b].msg_hdr.msg_iovlen = 1;
                msgs[b].msg_hdr.msg_name = &froms[b];
                msgs[b].msg_hdr.msg_namelen = sizeof froms[b];
            }
            int got = recvmmsg(fds[j], msgs, BATCH, MSG_DONTWAIT, NULL);
            if (got <= 0)
                continue;
            int64_t t = now_ns();
            int rx_win = t >= w0 && t < w1;
            if (j >= n) { /* a stream's RTCP port */
                rtcp += (uint64_t)got;
                continue;
            }
            for (int b = 0; b < got; b++) {
                uint32_t stream, seq;
                int64_t sent;
                int len = (int)msgs[b].msg_len;
                if (len < 12 || !decode(bufs[b] + 12, len - 12, &stream, &seq, &sent)) {
                    foreign++;
                    foreign_in_window += rx_win;
                    continue;
                }
                if (stream >= (uint32_t)n || !st[stream].sends) {
                    unknown_stream++;
                    continue;
                }
                Stream *s = &st[stream];
                Dir *d = &dirs[s->dir];
                if (s->rx >= 0 && s->rx != j) {
                    d->misrouted++;
                    continue;
                }
                d->rx_in_window += rx_win;
                if (!(sent >= w0 && sent < w1) || !s->in_window)
                    continue; /* sent outside the window: not counted for loss or delay */
                uint32_t idx = seq - s->win_first;
                if (idx >= plan.window_bits) {
                    d->beyond++;
                    continue;
                }
                uint8_t bit = (uint8_t)(1u << (idx & 7));
                if (s->seen[idx >> 3] & bit) {
                    d->dup++;
                    continue;
                }
                s->seen[idx >> 3] |= bit;
                d->received++;
                if (t >= w1)
                    d->late_rx++;
                hist_add(d, t - sent);
                if (t - sent > SLOW_NS) {
                    int64_t k = (sent - w0) / SLICE_NS;
                    if (k < SLICES) {
                        slow[k]++;
                        if (t - sent > slow_max[k])
                            slow_max[k] = t - sent;
                    }
                }
            }
        }
    }
    /* Both directions together, for the table's one loss and delay figure. */
    Dir all;
    dir_init(&all);
    int senders = 0;
    for (int i = 0; i < n; i++)
        senders += st[i].sends;
    for (int i = 0; i < 2; i++) {
        Dir *d = &dirs[i];
        all.sent += d->sent;
        all.received += d->received;
        all.dup += d->dup;
        all.misrouted += d->misrouted;
        all.rx_in_window += d->rx_in_window;
        all.late_rx += d->late_rx;
        all.beyond += d->beyond;
        all.delay_n += d->delay_n;
        if (d->delay_max > all.delay_max)
            all.delay_max = d->delay_max;
        for (int b = 0; b < BUCKETS; b++)
            all.hist[b] += d->hist[b];
    }
    printf("{\"sockets\": %d, \"senders\": %d, \"window_s\": %.4f, \"cpu_window_s\": %.3f, "
           "\"foreign\": %llu, \"foreign_in_window\": %llu, \"unknown_stream\": %llu, "
           "\"skipped_sends\": %llu, \"late_sends_5ms\": %llu, \"send_late_max_ms\": %.3f, "
           "\"send_errors\": %llu, \"rtcp\": %llu, ",
           n, senders, (wall_w1 - wall_w0) / 1e9, cpu_w1 - cpu_w0, (unsigned long long)foreign,
           (unsigned long long)foreign_in_window, (unsigned long long)unknown_stream,
           (unsigned long long)skipped, (unsigned long long)late_sends, send_late_max / 1e6,
           (unsigned long long)send_errors, (unsigned long long)rtcp);
    print_dir("forward", &dirs[0], 1);
    print_dir("reverse", &dirs[1], 1);
    print_dir("all", &all, 1);
    /* [slice start ms, packets slower than 5 ms, the slowest ms] of each slice with any */
    printf("\"slow_slices\": [");
    int first = 1;
    for (int k = 0; k < SLICES; k++) {
        if (!slow[k])
            continue;
        printf("%s[%lld, %u, %.3f]", first ? "" : ", ", (long long)(k * SLICE_NS / 1000000),
               slow[k], slow_max[k] / 1e6);
        first = 0;
    }
    printf("]}\n");
    fflush(stdout);
    return 0;
}

/* ---- the floor relay ----------------------------------------------------------- */

static volatile sig_atomic_t stop;

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

static int relay(int pairs, double max_seconds) {
    int n = 2 * pairs;
    raise_nofile(n);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    int *fds = bind_sockets(n, ep, 0);
    struct sockaddr_in *peer = calloc((size_t)n, sizeof *peer);
    if (!peer)
        die("calloc");
    int64_t end = now_ns() + (int64_t)(max_seconds * 1e9);
    uint8_t buf[2048];
    struct epoll_event evs[256];
    while (!stop && now_ns() < end) {
        int nev = epoll_wait(ep, evs, 256, 100);
        if (nev < 0 && errno != EINTR)
            die("epoll_wait");
        for (int e = 0; e < nev; e++) {
            int j = (int)evs[e].data.u32;
            struct sockaddr_in from;
            socklen_t len = sizeof from;
            ssize_t got = recvfrom(fds[j], buf, sizeof buf, 0, (struct sockaddr *)&from, &len);
            if (got < 0)
                continue;
            if (peer[j].sin_family == 0)
                peer[j] = from; /* latch this side's address from its first packet */
            int other = j ^ 1;
            if (peer[other].sin_family != 0)
                sendto(fds[other], buf, (size_t)got, 0, (struct sockaddr *)&peer[other],
                       sizeof peer[other]);
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if ((argc == 4 || argc == 5) && strcmp(argv[1], "gen") == 0) {
        if (argc == 5) {
            int ptime = atoi(argv[4]);
            if (ptime < 10 || ptime > MAX_PTIME_MS || ptime % 10) {
                fprintf(stderr, "rtpload: PTIME_MS must be 10, 20, ... %d\n", MAX_PTIME_MS);
                return 2;
            }
            period_ns = ptime * 1000000LL;
            payload_len = 8 * ptime;
        }
        return gen(atoi(argv[2]), atof(argv[3]));
    }
    if (argc == 4 && strcmp(argv[1], "relay") == 0)
        return relay(atoi(argv[2]), atof(argv[3]));
    fprintf(stderr,
            "usage: rtpload gen N MAX_SECONDS [PTIME_MS] | rtpload relay PAIRS MAX_SECONDS\n");
    return 2;
}
