/*
 * tftp-get: the benchmark's TFTP read client, in C, so that a lock-step
 * download measures the server and not the client. Boot firmware (iPXE,
 * OVMF) is a tight C loop too; src/protocols/tftp/client.ts, on Node.js,
 * spends about as long per block as the server it measures.
 *
 *   tftp-get [-b BLKSIZE] [-w WINDOWSIZE] [-c CONCURRENT] [-t RETRANSMIT_MS]
 *            [-r MAX_RETRIES] [-e EXPECTED_FILE] HOST PORT FILE
 *
 * Runs CONCURRENT downloads of FILE at once (one socket each, one poll()
 * loop for all) and prints one JSON line on stdout:
 *   {"ok":true,"bytes":B,"seconds":S,"blksize":N,"windowsize":N,"packets":N,
 *    "blocks":N,"acks":N,"discarded":N,"timeouts":N,"userSeconds":S,"systemSeconds":S}
 * bytes is the sum over the downloads; blksize and windowsize are the
 * smallest granted; seconds runs from the first request to the last block;
 * packets counts every packet from the server, blocks its DATA packets
 * (resent ones too); userSeconds and systemSeconds are this client's CPU.
 * With -e every block is compared, as it arrives, with the same bytes of
 * EXPECTED_FILE (a memcmp of a mapped copy: no hashing on the path being
 * timed), and the download must end at its size. On failure it prints
 * {"ok":false,"error":"..."} and exits 1.
 *
 * Protocol (receiver side): RFC 1350 with the RFC 2347 OACK, blksize
 * (RFC 2348) and windowsize (RFC 7440). Options are asked only when given.
 * The first packet from HOST fixes the server's port (RFC 1350 section 4);
 * a packet from another port gets ERROR 5 and changes nothing. Receiver
 * rules of RFC 7440 section 4: ACK after windowsize in-order blocks or the
 * last (short) block; on a gap ACK the last in-order block once and drop
 * what follows; a copy of the block last acknowledged is acknowledged again
 * (that ACK was lost). Block numbers roll over past 65535 to 0. A timer
 * resends the last packet sent (the request or the last ACK).
 *
 * Linux and glibc; built by bench.ts with `cc -O2`.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* RFC 1350 section 5 and RFC 2347. */
enum { OP_RRQ = 1, OP_DATA = 3, OP_ACK = 4, OP_ERROR = 5, OP_OACK = 6 };
enum { ERR_NOT_DEFINED = 0, ERR_ILLEGAL_OPERATION = 4, ERR_UNKNOWN_TID = 5, ERR_OPTION = 8 };
#define DEFAULT_BLKSIZE 512
#define BLKSIZE_MIN 8
#define BLKSIZE_MAX 65464
#define WINDOWSIZE_MAX 65535
#define MAX_CONCURRENT 1024
/* RFC 2347: a request is at most 512 bytes. */
#define REQUEST_MAX 512

struct transfer {
	int fd;
	struct sockaddr_in server; /* the request port, then the transfer's */
	int have_tid;
	int started_data;
	int done;
	unsigned blksize, windowsize;
	uint64_t last_in_order; /* absolute block number */
	uint64_t last_acked;
	unsigned in_window;
	int gap_acked;
	uint64_t bytes;
	unsigned char last_sent[REQUEST_MAX];
	size_t last_sent_len;
	int retries;
	double deadline;
	uint64_t packets, blocks, acks, discarded, timeouts;
};

static struct {
	const char *host, *file;
	unsigned port, blksize, windowsize, concurrent, retransmit_ms, max_retries;
	int ask_blksize, ask_windowsize;
	const unsigned char *expected;
	size_t expected_size;
	int has_expected;
	struct in_addr addr;
} opt = { .port = 69, .concurrent = 1, .retransmit_ms = 1000, .max_retries = 5 };

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Prints the failure as JSON (the bench reads stdout) and exits 1. */
__attribute__((noreturn, format(printf, 1, 2))) static void fail(const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	printf("{\"ok\":false,\"error\":\"");
	for (const char *p = msg; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if (c == '"' || c == '\\') printf("\\%c", c);
		else if (c < 0x20 || c > 0x7e) printf("\\u%04x", c);
		else putchar(c);
	}
	printf("\"}\n");
	exit(1);
}

static void send_to(struct transfer *t, const void *buf, size_t len, const struct sockaddr_in *to)
{
	/* A lost send is a lost packet: the timer resends it. */
	(void)sendto(t->fd, buf, len, 0, (const struct sockaddr *)to, sizeof *to);
}

static void send_error(struct transfer *t, unsigned code, const char *message, const struct sockaddr_in *to)
{
	unsigned char buf[128];
	size_t n = strlen(message);
	if (n > sizeof buf - 5) n = sizeof buf - 5;
	buf[0] = 0, buf[1] = OP_ERROR, buf[2] = (unsigned char)(code >> 8), buf[3] = (unsigned char)code;
	memcpy(buf + 4, message, n);
	buf[4 + n] = 0;
	send_to(t, buf, n + 5, to);
}

static void arm(struct transfer *t)
{
	t->deadline = now() + opt.retransmit_ms / 1000.0;
}

static void ack(struct transfer *t, uint64_t block)
{
	t->last_acked = block;
	t->last_sent[0] = 0, t->last_sent[1] = OP_ACK;
	t->last_sent[2] = (unsigned char)((block >> 8) & 0xff), t->last_sent[3] = (unsigned char)(block & 0xff);
	t->last_sent_len = 4;
	t->acks++;
	send_to(t, t->last_sent, 4, &t->server);
}

/* Appends "name\0value\0" to a request; fails if the request would pass 512 bytes. */
static size_t put_field(unsigned char *buf, size_t at, const char *s)
{
	size_t n = strlen(s) + 1;
	if (at + n > REQUEST_MAX) fail("request longer than %d bytes", REQUEST_MAX);
	memcpy(buf + at, s, n);
	return at + n;
}

static void start(struct transfer *t)
{
	memset(t, 0, sizeof *t);
	t->blksize = DEFAULT_BLKSIZE;
	t->windowsize = 1;
	t->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (t->fd < 0) fail("socket: %s", strerror(errno));
	/* A window of large blocks arrives in one burst: the receive buffer must hold it. */
	int rcvbuf = 4 * 1024 * 1024;
	(void)setsockopt(t->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
	struct sockaddr_in local = { .sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_ANY) };
	if (bind(t->fd, (struct sockaddr *)&local, sizeof local) < 0) fail("bind: %s", strerror(errno));
	t->server.sin_family = AF_INET;
	t->server.sin_port = htons((uint16_t)opt.port);
	t->server.sin_addr = opt.addr;

	unsigned char *r = t->last_sent;
	char num[16];
	r[0] = 0, r[1] = OP_RRQ;
	size_t at = put_field(r, 2, opt.file);
	at = put_field(r, at, "octet");
	if (opt.ask_blksize) {
		snprintf(num, sizeof num, "%u", opt.blksize);
		at = put_field(r, put_field(r, at, "blksize"), num);
	}
	if (opt.ask_windowsize) {
		snprintf(num, sizeof num, "%u", opt.windowsize);
		at = put_field(r, put_field(r, at, "windowsize"), num);
	}
	t->last_sent_len = at;
	send_to(t, r, at, &t->server);
	arm(t);
}

/* Reads the OACK's options (RFC 2347: name\0value\0 pairs); only what was asked may come back. */
static void on_oack(struct transfer *t, const unsigned char *p, size_t len)
{
	size_t at = 2;
	while (at < len) {
		const char *name = (const char *)p + at;
		const unsigned char *nul = memchr(p + at, 0, len - at);
		if (!nul) fail("OACK option name without NUL");
		at = (size_t)(nul - p) + 1;
		if (at >= len) fail("OACK option %s without a value", name);
		const char *value = (const char *)p + at;
		nul = memchr(p + at, 0, len - at);
		if (!nul) fail("OACK value without NUL");
		at = (size_t)(nul - p) + 1;
		char *end;
		unsigned long v = strtoul(value, &end, 10);
		int number = *value >= '0' && *value <= '9' && *end == 0;
		if (strcasecmp(name, "blksize") == 0 && opt.ask_blksize) {
			if (!number || v < BLKSIZE_MIN || v > opt.blksize) fail("the server answered blksize %s", value);
			t->blksize = (unsigned)v;
		} else if (strcasecmp(name, "windowsize") == 0 && opt.ask_windowsize) {
			if (!number || v < 1 || v > opt.windowsize) fail("the server answered windowsize %s", value);
			t->windowsize = (unsigned)v;
		} else {
			send_error(t, ERR_OPTION, "option not asked for", &t->server);
			fail("the server acknowledged option %s, which was not asked for", name);
		}
	}
	t->retries = 0;
	ack(t, 0);
	arm(t);
}

static void on_data(struct transfer *t, unsigned block, const unsigned char *data, size_t len)
{
	t->started_data = 1;
	unsigned distance = (block - (unsigned)(t->last_in_order & 0xffff)) & 0xffff;
	if (distance == 1) {
		if (len > t->blksize) {
			send_error(t, ERR_ILLEGAL_OPERATION, "block larger than blksize", &t->server);
			fail("block of %zu bytes, blksize is %u", len, t->blksize);
		}
		if (opt.has_expected) {
			if (t->bytes + len > opt.expected_size || memcmp(opt.expected + t->bytes, data, len) != 0) {
				send_error(t, ERR_NOT_DEFINED, "corrupted", &t->server);
				fail("block %llu differs from the expected file", (unsigned long long)t->last_in_order + 1);
			}
		}
		t->last_in_order++;
		t->in_window++;
		t->gap_acked = 0;
		t->retries = 0;
		t->bytes += len;
		if (len < t->blksize) {
			ack(t, t->last_in_order);
			t->done = 1;
			return;
		}
		if (t->in_window >= t->windowsize) {
			t->in_window = 0;
			ack(t, t->last_in_order);
		}
		arm(t);
		return;
	}
	t->discarded++;
	if (distance == 0) {
		/* The server resent the block last acknowledged: that ACK was lost. */
		if (t->last_in_order > 0 && t->last_acked == t->last_in_order) {
			t->in_window = 0;
			ack(t, t->last_in_order);
		}
	} else if (distance < 0x8000 && !t->gap_acked) {
		/* A gap: tell the server where to restart (RFC 7440 section 4). */
		t->gap_acked = 1;
		t->in_window = 0;
		ack(t, t->last_in_order);
	}
}

static void on_packet(struct transfer *t, const unsigned char *p, size_t len, const struct sockaddr_in *from)
{
	if (from->sin_addr.s_addr != opt.addr.s_addr) return;
	if (!t->have_tid) {
		t->have_tid = 1;
		t->server.sin_port = from->sin_port; /* RFC 1350 section 4: the first reply fixes the TID */
	} else if (from->sin_port != t->server.sin_port) {
		if (len >= 2 && !(p[0] == 0 && p[1] == OP_ERROR)) send_error(t, ERR_UNKNOWN_TID, "Unknown transfer ID", from);
		return;
	}
	if (len < 4) return; /* too short to mean anything: dropped */
	t->packets++;
	unsigned opcode = (unsigned)p[0] << 8 | p[1];
	unsigned number = (unsigned)p[2] << 8 | p[3];
	switch (opcode) {
	case OP_DATA:
		t->blocks++;
		on_data(t, number, p + 4, len - 4);
		return;
	case OP_OACK:
		if (!t->started_data) on_oack(t, p, len);
		return;
	case OP_ERROR: {
		char msg[200];
		size_t n = len - 4 < sizeof msg - 1 ? len - 4 : sizeof msg - 1;
		memcpy(msg, p + 4, n);
		msg[n] = 0;
		fail("server error %u: %s", number, msg);
	}
	default:
		send_error(t, ERR_ILLEGAL_OPERATION, "unexpected opcode", &t->server);
		fail("unexpected opcode %u from the server", opcode);
	}
}

static void on_timeout(struct transfer *t)
{
	t->timeouts++;
	if (++t->retries > (int)opt.max_retries) fail("no answer after %u retransmissions", opt.max_retries);
	send_to(t, t->last_sent, t->last_sent_len, &t->server);
	arm(t);
}

static unsigned number_arg(const char *s, unsigned min, unsigned max, const char *what)
{
	char *end;
	unsigned long v = strtoul(s, &end, 10);
	if (*s < '0' || *s > '9' || *end || v < min || v > max) fail("%s must be %u-%u, not %s", what, min, max, s);
	return (unsigned)v;
}

static void map_expected(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) fail("%s: %s", path, strerror(errno));
	struct stat st;
	if (fstat(fd, &st) < 0) fail("%s: %s", path, strerror(errno));
	opt.expected_size = (size_t)st.st_size;
	if (opt.expected_size > 0) {
		void *m = mmap(NULL, opt.expected_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
		if (m == MAP_FAILED) fail("mmap %s: %s", path, strerror(errno));
		opt.expected = m;
	}
	opt.has_expected = 1;
	close(fd);
}

int main(int argc, char **argv)
{
	int c;
	while ((c = getopt(argc, argv, "b:w:c:t:r:e:")) != -1) {
		switch (c) {
		case 'b': opt.blksize = number_arg(optarg, BLKSIZE_MIN, BLKSIZE_MAX, "blksize"), opt.ask_blksize = 1; break;
		case 'w': opt.windowsize = number_arg(optarg, 1, WINDOWSIZE_MAX, "windowsize"), opt.ask_windowsize = 1; break;
		case 'c': opt.concurrent = number_arg(optarg, 1, MAX_CONCURRENT, "concurrent"); break;
		case 't': opt.retransmit_ms = number_arg(optarg, 1, 600000, "retransmit ms"); break;
		case 'r': opt.max_retries = number_arg(optarg, 0, 100, "retries"); break;
		case 'e': map_expected(optarg); break;
		default: fail("usage: tftp-get [-b BLKSIZE] [-w WINDOWSIZE] [-c CONCURRENT] [-t MS] [-r RETRIES] [-e EXPECTED] HOST PORT FILE");
		}
	}
	if (argc - optind != 3) fail("usage: tftp-get [options] HOST PORT FILE");
	opt.host = argv[optind];
	opt.port = number_arg(argv[optind + 1], 1, 65535, "port");
	opt.file = argv[optind + 2];
	if (inet_pton(AF_INET, opt.host, &opt.addr) != 1) fail("HOST must be an IPv4 address, not %s", opt.host);

	static struct transfer transfers[MAX_CONCURRENT];
	static struct pollfd fds[MAX_CONCURRENT];
	/* The largest datagram a server may send: a DATA of BLKSIZE_MAX, or anything up to the UDP limit. */
	static unsigned char buf[65536];
	struct rusage ru0, ru1;
	getrusage(RUSAGE_SELF, &ru0);
	double t0 = now();
	for (unsigned i = 0; i < opt.concurrent; i++) start(&transfers[i]);
	unsigned left = opt.concurrent;
	while (left > 0) {
		double next = 1e300;
		unsigned n = 0;
		for (unsigned i = 0; i < opt.concurrent; i++) {
			struct transfer *t = &transfers[i];
			if (t->done) continue;
			if (t->deadline < next) next = t->deadline;
			fds[n].fd = t->fd, fds[n].events = POLLIN, fds[n].revents = 0;
			n++;
		}
		double wait = next - now();
		int ms = wait <= 0 ? 0 : (int)(wait * 1000) + 1;
		int ready = poll(fds, n, ms);
		if (ready < 0) {
			if (errno == EINTR) continue;
			fail("poll: %s", strerror(errno));
		}
		double t = ready == 0 || next <= now() ? now() : 0;
		for (unsigned i = 0, k = 0; i < opt.concurrent; i++) {
			struct transfer *x = &transfers[i];
			if (x->done) continue;
			struct pollfd *f = &fds[k++];
			if (f->revents & (POLLIN | POLLERR)) {
				/* Everything queued on the socket, then back to poll(). */
				for (;;) {
					struct sockaddr_in from;
					socklen_t fromlen = sizeof from;
					ssize_t got = recvfrom(x->fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fromlen);
					if (got < 0) {
						if (errno == EAGAIN || errno == EWOULDBLOCK) break;
						if (errno == EINTR) continue;
						if (errno == ECONNREFUSED) break; /* ICMP from an earlier send: the timer resends */
						fail("recvfrom: %s", strerror(errno));
					}
					on_packet(x, buf, (size_t)got, &from);
					if (x->done) break;
					/* Lock-step: the next block cannot be there before the ACK just sent is answered. */
					if (x->windowsize == 1 && x->in_window == 0 && x->started_data) break;
				}
			}
			if (x->done) {
				if (opt.has_expected && x->bytes != opt.expected_size)
					fail("downloaded %llu bytes, the expected file has %zu", (unsigned long long)x->bytes, opt.expected_size);
				close(x->fd);
				left--;
			} else if (t > 0 && x->deadline <= t) {
				on_timeout(x);
			}
		}
	}
	double seconds = now() - t0;
	getrusage(RUSAGE_SELF, &ru1);
	uint64_t bytes = 0, packets = 0, blocks = 0, acks = 0, discarded = 0, timeouts = 0;
	unsigned blksize = BLKSIZE_MAX, windowsize = WINDOWSIZE_MAX;
	for (unsigned i = 0; i < opt.concurrent; i++) {
		struct transfer *x = &transfers[i];
		bytes += x->bytes, packets += x->packets, blocks += x->blocks, acks += x->acks, discarded += x->discarded, timeouts += x->timeouts;
		if (x->blksize < blksize) blksize = x->blksize;
		if (x->windowsize < windowsize) windowsize = x->windowsize;
	}
	double user = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) + (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6;
	double sys = (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) + (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
	printf("{\"ok\":true,\"bytes\":%llu,\"seconds\":%.6f,\"blksize\":%u,\"windowsize\":%u,\"packets\":%llu,\"blocks\":%llu,"
	       "\"acks\":%llu,\"discarded\":%llu,\"timeouts\":%llu,\"userSeconds\":%.6f,\"systemSeconds\":%.6f}\n",
	       (unsigned long long)bytes, seconds, blksize, windowsize, (unsigned long long)packets, (unsigned long long)blocks,
	       (unsigned long long)acks,
	       (unsigned long long)discarded, (unsigned long long)timeouts, user, sys);
	return 0;
}
