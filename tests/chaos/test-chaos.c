// SPDX-License-Identifier: MIT
/*
 * Chaos: for a bounded time, a dozen client processes at a time (root and nobody) call every
 * method in random order and misbehave at random: they die mid-call, open peers and never
 * speak, flood peers and never read, forge NameOwnerChanged for other clients, send hostile
 * strings, pass tokens and buffer paths between each other, declare huge peer messages or leave
 * them partial, ask for listings and snapshots they never read, subscribe and never
 * acknowledge; once, dbus-daemon itself is stopped for a few seconds. Meanwhile a probe asks the daemon
 * something cheap every 50 ms and times the answer. At the end the daemon must be alive, must
 * never have stalled, and must be back where it started (fds, clients, buffers, bytes, memory),
 * and it must exit cleanly (which is how ASan, UBSan and valgrind reports fail the test).
 *
 * DMABROKER_CHAOS_SECONDS sets the run time (default 60). DMABROKER_CHAOS_SKIP is a comma list
 * of misbehaviours to leave out (move, silent-peer, peer-flood, forged-noc, abandon, unread,
 * oversize, unread-listing, lazy-subscriber, freeze-bus),
 * so one daemon bug that takes the daemon down does not hide the others.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <drm_fourcc.h>

#include "bus-open.h"
#include "dmabroker.h"
#include "fixture.h"
#include "protocol.h"
#include "rawbus.h"
#include "tap.h"

#define NOBODY 65534
#define CONCURRENT 12
#define MAX_SPAWNED 400 /* bounds the run by count as well as by time */
#define CHILD_MAX_MS 20000 /* a client alive longer than this is killed (and counted) */
#define PROBE_INTERVAL_MS 50
#define CALL_TIMEOUT_USEC (5 * 1000000ull) /* a hang fails a call; it never hangs the test */
#define STALL_MS 1000
#define MOVE_DEADLINE_SEC 1
/* Clients are gone once the move deadline has passed and the bus told the daemon. */
#define SETTLE_MS (MOVE_DEADLINE_SEC * 1000 + 15000)
/* A peer that never reads: how long one floods before it gives up (it must be cut off). */
#define FLOOD_CALLS 30000
#define FLOOD_MS 5000
/* glibc keeps some freed heap; under ASan the quarantine keeps up to 256 MiB of freed memory
 * (LeakSanitizer checks for real leaks when the daemon exits). */
#if defined(__SANITIZE_ADDRESS__)
#define RSS_SLACK_KIB (384 * 1024)
#else
#define RSS_SLACK_KIB (16 * 1024)
#endif

#define RING 64
#define PATH_LEN 96
#define NAME_LEN 64
#define HELD_MAX 32
#define KEPT_MAX 48

enum kind {
	K_REGISTER,
	K_ALLOCATE,
	K_ALLOCATE_MANY,
	K_EXPORT,
	K_SHARE,
	K_IMPORT,
	K_RELEASE,
	K_MOVE,
	K_REVOKE,
	K_REACQUIRE,
	K_OPEN_PEER,
	K_PROPERTY,
	K_COLLECTION,
	K_FORGED_NOC,
	K_ABANDONED,
	K_UNREAD,
	K_FLOOD,
	K_OVERSIZE,
	K_LISTING,
	K_SUBSCRIBE,
	N_KINDS,
};

static const char *const kind_names[N_KINDS] = {
	[K_REGISTER] = "Register",
	[K_ALLOCATE] = "Allocate",
	[K_ALLOCATE_MANY] = "AllocateMany",
	[K_EXPORT] = "Export",
	[K_SHARE] = "Share",
	[K_IMPORT] = "Import",
	[K_RELEASE] = "Release",
	[K_MOVE] = "Move",
	[K_REVOKE] = "Revoke",
	[K_REACQUIRE] = "Reacquire",
	[K_OPEN_PEER] = "OpenPeer",
	[K_PROPERTY] = "property Get/GetAll",
	[K_COLLECTION] = "collection calls",
	[K_FORGED_NOC] = "forged NameOwnerChanged",
	[K_ABANDONED] = "sent, then the caller died",
	[K_UNREAD] = "sent, reply never read",
	[K_FLOOD] = "peer flood calls (never read)",
	[K_OVERSIZE] = "peer message oversized or partial",
	[K_LISTING] = "listings and snapshots never read",
	[K_SUBSCRIBE] = "Subscribe (acknowledging or not)",
};

enum err_class {
	E_INVALID_ARGUMENT,
	E_NOT_REGISTERED,
	E_NOT_FOUND,
	E_PERMISSION_DENIED,
	E_QUOTA_EXCEEDED,
	E_UNSUPPORTED,
	E_NO_DEVICE,
	E_NO_MEMORY,
	E_BUSY,
	E_FAILED,
	E_OTHER_DMABROKER,
	E_SYSTEM,
	E_DBUS,
	E_LOCAL,
	N_ERRS,
};

static const char *const err_names[N_ERRS] = {
	[E_INVALID_ARGUMENT] = DB_ERROR_INVALID_ARGUMENT,
	[E_NOT_REGISTERED] = DB_ERROR_NOT_REGISTERED,
	[E_NOT_FOUND] = DB_ERROR_NOT_FOUND,
	[E_PERMISSION_DENIED] = DB_ERROR_PERMISSION_DENIED,
	[E_QUOTA_EXCEEDED] = DB_ERROR_QUOTA_EXCEEDED,
	[E_UNSUPPORTED] = DB_ERROR_UNSUPPORTED,
	[E_NO_DEVICE] = DB_ERROR_NO_DEVICE,
	[E_NO_MEMORY] = DB_ERROR_NO_MEMORY,
	[E_BUSY] = DB_ERROR_BUSY,
	[E_FAILED] = DB_ERROR_FAILED,
	[E_OTHER_DMABROKER] = "org.dmabroker.Error.* (other)",
	[E_SYSTEM] = "System.Error.* (an errno leaking out)",
	[E_DBUS] = "org.freedesktop.DBus.Error.*",
	[E_LOCAL] = "no error name (local errno: timeout, disconnect)",
};

/* Misbehaviours that DMABROKER_CHAOS_SKIP can leave out. */
enum act {
	A_MOVE,
	A_SILENT_PEER,
	A_PEER_FLOOD,
	A_FORGED_NOC,
	A_ABANDON,
	A_UNREAD,
	A_OVERSIZE,
	A_LISTING,
	A_SUBSCRIBER,
	A_FREEZE_BUS,
	N_ACTS,
};

static const char *const act_names[N_ACTS] = {
	[A_MOVE] = "move",
	[A_SILENT_PEER] = "silent-peer",
	[A_PEER_FLOOD] = "peer-flood",
	[A_FORGED_NOC] = "forged-noc",
	[A_ABANDON] = "abandon",
	[A_UNREAD] = "unread",
	[A_OVERSIZE] = "oversize",
	[A_LISTING] = "unread-listing",
	[A_SUBSCRIBER] = "lazy-subscriber",
	[A_FREEZE_BUS] = "freeze-bus",
};

struct slot {
	atomic_flag lock;
	bool set;
	char s[PATH_LEN];
};

struct token_slot {
	atomic_flag lock;
	bool set;
	uint8_t bytes[DMABROKER_TOKEN_SIZE];
};

/* Shared by every process (MAP_SHARED): counters, and what clients pass each other. */
struct shared {
	atomic_ulong calls[N_KINDS];
	atomic_ulong refused[N_ERRS];
	atomic_ulong answered;
	/* NotRegistered answered to a connection whose Register had succeeded. */
	atomic_ulong evicted;
	atomic_ulong flood_max, floods, flood_pushback;
	atomic_ulong silent_peers, silent_leaves, lazy_moves, self_kills, hostile_strings;
	/* Peers the daemon closed for an oversized or partial message, and those it did not. */
	atomic_ulong oversize_closed, oversize_open;
	/* Events subscribers were told they missed ("events-missed"), and how many such. */
	atomic_ulong events_seen, events_missed, missed_notices;
	/* Refusals whose message is not clean text (a control byte, or a NULL printed). */
	atomic_ulong unclean_errors, lone_collections;
	atomic_uint next_token, next_name, next_path;
	struct token_slot tokens[RING];
	struct slot names[RING];
	struct slot paths[RING];
	char probe_name[NAME_LEN];
	bool skip[N_ACTS];
};

static struct shared *sh;
static struct fixture f;

/*
 * Everything's stderr (the daemon's log, sanitizer reports) goes to a file while the test
 * runs, so the log can be checked for lines a client wrote; it is copied to the real stderr
 * at the end.
 */
static int log_fd = -1, real_stderr = -1;
static unsigned long injected_lines, unclean_lines, log_lines;

/* --- small helpers --- */

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static uint64_t rng_state;

static uint64_t rnd(void)
{
	/* xorshift64*: each process seeds its own from getrandom(). */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 2685821657736338717ull;
}

static unsigned pick(unsigned n)
{
	return (unsigned)(rnd() % n);
}

static bool chance(unsigned percent)
{
	return pick(100) < percent;
}

static bool allowed(enum act a)
{
	return !sh->skip[a];
}

static void count_max(atomic_ulong *v, unsigned long x)
{
	unsigned long cur = atomic_load(v);

	while (x > cur && !atomic_compare_exchange_weak(v, &cur, x))
		;
}

/* Rings of strings and tokens: a busy slot (or one a killed writer left locked) is skipped. */
static void ring_put(struct slot *ring, atomic_uint *next, const char *s)
{
	struct slot *sl = &ring[atomic_fetch_add(next, 1) % RING];

	if (atomic_flag_test_and_set(&sl->lock))
		return;
	snprintf(sl->s, sizeof(sl->s), "%s", s);
	sl->set = true;
	atomic_flag_clear(&sl->lock);
}

static bool ring_get(struct slot *ring, char *out, size_t len)
{
	struct slot *sl = &ring[pick(RING)];
	bool ok = false;

	if (atomic_flag_test_and_set(&sl->lock))
		return false;
	if (sl->set) {
		snprintf(out, len, "%s", sl->s);
		ok = true;
	}
	atomic_flag_clear(&sl->lock);
	return ok;
}

static void token_put(const uint8_t *bytes)
{
	struct token_slot *sl = &sh->tokens[atomic_fetch_add(&sh->next_token, 1) % RING];

	if (atomic_flag_test_and_set(&sl->lock))
		return;
	memcpy(sl->bytes, bytes, DMABROKER_TOKEN_SIZE);
	sl->set = true;
	atomic_flag_clear(&sl->lock);
}

static bool token_get(uint8_t *bytes)
{
	struct token_slot *sl = &sh->tokens[pick(RING)];
	bool ok = false;

	if (atomic_flag_test_and_set(&sl->lock))
		return false;
	if (sl->set) {
		memcpy(bytes, sl->bytes, DMABROKER_TOKEN_SIZE);
		ok = true;
	}
	atomic_flag_clear(&sl->lock);
	return ok;
}

static enum err_class classify(const char *name)
{
	if (!name || !*name)
		return E_LOCAL;
	for (int i = 0; i < E_OTHER_DMABROKER; i++)
		if (strcmp(name, err_names[i]) == 0)
			return (enum err_class)i;
	if (strncmp(name, "org.dmabroker.", 14) == 0)
		return E_OTHER_DMABROKER;
	if (strncmp(name, "System.Error.", 13) == 0)
		return E_SYSTEM;
	if (strncmp(name, "org.freedesktop.DBus.", 21) == 0)
		return E_DBUS;
	return E_LOCAL;
}

/*
 * Text a hostile client sends in every string argument: log injection (a line break, a C1
 * NEL, a Unicode line separator), terminal escapes, bidi overrides, printf conversions, huge.
 */
static const char *hostile_string(void)
{
	static char huge[8192];
	static const char *const list[] = {
		"evil\nname",
		"x\n<0>dmabrokerd: forged emergency line",
		"\n<3>Revoking buffer /org/dmabroker/Broker1/buffer/1",
		"\x1b[2J\x1b[31mred",
		"%s%s%s%n%x",
		"",
		"tab\there\r\n",
		"not-ok 1 - \n# fake TAP",
		"/dev/x\n<0>dmabrokerd: forged device",
		"nel\xc2\x85<0>dmabrokerd: forged by NEL",
		"ls\xe2\x80\xa8<0>dmabrokerd: forged by U+2028",
		"rlo\xe2\x80\xae"
		"desrever",
		"csi\xc2\x9b"
		"31m",
		"caf\xc3\xa9 ok",
	};

	atomic_fetch_add(&sh->hostile_strings, 1);
	if (chance(15)) {
		memset(huge, 'A' + (int)pick(26), sizeof(huge) - 1);
		huge[sizeof(huge) - 1 - pick(4096)] = '\0';
		return huge;
	}
	return list[pick(sizeof(list) / sizeof(list[0]))];
}

/* The integer edges, where random values from small pools never land. */
static uint64_t edge_value(void)
{
	static const uint64_t edges[] = {
		0,	     1,		  2,	      3,	  0x7fffffffu,	     0x80000000u,
		0xfffffffeu, 0xffffffffu, 1ull << 32, 1ull << 63, UINT64_MAX - 4095, UINT64_MAX};

	return edges[pick(sizeof(edges) / sizeof(edges[0]))];
}

/* An object path as long as a client may make one: only its length is hostile. */
static void long_path(char *out, size_t len)
{
	size_t n = snprintf(out, len, "%s/", DB_BUFFER_PATH_PREFIX);

	while (n + 2 < len)
		out[n++] = 'a' + (char)pick(26);
	out[n] = '\0';
}

/* --- a chaos client --- */

struct held {
	char path[PATH_LEN];
	int fd;
};

struct client {
	sd_bus *bus;
	sd_bus *peer; /* a speaking peer connection, or NULL */
	bool registered;
	struct held held[HELD_MAX];
	int n_held;
	int kept[KEPT_MAX]; /* fds held on purpose: silent peers, flooded peers, old buffers */
	char cols[4][PATH_LEN]; /* collections it created or joined */
	int n_cols;
	int n_kept;
	bool silent_peer;
};

static sd_bus *call_bus(struct client *c)
{
	return c->peer && chance(80) ? c->peer : c->bus;
}

static sd_bus_message *new_call(sd_bus *bus, struct client *c, const char *member)
{
	sd_bus_message *m = NULL;

	if (sd_bus_message_new_method_call(bus, &m, bus == c->peer ? NULL : DB_BUS_NAME,
					   DB_OBJECT_PATH, DB_IFACE_BROKER, member) < 0)
		return NULL;
	return m;
}

static void keep_fd(struct client *c, int fd)
{
	if (fd < 0)
		return;
	if (c->n_kept < KEPT_MAX)
		c->kept[c->n_kept++] = fd;
	else
		close(fd);
}

/* Calls and counts. m is consumed. Returns sd_bus_call's answer. */
static int do_call(struct client *c, enum kind k, sd_bus_message *m, sd_bus_message **reply)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	int r;

	if (!m) {
		atomic_fetch_add(&sh->calls[k], 1);
		atomic_fetch_add(&sh->refused[E_LOCAL], 1);
		return -ENOMEM;
	}
	atomic_fetch_add(&sh->calls[k], 1);
	r = sd_bus_call(NULL, m, CALL_TIMEOUT_USEC, &error, reply);
	if (r < 0) {
		enum err_class e = classify(error.name);
		const unsigned char *p = (const unsigned char *)error.message;

		/* What the daemon says back is text: never a client's raw bytes, nor what a
		 * message read from where it should not (heap bytes, a NULL name). */
		for (; p && *p; p++)
			if (*p < 0x20 || *p == 0x7f)
				break;
		if ((p && *p) || (error.message && strstr(error.message, "(null)")))
			atomic_fetch_add(&sh->unclean_errors, 1);

		atomic_fetch_add(&sh->refused[e], 1);
		if (e == E_NOT_REGISTERED && c->registered && k != K_REGISTER)
			atomic_fetch_add(&sh->evicted, 1);
	} else {
		atomic_fetch_add(&sh->answered, 1);
	}
	sd_bus_error_free(&error);
	sd_bus_message_unref(m);
	return r;
}

static void hold(struct client *c, const char *path, int borrowed_fd)
{
	int fd = borrowed_fd >= 0 ? fcntl(borrowed_fd, F_DUPFD_CLOEXEC, 3) : -1;

	ring_put(sh->paths, &sh->next_path, path);
	if (c->n_held == HELD_MAX) {
		if (fd >= 0)
			close(fd);
		return;
	}
	snprintf(c->held[c->n_held].path, PATH_LEN, "%s", path);
	c->held[c->n_held].fd = fd;
	c->n_held++;
}

static void drop_held(struct client *c, int i)
{
	/* Sometimes keep the fd after the daemon let go of the buffer. */
	if (chance(20))
		keep_fd(c, c->held[i].fd);
	else if (c->held[i].fd >= 0)
		close(c->held[i].fd);
	c->held[i] = c->held[--c->n_held];
}

/* A buffer path: one we hold, another client's, or made up. -1 in *idx when not ours. */
static void some_path(struct client *c, char *out, int *idx)
{
	*idx = -1;
	if (c->n_held && chance(70)) {
		*idx = (int)pick((unsigned)c->n_held);
		snprintf(out, PATH_LEN, "%s", c->held[*idx].path);
		return;
	}
	if (ring_get(sh->paths, out, PATH_LEN) && chance(90))
		return;
	if (chance(10)) {
		long_path(out, PATH_LEN);
		return;
	}
	snprintf(out, PATH_LEN, "%s/%u", DB_BUFFER_PATH_PREFIX, pick(5000));
}

static void op_register(struct client *c)
{
	static const char *const roles[] = {"cpu", "gpu", "media", "compositor", "root"};
	sd_bus *bus = chance(95) ? c->bus : call_bus(c);
	sd_bus_message *m = new_call(bus, c, "Register");
	const char *name = chance(30) ? hostile_string() : "chaos";
	const char *role = chance(5) ? hostile_string() : roles[pick(5)];

	if (m && chance(20))
		sd_bus_message_append(m, "a{sv}", 4, "role", "s", role, "dynamic", "b",
				      (int)chance(50), "name", "s", name, "devices", "as", 2,
				      "/dev/dri/renderD128",
				      chance(30)   ? hostile_string()
				      : chance(50) ? "/etc/passwd"
						   : "/dev/null");
	else if (m)
		sd_bus_message_append(m, "a{sv}", 3, "role", "s", role, "dynamic", "b",
				      (int)chance(50), "name", "s", name);
	if (do_call(c, K_REGISTER, m, NULL) >= 0 && bus == c->bus) {
		c->registered = true;
		ring_put(sh->names, &sh->next_name,
			 sd_bus_get_unique_name(c->bus, &name) >= 0 ? name : "");
	}
}

static void append_spec(sd_bus_message *m)
{
	static const uint64_t sizes[] = {4096,	    65536,	     1u << 20, 4u << 20,
					 16u << 20, (16u << 20) + 1, 0,	       UINT64_MAX};
	const char *backend = chance(80)   ? NULL
			      : chance(20) ? hostile_string()
			      : chance(50) ? "memfd"
					   : "udmabuf";
	const char *name = chance(20) ? hostile_string() : "chaos-buf";

	sd_bus_message_open_container(m, 'a', "{sv}");
	if (chance(75)) {
		sd_bus_message_append(m, "{sv}", "size", "t", sizes[pick(chance(70) ? 3 : 8)]);
	} else {
		uint32_t fourccs[] = {DRM_FORMAT_NV12, DRM_FORMAT_XRGB8888, 0x12345678};

		sd_bus_message_append(m, "{sv}", "width", "u", 16 + pick(1024));
		sd_bus_message_append(m, "{sv}", "height", "u", 16 + pick(1024));
		sd_bus_message_append(m, "{sv}", "fourcc", "u", fourccs[pick(3)]);
	}
	if (backend)
		sd_bus_message_append(m, "{sv}", "backend", "s", backend);
	sd_bus_message_append(m, "{sv}", "name", "s", name);
	/* A key is the client's text too (an unknown one is echoed in the error). */
	if (chance(3))
		sd_bus_message_append(m, "{sv}", hostile_string(), "s", "x");
	sd_bus_message_close_container(m);
}

static void op_allocate(struct client *c)
{
	sd_bus_message *m = new_call(call_bus(c), c, "Allocate"), *reply = NULL;
	const char *path;
	int fd;

	if (m)
		append_spec(m);
	if (do_call(c, K_ALLOCATE, m, &reply) >= 0 &&
	    sd_bus_message_read(reply, "oh", &path, &fd) >= 0)
		hold(c, path, fd);
	sd_bus_message_unref(reply);
}

static void op_allocate_many(struct client *c)
{
	sd_bus_message *m = new_call(call_bus(c), c, "AllocateMany"), *reply = NULL;
	const char *paths[DB_ALLOCATE_MANY_MAX], *p;
	unsigned count = pick(18), n = 0;
	int fd;

	if (m) {
		sd_bus_message_append(m, "u", count);
		sd_bus_message_append(m, "a{sv}", 1, "size", "t", (uint64_t)4096 << pick(5));
	}
	if (do_call(c, K_ALLOCATE_MANY, m, &reply) < 0)
		return;
	if (sd_bus_message_enter_container(reply, 'a', "o") >= 0) {
		while (n < DB_ALLOCATE_MANY_MAX && sd_bus_message_read(reply, "o", &p) > 0)
			paths[n++] = p;
		sd_bus_message_exit_container(reply);
	}
	if (sd_bus_message_enter_container(reply, 'a', "h") >= 0) {
		for (unsigned i = 0; i < n && sd_bus_message_read(reply, "h", &fd) > 0; i++)
			hold(c, paths[i], fd);
		sd_bus_message_exit_container(reply);
	}
	sd_bus_message_unref(reply);
}

/* Export of things that are not dma-bufs (there is no dma-buf exporter here but the
 * daemon, and its memfd backend's fds are not dma-bufs either). */
static void op_export(struct client *c)
{
	sd_bus_message *m = new_call(call_bus(c), c, "Export"), *reply = NULL;
	int fd = -1, p[2] = {-1, -1};
	const char *path;

	switch (pick(4)) {
	case 0:
		fd = memfd_create("chaos-export", MFD_CLOEXEC);
		if (fd >= 0 && ftruncate(fd, 65536) < 0) {
			close(fd);
			fd = -1;
		}
		break;
	case 1:
		if (pipe2(p, O_CLOEXEC) == 0)
			fd = p[0];
		break;
	case 2:
		fd = eventfd(0, EFD_CLOEXEC);
		break;
	default:
		fd = c->n_held ? fcntl(c->held[pick((unsigned)c->n_held)].fd, F_DUPFD_CLOEXEC, 3)
			       : open("/dev/null", O_RDWR | O_CLOEXEC);
		break;
	}
	if (m && fd >= 0)
		sd_bus_message_append(m, "ha{sv}", fd, 1, "name", "s",
				      chance(30) ? hostile_string() : "exported");
	if (do_call(c, K_EXPORT, fd >= 0 ? m : sd_bus_message_unref(m), &reply) >= 0 &&
	    sd_bus_message_read(reply, "o", &path) >= 0)
		hold(c, path, -1);
	sd_bus_message_unref(reply);
	if (fd >= 0)
		close(fd);
	if (p[1] >= 0)
		close(p[1]);
}

static void op_share(struct client *c)
{
	sd_bus_message *m = new_call(call_bus(c), c, "Share"), *reply = NULL;
	static const uint64_t expiries[] = {0, 1, 50, 10000};
	static const uint32_t uids[] = {0, NOBODY, 1000};
	char path[PATH_LEN];
	const void *bytes;
	size_t len;
	int idx;

	some_path(c, path, &idx);
	if (m) {
		sd_bus_message_append(m, "o", path);
		sd_bus_message_open_container(m, 'a', "{sv}");
		if (chance(50))
			sd_bus_message_append(m, "{sv}", "single_use", "b", (int)chance(50));
		if (chance(30))
			sd_bus_message_append(m, "{sv}", "expires_in_ms", "t", expiries[pick(4)]);
		if (chance(30))
			sd_bus_message_append(m, "{sv}", "uid", "u", uids[pick(3)]);
		sd_bus_message_close_container(m);
	}
	if (do_call(c, K_SHARE, m, &reply) >= 0 &&
	    sd_bus_message_read_array(reply, 'y', &bytes, &len) >= 0 && len == DMABROKER_TOKEN_SIZE)
		token_put(bytes);
	sd_bus_message_unref(reply);
}

static void op_import(struct client *c)
{
	sd_bus_message *m = new_call(call_bus(c), c, "Import"), *reply = NULL;
	uint8_t token[64];
	size_t len = DMABROKER_TOKEN_SIZE;
	const char *path;
	int fd;

	if (!token_get(token) || chance(10)) {
		getrandom(token, sizeof(token), 0);
		if (chance(50))
			len = pick(sizeof(token) + 1);
	}
	if (m)
		sd_bus_message_append_array(m, 'y', token, len);
	if (do_call(c, K_IMPORT, m, &reply) >= 0 &&
	    sd_bus_message_read(reply, "oh", &path, &fd) >= 0)
		hold(c, path, fd);
	sd_bus_message_unref(reply);
}

/* Release, Move, Revoke, Reacquire: one buffer path argument (Revoke adds a reason). */
static void op_on_buffer(struct client *c, enum kind k)
{
	static const char *const members[N_KINDS] = {[K_RELEASE] = "Release",
						     [K_MOVE] = "Move",
						     [K_REVOKE] = "Revoke",
						     [K_REACQUIRE] = "Reacquire"};
	sd_bus_message *m = new_call(call_bus(c), c, members[k]), *reply = NULL;
	char path[PATH_LEN];
	int idx, fd, r;

	some_path(c, path, &idx);
	if (m && k == K_REVOKE)
		sd_bus_message_append(m, "os", path, chance(40) ? hostile_string() : "chaos");
	else if (m)
		sd_bus_message_append(m, "o", path);
	r = do_call(c, k, m, &reply);
	if (r >= 0 && k == K_MOVE) {
		/* The holders (this one too) now owe a Reacquire before the deadline. */
		if (chance(50)) {
			atomic_fetch_add(&sh->lazy_moves, 1);
		} else {
			sd_bus_message *again = new_call(call_bus(c), c, "Reacquire"), *rr = NULL;

			if (again)
				sd_bus_message_append(again, "o", path);
			if (do_call(c, K_REACQUIRE, again, &rr) >= 0 && idx >= 0 &&
			    sd_bus_message_read(rr, "h", &fd) >= 0) {
				keep_fd(c, c->held[idx].fd);
				c->held[idx].fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
			}
			sd_bus_message_unref(rr);
		}
	}
	if (r >= 0 && k == K_REACQUIRE && idx >= 0 && sd_bus_message_read(reply, "h", &fd) >= 0) {
		if (c->held[idx].fd >= 0)
			close(c->held[idx].fd);
		c->held[idx].fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	}
	if (idx >= 0 && (k == K_RELEASE || k == K_REVOKE) && (r >= 0 || chance(50)))
		drop_held(c, idx);
	sd_bus_message_unref(reply);
}

/* Random constraints: sensible, contradictory, huge, malformed. */
static void append_constraints(sd_bus_message *m)
{
	static const uint32_t fourccs[] = {DRM_FORMAT_YUYV, DRM_FORMAT_NV12, DRM_FORMAT_XRGB8888,
					   0x20202020};
	static const char *const backends[] = {
		"memfd",   "udmabuf", "dma-heap", "dma-heap:system", "dma-heap:linux,cma",
		"nonsense"};
	uint32_t set[4];
	unsigned n;

	sd_bus_message_open_container(m, 'a', "{sv}");
	if (chance(60))
		sd_bus_message_append(m, "{sv}", "min-buffers-for-camping", "u",
				      chance(5) ? 100000u : pick(6));
	if (chance(20))
		sd_bus_message_append(m, "{sv}", "max-buffers", "u", pick(10));
	if (chance(50))
		sd_bus_message_append(m, "{sv}", "min-size", "t",
				      chance(5) ? (uint64_t)1 << 62 : (uint64_t)4096 << pick(10));
	if (chance(20))
		sd_bus_message_append(m, "{sv}", "max-size", "t", (uint64_t)4096 << pick(12));
	if (chance(30)) {
		/* An edge width is odd as often as not, which rules out the subsampled
		 * formats before any stride is laid out: an edge gets a packed format. */
		bool edge = chance(25);

		n = edge ? 1 : 1 + pick(4);
		for (unsigned i = 0; i < n; i++)
			set[i] = edge ? DRM_FORMAT_XRGB8888 : fourccs[pick(4)];
		sd_bus_message_open_container(m, 'e', "sv");
		sd_bus_message_append_basic(m, 's', "fourccs");
		sd_bus_message_open_container(m, 'v', "au");
		sd_bus_message_append_array(m, 'u', set, (chance(10) ? 0 : n) * sizeof(uint32_t));
		sd_bus_message_close_container(m);
		sd_bus_message_close_container(m);
		sd_bus_message_append(
			m, "{sv}{sv}", "width", "u",
			edge ? (uint32_t)edge_value() | 1u : 2 + 2 * pick(1000), "height", "u",
			edge && chance(20) ? (uint32_t)edge_value() | 1u : 1 + pick(1000));
	}
	if (chance(20))
		sd_bus_message_append(m, "{sv}", "stride-divisor", "u",
				      chance(10) ? 3u : 1u << pick(13));
	if (chance(10))
		sd_bus_message_append(m, "{sv}", "contiguous", "b", 1);
	if (chance(10))
		sd_bus_message_append(m, "{sv}", "max-segment-size", "t",
				      (uint64_t)4096 << pick(8));
	if (chance(15))
		sd_bus_message_append(m, "{sv}", "backends", "as", 1,
				      chance(20) ? hostile_string() : backends[pick(6)]);
	if (chance(10))
		sd_bus_message_append(m, "{sv}", "device", "s", hostile_string());
	if (chance(5))
		sd_bus_message_append(m, "{sv}", "colour", "s", "red");
	if (chance(3))
		sd_bus_message_append(m, "{sv}", hostile_string(), "u", 1);
	/* The integer edges, one participant's worth: where the 20,000 random collections of the
	 * unit tests never went and the refusal text named participant -1. */
	if (chance(25)) {
		static const char *const u32_keys[] = {
			"min-buffers",	  "max-buffers",     "size-divisor", "min-width",
			"max-width",	  "min-height",	     "max-height",   "stride-divisor",
			"offset-divisor", "dma-address-bits"};
		static const char *const u64_keys[] = {"min-size", "max-size", "max-segment-size"};
		uint32_t strides[2] = {(uint32_t)edge_value(), (uint32_t)edge_value()};

		sd_bus_message_append(m, "{sv}", u32_keys[pick(10)], "u", (uint32_t)edge_value());
		if (chance(50))
			sd_bus_message_append(m, "{sv}", u64_keys[pick(3)], "t", edge_value());
		if (chance(30)) {
			sd_bus_message_open_container(m, 'e', "sv");
			sd_bus_message_append_basic(m, 's',
						    chance(50) ? "min-strides" : "max-strides");
			sd_bus_message_open_container(m, 'v', "au");
			sd_bus_message_append_array(m, 'u', strides, (1 + pick(2)) * 4);
			sd_bus_message_close_container(m);
			sd_bus_message_close_container(m);
		}
	}
	sd_bus_message_append(m, "{sv}", "cpu-read", "b", (int)chance(50));
	sd_bus_message_close_container(m);
}

static void some_collection(struct client *c, char *out)
{
	if (c->n_cols && chance(85))
		snprintf(out, PATH_LEN, "%s", c->cols[pick((unsigned)c->n_cols)]);
	else
		snprintf(out, PATH_LEN, "%s/%u", DB_COLLECTION_PATH_PREFIX, pick(200));
}

static void remember_collection(struct client *c, const char *path)
{
	if (c->n_cols < 4)
		snprintf(c->cols[c->n_cols++], PATH_LEN, "%s", path);
}

/* Constrains a collection it just created and commits it, then waits for the outcome. */
static void lone_collection(struct client *c, const char *path)
{
	sd_bus *bus = call_bus(c);
	sd_bus_message *m = new_call(bus, c, "SetCollectionConstraints");

	atomic_fetch_add(&sh->lone_collections, 1);
	if (m) {
		sd_bus_message_append(m, "o", path);
		append_constraints(m);
	}
	if (do_call(c, K_COLLECTION, m, NULL) < 0)
		return;
	m = new_call(bus, c, "CommitCollection");
	if (m)
		sd_bus_message_append(m, "o", path);
	if (do_call(c, K_COLLECTION, m, NULL) < 0)
		return;
	m = new_call(bus, c, "WaitCollection");
	if (m)
		sd_bus_message_append(m, "o", path);
	do_call(c, K_COLLECTION, m, NULL);
}

/* Buffer collections: create, invite, join, constrain, commit, wait, fetch, leave, list. */
static void op_collection(struct client *c)
{
	static const char *const members[] = {
		"CreateCollection",	    "CreateCollectionToken", "JoinCollection",
		"SetCollectionConstraints", "CommitCollection",	     "WaitCollection",
		"GetCollectionBuffers",	    "LeaveCollection",	     "ListCollections"};
	unsigned which = pick(9);
	sd_bus_message *m = new_call(call_bus(c), c, members[which]), *reply = NULL;
	char path[PATH_LEN];
	const char *got;
	uint8_t token[DMABROKER_TOKEN_SIZE];
	const void *bytes;
	size_t len;
	int r;

	some_collection(c, path);
	if (m) {
		switch (which) {
		case 0:
			sd_bus_message_append(m, "a{sv}", 2, "name", "s",
					      chance(30) ? hostile_string() : "chaos",
					      "participants", "u",
					      chance(5)	   ? 1000u
					      : chance(30) ? 1u
							   : pick(4));
			break;
		case 2:
			if (!token_get(token))
				getrandom(token, sizeof(token), 0);
			sd_bus_message_append_array(m, 'y', token, sizeof(token));
			break;
		case 3:
			sd_bus_message_append(m, "o", path);
			append_constraints(m);
			break;
		case 6:
			sd_bus_message_append(m, "ouu", path, pick(40),
					      chance(10) ? 1000u : pick(17));
			break;
		case 8:
			break;
		default:
			sd_bus_message_append(m, "o", path);
			break;
		}
	}
	r = do_call(c, K_COLLECTION, m, &reply);
	if (r < 0) {
		sd_bus_message_unref(reply);
		return;
	}
	if ((which == 0 || which == 2) && sd_bus_message_read(reply, "o", &got) > 0) {
		remember_collection(c, got);
		/* Now and then a participant alone, at once: it allocates (or is refused) on
		 * its own constraints, which random calls on random paths seldom reach. */
		if (which == 0 && chance(40))
			lone_collection(c, got);
	}
	if (which == 1 && sd_bus_message_read_array(reply, 'y', &bytes, &len) >= 0 &&
	    len == DMABROKER_TOKEN_SIZE)
		token_put(bytes);
	if (which == 6 && sd_bus_message_enter_container(reply, 'a', "o") > 0) {
		const char *paths[32];
		unsigned n = 0;
		int fd;

		while (n < 32 && sd_bus_message_read_basic(reply, 'o', &paths[n]) > 0)
			n++;
		sd_bus_message_exit_container(reply);
		sd_bus_message_enter_container(reply, 'a', "h");
		for (unsigned i = 0; i < n && sd_bus_message_read_basic(reply, 'h', &fd) > 0; i++)
			hold(c, paths[i], fd);
	}
	if (which == 7)
		for (int i = 0; i < c->n_cols; i++)
			if (strcmp(c->cols[i], path) == 0)
				snprintf(c->cols[i], PATH_LEN, "%s", c->cols[--c->n_cols]);
	sd_bus_message_unref(reply);
}

static void op_property(struct client *c)
{
	static const char *const props[] = {"NClients", "NBuffers", "BytesInUse", "Limits",
					    "Devices"};
	sd_bus *bus = call_bus(c);
	sd_bus_message *m = NULL;

	if (sd_bus_message_new_method_call(bus, &m, bus == c->peer ? NULL : DB_BUS_NAME,
					   DB_OBJECT_PATH, "org.freedesktop.DBus.Properties",
					   chance(20) ? "GetAll" : "Get") < 0)
		m = NULL;
	if (m && strcmp(sd_bus_message_get_member(m), "GetAll") == 0)
		sd_bus_message_append(m, "s", DB_IFACE_BROKER);
	else if (m)
		sd_bus_message_append(m, "ss", DB_IFACE_BROKER, props[pick(5)]);
	do_call(c, K_PROPERTY, m, NULL);
}

/* A peer that floods calls and never reads an answer. */
static void flood_peer(int fd)
{
	/* Register's a{sv}, empty: the length, then padding to the dict entries' 8 bytes. */
	static const uint8_t body[8] = {0};
	struct timeval tv = {1, 0};
	uint64_t until = now_ms() + FLOOD_MS;
	unsigned long sent = 0;
	struct rawbus rb;
	bool pushback = false;

	/* Never block for long: a blocked write is the pushback this measures. */
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	tv.tv_sec = 5;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (rawbus_connect_peer(&rb, fd) < 0)
		return;
	atomic_fetch_add(&sh->floods, 1);
	while (sent < FLOOD_CALLS && now_ms() < until) {
		if (rawbus_call_peer(&rb, "Register", "a{sv}", body, sizeof(body), 0, NULL, 0) <
		    0) {
			pushback = true;
			break;
		}
		sent++;
		atomic_fetch_add(&sh->calls[K_FLOOD], 1);
	}
	count_max(&sh->flood_max, sent);
	if (pushback)
		atomic_fetch_add(&sh->flood_pushback, 1);
}

/*
 * A peer that declares a message far over MaxMessageSize, or one within it that it leaves
 * partial: the daemon must close it (at the header, or after PeerMessageTimeoutSec) without
 * holding what was declared.
 */
static void oversize_peer(int fd)
{
	uint8_t fixed[16] = {'l', 1, 0, 1};
	static uint8_t junk[65536];
	uint32_t body = chance(50) ? (uint32_t)(96u << 20) : 30000u, zero = 0, serial = 1;
	struct timeval tv = {1, 0};
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	struct rawbus rb;
	char buf[256];

	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (rawbus_connect_peer(&rb, fd) < 0)
		return;
	memcpy(fixed + 4, &body, 4);
	memcpy(fixed + 8, &serial, 4);
	memcpy(fixed + 12, &zero, 4);
	atomic_fetch_add(&sh->calls[K_OVERSIZE], 1);
	if (write(fd, fixed, sizeof(fixed)) != sizeof(fixed))
		return;
	/* Some of the declared body, never all of it. */
	for (unsigned i = 0, n = body > 65536 ? 1 + pick(64) : 0; i < n; i++)
		if (write(fd, junk, sizeof(junk)) < 0)
			break;
	if (body <= 65536 && write(fd, junk, 1 + pick(body - 1)) < 0)
		return;
	/* The daemon closes it: at once for the huge one, after the timeout for the other. */
	while (poll(&pfd, 1, 3000) == 1 && read(fd, buf, sizeof(buf)) > 0)
		;
	if (poll(&pfd, 1, 0) == 1 && read(fd, buf, sizeof(buf)) == 0)
		atomic_fetch_add(&sh->oversize_closed, 1);
	else
		atomic_fetch_add(&sh->oversize_open, 1);
}

static void op_open_peer(struct client *c)
{
	sd_bus_message *m = new_call(call_bus(c), c, "OpenPeer"), *reply = NULL;
	int fd, borrowed;
	unsigned how = pick(10);

	if (do_call(c, K_OPEN_PEER, m, &reply) < 0 ||
	    sd_bus_message_read(reply, "h", &borrowed) < 0) {
		sd_bus_message_unref(reply);
		return;
	}
	fd = fcntl(borrowed, F_DUPFD_CLOEXEC, 3);
	sd_bus_message_unref(reply);
	if (fd < 0)
		return;
	if (how < 4 && allowed(A_SILENT_PEER)) {
		/* Kept, never spoken on, never read. */
		atomic_fetch_add(&sh->silent_peers, 1);
		c->silent_peer = true;
		keep_fd(c, fd);
	} else if (how < 6 && allowed(A_PEER_FLOOD)) {
		flood_peer(fd);
		keep_fd(c, fd);
	} else if (how < 7 && allowed(A_OVERSIZE)) {
		oversize_peer(fd);
		close(fd);
	} else {
		/* Speak on it like the library does. */
		sd_bus *peer = NULL;

		if (sd_bus_new(&peer) >= 0 && sd_bus_set_fd(peer, fd, fd) >= 0 &&
		    sd_bus_set_anonymous(peer, 1) >= 0 && sd_bus_negotiate_fds(peer, 1) >= 0 &&
		    sd_bus_start(peer) >= 0) {
			sd_bus_set_method_call_timeout(peer, CALL_TIMEOUT_USEC);
			c->peer = sd_bus_flush_close_unref(c->peer);
			c->peer = peer;
		} else {
			sd_bus_unref(peer);
			close(fd);
		}
	}
}

/* NameOwnerChanged "name left", claimed by a client: naming another client or the probe. */
static void forge_name_owner_changed(struct client *c)
{
	sd_bus_message *s = NULL;
	char victim[PATH_LEN];

	if (!ring_get(sh->names, victim, sizeof(victim)) || chance(30))
		snprintf(victim, sizeof(victim), "%s", sh->probe_name);
	if (sd_bus_message_new_signal(c->bus, &s, "/org/freedesktop/DBus", "org.freedesktop.DBus",
				      "NameOwnerChanged") < 0)
		return;
	if (sd_bus_message_append(s, "sss", victim, victim, "") >= 0 &&
	    (chance(50) || sd_bus_message_set_destination(s, DB_BUS_NAME) >= 0) &&
	    sd_bus_send(c->bus, s, NULL) >= 0)
		atomic_fetch_add(&sh->calls[K_FORGED_NOC], 1);
	sd_bus_message_unref(s);
}

/* Sends a call and dies before the answer: _exit, or SIGKILL from itself. */
static _Noreturn void abandon(struct client *c)
{
	static const char *const members[] = {"Allocate", "AllocateMany", "Import",
					      "OpenPeer", "Register",	  "Move"};
	/* Move last, so leaving it out is leaving out the last. */
	const char *member = members[pick(allowed(A_MOVE) ? 6 : 5)];
	sd_bus *bus = call_bus(c);
	sd_bus_message *m = new_call(bus, c, member);
	uint8_t token[DMABROKER_TOKEN_SIZE];
	char path[PATH_LEN];
	int idx;

	if (m && strcmp(member, "Allocate") == 0)
		append_spec(m);
	else if (m && strcmp(member, "AllocateMany") == 0)
		sd_bus_message_append(m, "ua{sv}", 16u, 1, "size", "t", (uint64_t)65536);
	else if (m && strcmp(member, "Import") == 0 && token_get(token))
		sd_bus_message_append_array(m, 'y', token, sizeof(token));
	else if (m && strcmp(member, "Move") == 0) {
		some_path(c, path, &idx);
		sd_bus_message_append(m, "o", path);
	} else if (m && strcmp(member, "Register") == 0)
		sd_bus_message_append(m, "a{sv}", 0);
	if (m && sd_bus_send(bus, m, NULL) >= 0) {
		sd_bus_flush(bus);
		atomic_fetch_add(&sh->calls[K_ABANDONED], 1);
	}
	atomic_fetch_add(&sh->self_kills, 1);
	if (chance(50))
		raise(SIGKILL);
	_exit(0);
}

/* Calls sent and never waited for (the replies pile up unread on our side). */
static void send_unread(struct client *c)
{
	sd_bus *bus = call_bus(c);

	for (unsigned i = 0, n = 1 + pick(50); i < n; i++) {
		sd_bus_message *m = new_call(bus, c, chance(50) ? "Allocate" : "Share");

		if (!m)
			return;
		if (strcmp(sd_bus_message_get_member(m), "Allocate") == 0)
			sd_bus_message_append(m, "a{sv}", 1, "size", "t", (uint64_t)4096);
		else
			sd_bus_message_append(m, "oa{sv}", "/", 0);
		if (sd_bus_send(bus, m, NULL) >= 0)
			atomic_fetch_add(&sh->calls[K_UNREAD], 1);
		sd_bus_message_unref(m);
	}
	sd_bus_flush(bus);
}

/* Listings and snapshots asked for on the bus and never read: the replies pile up toward us. */
static void unread_listings(struct client *c)
{
	for (unsigned i = 0, n = 10 + pick(120); i < n; i++) {
		sd_bus_message *m = NULL;
		bool snapshot = chance(30);

		if (snapshot ? sd_bus_message_new_method_call(c->bus, &m, DB_BUS_NAME,
							      DB_OBJECT_PATH, DB_IFACE_BROKER,
							      "Subscribe") < 0
			     : sd_bus_message_new_method_call(c->bus, &m, DB_BUS_NAME,
							      DB_OBJECT_PATH,
							      "org.freedesktop.DBus.ObjectManager",
							      "GetManagedObjects") < 0)
			return;
		if (snapshot)
			sd_bus_message_append(m, "a{sv}", 1, "snapshot", "b", 1);
		if (sd_bus_send(c->bus, m, NULL) >= 0)
			atomic_fetch_add(&sh->calls[K_LISTING], 1);
		sd_bus_message_unref(m);
	}
	sd_bus_flush(c->bus);
}

static int on_chaos_event(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	const char *kind, *key;
	uint64_t *last_seq = userdata, v;

	(void)error;
	if (sd_bus_message_read(m, "s", &kind) < 0 || sd_bus_message_skip(m, "o") < 0 ||
	    sd_bus_message_enter_container(m, 'a', "{sv}") <= 0)
		return 0;
	atomic_fetch_add(&sh->events_seen, 1);
	while (sd_bus_message_enter_container(m, 'e', "sv") > 0) {
		sd_bus_message_read_basic(m, 's', &key);
		if ((strcmp(key, "seq") == 0 || strcmp(key, "missed") == 0) &&
		    sd_bus_message_read(m, "v", "t", &v) >= 0) {
			if (key[0] == 's')
				*last_seq = v;
			else {
				atomic_fetch_add(&sh->missed_notices, 1);
				atomic_fetch_add(&sh->events_missed, v);
			}
		} else {
			sd_bus_message_skip(m, "v");
		}
		sd_bus_message_exit_container(m);
	}
	return 0;
}

/*
 * A subscriber on its own connection: one that never reads nor acknowledges (its window
 * fills, the rest is counted), or one that reads and acknowledges now and then (it is told
 * how many it missed).
 */
static void subscriber(struct client *c)
{
	sd_bus *bus = NULL;
	sd_bus_message *m = NULL;
	uint64_t last_seq = 0, until = now_ms() + 1000 + pick(4000);
	bool lazy = chance(50);

	if (db_bus_open_address(f.address, &bus) < 0)
		return;
	sd_bus_set_method_call_timeout(bus, CALL_TIMEOUT_USEC);
	sd_bus_match_signal(bus, NULL, NULL, DB_OBJECT_PATH, DB_IFACE_BROKER, "Event",
			    on_chaos_event, &last_seq);
	if (sd_bus_message_new_method_call(bus, &m, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
					   "Subscribe") >= 0 &&
	    sd_bus_message_append(m, "a{sv}", 1, "snapshot", "b", (int)chance(50)) >= 0)
		do_call(c, K_SUBSCRIBE, m, NULL);
	else
		sd_bus_message_unref(m);
	while (!lazy && now_ms() < until) {
		while (sd_bus_process(bus, NULL) > 0)
			;
		if (last_seq && chance(30))
			sd_bus_call_method_async(bus, NULL, DB_BUS_NAME, DB_OBJECT_PATH,
						 DB_IFACE_BROKER, "AcknowledgeEvents", NULL, NULL,
						 "t", last_seq);
		sd_bus_wait(bus, 100000);
	}
	if (lazy) {
		/* Its window fills while it sleeps; then it reads, acknowledges once and is told
		 * how many it missed. */
		sleep_ms((unsigned)(until - now_ms()));
		while (sd_bus_process(bus, NULL) > 0)
			;
		if (last_seq)
			sd_bus_call_method(bus, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
					   "AcknowledgeEvents", NULL, NULL, "t", last_seq);
		for (uint64_t t = now_ms() + 300; now_ms() < t;) {
			if (sd_bus_process(bus, NULL) == 0)
				sd_bus_wait(bus, 50000);
		}
	}
	sd_bus_flush_close_unref(bus);
}

static void drop_privileges(void)
{
	if (setgroups(0, NULL) < 0 || setresgid(NOBODY, NOBODY, NOBODY) < 0 ||
	    setresuid(NOBODY, NOBODY, NOBODY) < 0)
		_exit(3);
}

/* A library client: the library's own paths (peer by default, events, reacquire). */
static void on_moved(struct dmabroker_buffer *buf, void *userdata)
{
	(void)userdata;
	if (chance(70))
		dmabroker_buffer_reacquire(buf);
}

static void lib_count(struct dmabroker *ctx, enum kind k, int r, bool registered)
{
	atomic_fetch_add(&sh->calls[k], 1);
	if (r >= 0) {
		atomic_fetch_add(&sh->answered, 1);
		return;
	}
	{
		char name[128];
		enum err_class e;

		/* The library keeps "name: message" for a named error. */
		snprintf(name, sizeof(name), "%s", dmabroker_last_error(ctx));
		name[strcspn(name, ": ")] = '\0';
		e = classify(name);
		atomic_fetch_add(&sh->refused[e], 1);
		if (e == E_NOT_REGISTERED && registered)
			atomic_fetch_add(&sh->evicted, 1);
	}
}

static _Noreturn void lib_client(void)
{
	struct dmabroker_event_handlers handlers = {.moved = on_moved};
	struct dmabroker_alloc_spec spec = {.size = 65536, .name = "chaos-lib"};
	struct dmabroker_buffer *bufs[HELD_MAX] = {0};
	struct dmabroker *ctx = NULL;
	unsigned n = 0;
	int r;

	if (dmabroker_connect(&ctx, NULL, chance(50) ? 0 : DMABROKER_CONNECT_NO_PEER) < 0)
		_exit(0);
	r = dmabroker_register(ctx, "cpu", chance(50), chance(20) ? hostile_string() : "chaos-lib",
			       NULL);
	lib_count(ctx, K_REGISTER, r, false);
	if (r < 0)
		_exit(0);
	dmabroker_set_event_handlers(ctx, &handlers, sizeof(handlers), NULL);
	for (unsigned step = 0, steps = 20 + pick(100); step < steps; step++) {
		struct dmabroker_token t;
		struct dmabroker_buffer *b = NULL;
		unsigned i = n ? pick(n) : 0;

		switch (pick(9)) {
		case 0:
			spec.size = (uint64_t)4096 << pick(10);
			r = dmabroker_allocate(ctx, &spec, sizeof(spec), &b);
			lib_count(ctx, K_ALLOCATE, r, true);
			break;
		case 1:
			if (n + DMABROKER_ALLOCATE_MANY_MAX > HELD_MAX)
				continue;
			r = dmabroker_allocate_many(ctx, &spec, sizeof(spec),
						    1 + pick(DMABROKER_ALLOCATE_MANY_MAX),
						    bufs + n);
			lib_count(ctx, K_ALLOCATE_MANY, r, true);
			while (r >= 0 && n < HELD_MAX && bufs[n])
				n++;
			continue;
		case 2:
			if (!n)
				continue;
			r = dmabroker_share(bufs[i], NULL, 0, &t);
			lib_count(ctx, K_SHARE, r, true);
			if (r >= 0)
				token_put(t.bytes);
			continue;
		case 3:
			if (!token_get(t.bytes))
				continue;
			r = dmabroker_import(ctx, &t, &b);
			lib_count(ctx, K_IMPORT, r, true);
			break;
		case 4:
			if (!n)
				continue;
			r = dmabroker_release(bufs[i]);
			lib_count(ctx, K_RELEASE, r, true);
			bufs[i] = bufs[--n];
			bufs[n] = NULL;
			continue;
		case 5:
			if (!n || !allowed(A_MOVE))
				continue;
			r = dmabroker_buffer_move(bufs[i]);
			lib_count(ctx, K_MOVE, r, true);
			continue;
		case 6:
			if (!n)
				continue;
			r = dmabroker_buffer_revoke(bufs[i], hostile_string());
			lib_count(ctx, K_REVOKE, r, true);
			continue;
		case 7:
			if (!n)
				continue;
			r = dmabroker_buffer_reacquire(bufs[i]);
			lib_count(ctx, K_REACQUIRE, r, true);
			continue;
		default:
			/* Events only sometimes: a holder that never dispatches misses Moved. */
			if (chance(50))
				dmabroker_dispatch(ctx);
			continue;
		}
		if (b && n < HELD_MAX)
			bufs[n++] = b;
		else if (b)
			dmabroker_release(b);
	}
	if (chance(50))
		_exit(0); /* without a word: the daemon sees us leave */
	dmabroker_disconnect(ctx);
	_exit(0);
}

static _Noreturn void raw_client(void)
{
	struct client c = {0};
	unsigned steps = 10 + pick(150);

	if (db_bus_open_address(f.address, &c.bus) < 0)
		_exit(0);
	sd_bus_set_method_call_timeout(c.bus, CALL_TIMEOUT_USEC);
	if (chance(95))
		op_register(&c);
	for (unsigned step = 0; step < steps; step++) {
		unsigned roll = pick(100);

		/* Unsolicited signals (Moved, Revoked) and stray replies: drop them. */
		while (sd_bus_process(c.bus, NULL) > 0)
			;
		if (roll < 2 && allowed(A_ABANDON))
			abandon(&c);
		else if (roll < 5 && allowed(A_FORGED_NOC))
			forge_name_owner_changed(&c);
		else if (roll < 7 && allowed(A_UNREAD))
			send_unread(&c);
		else if (roll < 8 && allowed(A_LISTING))
			unread_listings(&c);
		else if (roll < 9 && allowed(A_SUBSCRIBER))
			subscriber(&c);
		else if (roll < 10)
			op_open_peer(&c);
		else if (roll < 13)
			op_register(&c);
		else if (roll < 30)
			op_allocate(&c);
		else if (roll < 35)
			op_allocate_many(&c);
		else if (roll < 40)
			op_export(&c);
		else if (roll < 52)
			op_share(&c);
		else if (roll < 64)
			op_import(&c);
		else if (roll < 74)
			op_on_buffer(&c, K_RELEASE);
		else if (roll < 80 && allowed(A_MOVE))
			op_on_buffer(&c, K_MOVE);
		else if (roll < 85)
			op_on_buffer(&c, K_REVOKE);
		else if (roll < 88)
			op_on_buffer(&c, K_REACQUIRE);
		else if (roll < 97)
			op_collection(&c);
		else
			op_property(&c);
		if (chance(20))
			sleep_ms(pick(30));
	}
	if (c.silent_peer && chance(60)) {
		/*
		 * Leave the bus while still holding a peer socket that never spoke: the daemon
		 * must drop us without waiting on that socket.
		 */
		atomic_fetch_add(&sh->silent_leaves, 1);
		c.peer = sd_bus_flush_close_unref(c.peer);
		c.bus = sd_bus_flush_close_unref(c.bus);
		sleep_ms(2000 + pick(2000));
		_exit(0);
	}
	if (chance(30))
		sleep_ms(MOVE_DEADLINE_SEC * 1000 + pick(1000)); /* outlive move deadlines */
	if (chance(30))
		_exit(0);
	if (chance(10)) {
		atomic_fetch_add(&sh->self_kills, 1);
		raise(SIGKILL);
	}
	sd_bus_flush_close_unref(c.peer);
	sd_bus_flush_close_unref(c.bus);
	_exit(0);
}

static pid_t spawn_client(unsigned n)
{
	pid_t pid = fork();
	int devnull;

	if (pid != 0)
		return pid;
	/* Never exit(): the fixture's atexit handler would kill the daemon. */
	devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (devnull >= 0)
		dup2(devnull, STDOUT_FILENO); /* stdout is the TAP stream */
	getrandom(&rng_state, sizeof(rng_state), 0);
	rng_state |= 1;
	if (n % 2)
		drop_privileges();
	/* After the uid change, which clears it. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() == 1)
		_exit(0);
	if (chance(25))
		lib_client();
	raw_client();
}

/* --- the parent: probe, samples, bookkeeping --- */

/* A library client on its peer connection: answered even while dbus-daemon is stopped. */
struct peer_probe {
	struct dmabroker *ctx;
	unsigned long calls, failed;
	uint64_t max_us, max_frozen_us;
};

static void peer_probe_tick(struct peer_probe *p, bool frozen)
{
	struct dmabroker_alloc_spec spec = {.size = 4096};
	struct dmabroker_buffer *buf = NULL;
	uint64_t t0 = now_us(), us;
	int r;

	if (!p->ctx)
		return;
	r = dmabroker_allocate(p->ctx, &spec, sizeof(spec), &buf);
	if (r >= 0)
		dmabroker_release(buf);
	us = now_us() - t0;
	p->calls++;
	/* QuotaExceeded is an answer; only no answer is a failure. */
	if (r < 0 && r != -EDQUOT && r != -ENOMEM)
		p->failed++;
	if (us > p->max_us)
		p->max_us = us;
	if (frozen && us > p->max_frozen_us)
		p->max_frozen_us = us;
}

struct probe {
	sd_bus *bus;
	unsigned long calls, failed, evicted;
	uint64_t max_us;
	char worst[160];
};

static void probe_register(struct probe *p)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	const char *name;

	if (sd_bus_call_method(p->bus, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER, "Register",
			       &error, NULL, "a{sv}", 1, "name", "s", "chaos-probe") < 0)
		tap_diag("probe: Register failed: %s", error.name ? error.name : "no answer");
	sd_bus_error_free(&error);
	if (sd_bus_get_unique_name(p->bus, &name) >= 0)
		snprintf(sh->probe_name, sizeof(sh->probe_name), "%s", name);
}

static void probe_note(struct probe *p, const char *what, uint64_t t0, int r,
		       const sd_bus_error *error)
{
	uint64_t us = now_us() - t0;

	p->calls++;
	/* A named error is an answer; no answer (timeout, disconnect) is a failure. */
	if (r < 0 && !(error->name && strncmp(error->name, "org.dmabroker.", 14) == 0)) {
		p->failed++;
		if (p->failed <= 5)
			tap_diag("probe: %s got no answer: %s (%s) after %" PRIu64 " ms", what,
				 error->name ? error->name : "-", strerror(-r), us / 1000);
	}
	if (us > p->max_us) {
		p->max_us = us;
		snprintf(p->worst, sizeof(p->worst), "%s", what);
	}
}

static void probe_tick(struct probe *p)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	sd_bus_message *reply = NULL;
	const char *path = NULL;
	uint32_t n = 0;
	uint64_t t0;
	int r;

	/* Signals a chaos client caused (it may Move or Revoke our buffer): read and drop. */
	while (sd_bus_process(p->bus, NULL) > 0)
		;
	t0 = now_us();
	r = sd_bus_get_property_trivial(p->bus, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
					"NClients", &error, 'u', &n);
	probe_note(p, "Get NClients", t0, r, &error);
	sd_bus_error_free(&error);

	t0 = now_us();
	r = sd_bus_call_method(p->bus, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER, "Allocate",
			       &error, &reply, "a{sv}", 1, "size", "t", (uint64_t)4096);
	probe_note(p, "Allocate", t0, r, &error);
	if (r < 0 && sd_bus_error_has_name(&error, DB_ERROR_NOT_REGISTERED)) {
		/* Only a forged "name left" signal can have dropped a probe that never left. */
		p->evicted++;
		probe_register(p);
	}
	sd_bus_error_free(&error);
	if (r >= 0 && sd_bus_message_read(reply, "o", &path) >= 0) {
		t0 = now_us();
		r = sd_bus_call_method(p->bus, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
				       "Release", &error, NULL, "o", path);
		probe_note(p, "Release", t0, r, &error);
		sd_bus_error_free(&error);
	}
	sd_bus_message_unref(reply);
}

static long daemon_status_kib(const char *key)
{
	char path[64], line[256];
	size_t klen = strlen(key);
	long kib = -1;
	FILE *file;

	snprintf(path, sizeof(path), "/proc/%d/status", f.daemon_pid);
	file = fopen(path, "re");
	if (!file)
		return -1;
	while (fgets(line, sizeof(line), file))
		if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
			kib = strtol(line + klen + 1, NULL, 10);
			break;
		}
	fclose(file);
	return kib;
}

/* Alive: not exited (looked at without reaping it, so fixture_stop still gets the status). */
static bool daemon_running(void)
{
	siginfo_t si = {0};

	if (f.daemon_pid <= 0)
		return false;
	if (waitid(P_PID, (id_t)f.daemon_pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0)
		return false;
	return si.si_pid == 0;
}

struct counts {
	int r;
	uint32_t clients, buffers;
	uint64_t bytes;
};

/* The daemon's counters over a fresh connection (one call at a time, 5 s each at most). */
static struct counts daemon_counts(void)
{
	struct counts k = {.r = -1};
	sd_bus *bus = NULL;

	if (db_bus_open_address(f.address, &bus) < 0)
		return k;
	sd_bus_set_method_call_timeout(bus, CALL_TIMEOUT_USEC);
	k.r = sd_bus_get_property_trivial(bus, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
					  "NClients", NULL, 'u', &k.clients);
	if (k.r >= 0)
		k.r = sd_bus_get_property_trivial(bus, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
						  "NBuffers", NULL, 'u', &k.buffers);
	if (k.r >= 0)
		k.r = sd_bus_get_property_trivial(bus, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
						  "BytesInUse", NULL, 't', &k.bytes);
	sd_bus_flush_close_unref(bus);
	return k;
}

static void capture_log(void)
{
	char path[] = "/tmp/dmabroker-chaos-log-XXXXXX";

	log_fd = mkostemp(path, O_CLOEXEC);
	if (log_fd < 0)
		return;
	unlink(path);
	real_stderr = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
	dup2(log_fd, STDERR_FILENO);
}

/*
 * Copies the captured log to the real stderr, counting lines a client's string started: the
 * daemon prefixes every line it writes, so a line starting with our marker text is forged
 * (a newline in a name or reason went into the log unescaped).
 */
static void release_log(void)
{
	static const char *const markers[] = {"<0>dmabrokerd: forged", "<3>Revoking buffer",
					      "# fake TAP", "name"};
	char line[4096];
	FILE *file;

	if (log_fd < 0)
		return;
	fflush(stderr);
	dup2(real_stderr, STDERR_FILENO);
	lseek(log_fd, 0, SEEK_SET);
	file = fdopen(log_fd, "r");
	log_fd = -1;
	if (!file)
		return;
	while (fgets(line, sizeof(line), file)) {
		fputs(line, stderr);
		log_lines++;
		for (size_t i = 0; i < sizeof(markers) / sizeof(markers[0]); i++)
			if (strncmp(line, markers[i], strlen(markers[i])) == 0)
				injected_lines++;
		/* A control character, C1 or line separator inside a line is a client's. */
		for (const unsigned char *p = (const unsigned char *)line; *p; p++)
			if ((*p < 0x20 && !(*p == '\n' && !p[1])) || *p == 0x7f ||
			    (p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) ||
			    (p[0] == 0xe2 && p[1] == 0x80 && p[2] >= 0xa8 && p[2] <= 0xae)) {
				unclean_lines++;
				break;
			}
	}
	fclose(file);
}

static void parse_skip(void)
{
	const char *env = getenv("DMABROKER_CHAOS_SKIP");
	char *copy, *save = NULL;

	if (!env)
		return;
	copy = strdup(env);
	for (char *t = strtok_r(copy, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
		bool known = false;

		for (int i = 0; i < N_ACTS; i++)
			if (strcmp(t, act_names[i]) == 0) {
				sh->skip[i] = true;
				known = true;
			}
		tap_diag("%s misbehaviour '%s'", known ? "leaving out" : "unknown (ignored):", t);
	}
	free(copy);
}

int main(void)
{
	static const char config[] = "[Daemon]\n"
				     "MoveDeadlineSec=1\n"
				     "CollectionDeadlineSec=1\n"
				     "PeerMessageTimeoutSec=1\n"
				     "PeerStallTimeoutSec=3\n"
				     "[Limits]\n"
				     "MaxBufferSize=16M\n"
				     "MaxBytesPerClient=32M\n"
				     "MaxBuffersPerClient=24\n"
				     "MaxTokensPerClient=16\n"
				     "MaxBytesPerUid=64M\n"
				     "MaxBuffersPerUid=96\n"
				     "MaxTokensPerUid=64\n"
				     "MaxClients=64\n"
				     "MaxClientsPerUid=24\n"
				     "MaxNameLength=64\n"
				     "MaxCollectionsPerClient=4\n"
				     "MaxBuffersPerCollection=16\n"
				     "SubscriberWindowBytes=32K\n";
	const char *env = getenv("DMABROKER_CHAOS_SECONDS");
	unsigned seconds = env ? (unsigned)strtoul(env, NULL, 10) : 60;
	pid_t kids[CONCURRENT] = {0};
	uint64_t kid_start[CONCURRENT] = {0};
	unsigned long spawned = 0, exited = 0, signalled = 0, watchdog = 0, crashed = 0;
	/* libsystemd asserts (SIGABRT) when a peer hangs up mid-authentication: the daemon's
	 * doing, seen from the client; counted apart from the test's own crashes. */
	unsigned long aborted = 0;
	int fds_start, fds_peak, fds_end = -1, status;
	long rss_start, rss_peak, rss_end = -1, anon_start, anon_peak;
	uint64_t start, end, next_probe;
	struct probe probe = {0};
	struct peer_probe pprobe = {0};
	uint64_t freeze_at = 0, thaw_at = 0, thawed = 0;
	bool frozen = false;
	struct counts k = {.r = -1};
	bool died_early = false, settled = false, stopped;

	if (seconds == 0 || seconds > 3600)
		seconds = 60;
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	tap_require(sh != MAP_FAILED, "shared counters mapped");
	parse_skip();
	/* Children of a killed test must not linger: meson waits for our output pipe. */
	signal(SIGPIPE, SIG_IGN);
	capture_log();
	/* A bail-out still shows the log (atexit runs this after the fixture's kill handler). */
	atexit(release_log);
	tap_require(fixture_start(&f, config) == 0, "start a private bus and the daemon");
	tap_require(db_bus_open_address(f.address, &probe.bus) >= 0, "the probe connects");
	sd_bus_set_method_call_timeout(probe.bus, CALL_TIMEOUT_USEC);
	probe_register(&probe);
	probe_tick(&probe);
	probe = (struct probe){.bus = probe.bus};

	fds_start = fds_peak = fixture_daemon_fds(&f);
	rss_start = rss_peak = daemon_status_kib("VmRSS");
	anon_start = anon_peak = daemon_status_kib("RssAnon");
	/* After the start's sample: it is gone again before the end's. */
	if (dmabroker_connect(&pprobe.ctx, f.address, 0) < 0 ||
	    dmabroker_register(pprobe.ctx, "cpu", true, "chaos-peer-probe", NULL) < 0)
		tap_diag("the peer probe could not register");
	tap_diag("chaos for %u s, %d clients at a time (at most %d), probe every %d ms; daemon "
		 "pid %d: %d fds, %ld KiB RSS",
		 seconds, CONCURRENT, MAX_SPAWNED, PROBE_INTERVAL_MS, (int)f.daemon_pid, fds_start,
		 rss_start);

	start = now_ms();
	end = start + seconds * 1000ull;
	next_probe = start;
	/* Half-way, dbus-daemon stops for 3 s: the daemon must go on serving its peers. */
	if (allowed(A_FREEZE_BUS)) {
		freeze_at = start + seconds * 500ull;
		thaw_at = freeze_at + 3000;
	}
	for (;;) {
		uint64_t t = now_ms();
		unsigned running = 0;
		int fds;
		long rss, anon;

		/* Only our clients: the bus and the daemon are the fixture's to reap. */
		for (int i = 0; i < CONCURRENT; i++) {
			if (!kids[i] || waitpid(kids[i], &status, WNOHANG) != kids[i])
				continue;
			kids[i] = 0;
			if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
				signalled++;
			else if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
				exited++;
			else if (WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT)
				aborted++;
			else
				crashed++;
		}
		for (int i = 0; i < CONCURRENT; i++) {
			if (!kids[i])
				continue;
			if (t - kid_start[i] > CHILD_MAX_MS) {
				kill(kids[i], SIGKILL);
				watchdog++;
			}
			running++;
		}
		if (!daemon_running()) {
			died_early = true;
			tap_diag("the daemon died %.1f s into the run", (double)(t - start) / 1000);
			break;
		}
		if (t >= end && running == 0)
			break;
		if (t >= end + CHILD_MAX_MS + 5000)
			break;
		for (int i = 0; i < CONCURRENT && t < end && spawned < MAX_SPAWNED; i++) {
			if (kids[i])
				continue;
			kid_start[i] = t;
			kids[i] = spawn_client((unsigned)spawned++);
			if (kids[i] < 0)
				kids[i] = 0;
		}
		if (freeze_at && !frozen && t >= freeze_at && t < thaw_at) {
			frozen = kill(f.bus_pid, SIGSTOP) == 0;
		} else if (frozen && t >= thaw_at) {
			kill(f.bus_pid, SIGCONT);
			frozen = false;
			freeze_at = 0;
			thawed = t;
		}
		if (t >= next_probe) {
			/*
			 * The bus probe waits for the bus: not while it is stopped, nor in the
			 * 2 s the bus takes to work off what piled up meanwhile (dbus-daemon's
			 * delay, not the daemon's: the peer probe times the daemon then).
			 */
			if (!frozen && (!thawed || t > thawed + 2000))
				probe_tick(&probe);
			peer_probe_tick(&pprobe, frozen);
			next_probe = now_ms() + PROBE_INTERVAL_MS;
		}
		fds = fixture_daemon_fds(&f);
		rss = daemon_status_kib("VmRSS");
		anon = daemon_status_kib("RssAnon");
		if (fds > fds_peak)
			fds_peak = fds;
		if (rss > rss_peak)
			rss_peak = rss;
		if (anon > anon_peak)
			anon_peak = anon;
		sleep_ms(10);
	}
	/* Stragglers (the watchdog's, or all of them when the daemon died). */
	for (int i = 0; i < CONCURRENT; i++)
		if (kids[i]) {
			kill(kids[i], SIGKILL);
			waitpid(kids[i], NULL, 0);
		}
	tap_diag("chaos ran %.1f s: %lu clients (%lu exited, %lu killed themselves or were "
		 "killed, %lu by the watchdog after %d s, %lu aborted in libsystemd, %lu crashed)",
		 (double)(now_ms() - start) / 1000, spawned, exited, signalled, watchdog,
		 CHILD_MAX_MS / 1000, aborted, crashed);
	if (frozen)
		kill(f.bus_pid, SIGCONT);
	probe.bus = sd_bus_flush_close_unref(probe.bus);
	dmabroker_disconnect(pprobe.ctx);

	/* Everyone is gone: the daemon must come back to where it started. */
	for (uint64_t until = now_ms() + SETTLE_MS; !died_early && now_ms() < until;) {
		k = daemon_counts();
		fds_end = fixture_daemon_fds(&f);
		if (k.r >= 0 && k.clients == 0 && k.buffers == 0 && k.bytes == 0 &&
		    fds_end == fds_start) {
			settled = true;
			break;
		}
		if (!daemon_running())
			break;
		sleep_ms(100);
	}
	rss_end = daemon_status_kib("VmRSS");

	tap_ok(daemon_running() && k.r >= 0, "the daemon is alive and answers after the chaos");
	tap_ok(probe.failed == 0 && probe.max_us < STALL_MS * 1000ull,
	       "no probe stall: longest answer %.1f ms (%s), %lu of %lu probe calls unanswered",
	       (double)probe.max_us / 1000, probe.worst[0] ? probe.worst : "-", probe.failed,
	       probe.calls);
	tap_ok(probe.evicted == 0 && atomic_load(&sh->evicted) == 0,
	       "no registered client was evicted (probe %lu times, chaos clients %lu times "
	       "told NotRegistered after registering)",
	       probe.evicted, atomic_load(&sh->evicted));
	tap_ok(pprobe.ctx && pprobe.failed == 0 && pprobe.max_us < STALL_MS * 1000ull,
	       "the peer probe never stalled: longest %.1f ms, %.1f ms while dbus-daemon was "
	       "stopped; %lu of %lu unanswered",
	       (double)pprobe.max_us / 1000, (double)pprobe.max_frozen_us / 1000, pprobe.failed,
	       pprobe.calls);
	/*
	 * What a flood gets written before the daemon stops reading it is up to the kernel's
	 * socket buffers (both directions); what the daemon keeps is bounded by the peer's
	 * window, which the fd and RSS points below see. Here: every flood was held back.
	 */
	tap_ok(atomic_load(&sh->flood_pushback) == atomic_load(&sh->floods),
	       "a peer that never reads is held back: %lu of %lu floods met pushback (at most %lu "
	       "calls written by one, socket buffers included)",
	       atomic_load(&sh->flood_pushback), atomic_load(&sh->floods),
	       atomic_load(&sh->flood_max));
	tap_ok(settled || (k.r >= 0 && fds_end == fds_start),
	       "daemon fds back to the start: %d (start %d, peak %d)", fds_end, fds_start,
	       fds_peak);
	tap_ok(settled, "NClients/NBuffers/BytesInUse back to 0 within %d ms: %u/%u/%" PRIu64 "%s",
	       SETTLE_MS, k.clients, k.buffers, k.bytes, k.r < 0 ? " (no answer)" : "");
	tap_ok(rss_end >= 0 && rss_end - rss_start < RSS_SLACK_KIB,
	       "daemon RSS %ld KiB at the end (start %ld, peak %ld; slack %d KiB)", rss_end,
	       rss_start, rss_peak, RSS_SLACK_KIB);
	tap_ok(atomic_load(&sh->oversize_open) == 0,
	       "every oversized or partial peer message closed its peer (%lu closed, %lu not)",
	       atomic_load(&sh->oversize_closed), atomic_load(&sh->oversize_open));
#if !defined(__SANITIZE_ADDRESS__)
	/*
	 * Without ASan's quarantine the peak is the daemon's own: the budgets bound it (here up
	 * to 64 peers' windows of 1 MiB and 64 subscribers' of 256 KiB) and so, with the shipped
	 * defaults, does 64 MiB.
	 */
	tap_ok(rss_peak - rss_start < 64 * 1024,
	       "the daemon's peak RSS stayed %ld KiB above its start (under 64 MiB)",
	       rss_peak - rss_start);
#endif
	tap_ok(crashed == 0, "no chaos client crashed (%lu did)", crashed);
	/* The contract: every method fails with one of its names, never a bare errno's. */
	tap_ok(atomic_load(&sh->refused[E_OTHER_DMABROKER]) == 0 &&
		       atomic_load(&sh->refused[E_SYSTEM]) == 0,
	       "every refusal carried a contract error name (%lu unknown org.dmabroker names, "
	       "%lu System.Error names)",
	       atomic_load(&sh->refused[E_OTHER_DMABROKER]), atomic_load(&sh->refused[E_SYSTEM]));

	tap_diag("calls made, by kind (all processes):");
	for (int i = 0; i < N_KINDS; i++)
		tap_diag("  %-34s %8lu", kind_names[i], atomic_load(&sh->calls[i]));
	tap_diag("answered without error: %lu; refused, by error name:",
		 atomic_load(&sh->answered));
	for (int i = 0; i < N_ERRS; i++)
		tap_diag("  %-48s %8lu", err_names[i], atomic_load(&sh->refused[i]));
	tap_diag("misbehaviours: %lu silent peers (%lu left the bus holding one), %lu floods, "
		 "%lu moves left without Reacquire, %lu self-kills, %lu hostile strings",
		 atomic_load(&sh->silent_peers), atomic_load(&sh->silent_leaves),
		 atomic_load(&sh->floods), atomic_load(&sh->lazy_moves),
		 atomic_load(&sh->self_kills), atomic_load(&sh->hostile_strings));
	tap_diag("events: %lu seen by subscribers; %lu events-missed notices told of %lu missed "
		 "events",
		 atomic_load(&sh->events_seen), atomic_load(&sh->missed_notices),
		 atomic_load(&sh->events_missed));
	tap_diag("peer messages oversized or partial: %lu, every one closed: %s",
		 atomic_load(&sh->calls[K_OVERSIZE]),
		 atomic_load(&sh->oversize_open) ? "no" : "yes");
	tap_diag("peer probe: %lu calls, longest %.1f ms (%.1f ms with dbus-daemon stopped)",
		 pprobe.calls, (double)pprobe.max_us / 1000, (double)pprobe.max_frozen_us / 1000);
	tap_diag("daemon peak RSS above its start: %ld KiB (anonymous: %ld KiB)",
		 rss_peak - rss_start, anon_peak - anon_start);
	tap_diag("probe: %lu calls, longest %.1f ms (%s), %lu unanswered, evicted %lu times",
		 probe.calls, (double)probe.max_us / 1000, probe.worst[0] ? probe.worst : "-",
		 probe.failed, probe.evicted);
	tap_diag("daemon fds start/peak/end: %d/%d/%d; RSS KiB start/peak/end: %ld/%ld/%ld; "
		 "anonymous RSS KiB start/peak: %ld/%ld",
		 fds_start, fds_peak, fds_end, rss_start, rss_peak, rss_end, anon_start, anon_peak);

	/* A hung daemon never handles SIGTERM: stop it with a deadline, not fixture_stop's wait. */
	stopped = !daemon_running();
	if (!stopped) {
		kill(f.daemon_pid, SIGTERM);
		for (int waited = 0; waited < 30000 && !stopped; waited += 50) {
			sleep_ms(50);
			stopped = !daemon_running();
		}
		if (!stopped)
			kill(f.daemon_pid, SIGKILL);
	}
	tap_ok(stopped, "the daemon stops on SIGTERM within 30 s");
	status = fixture_stop(&f);
	tap_ok(status == 0, "the daemon exits cleanly (status %d: %s)", status,
	       status == 0		   ? "no crash, no sanitizer report"
	       : status == 128 + SIGABRT   ? "aborted"
	       : status == 128 + SIGSEGV   ? "segfault"
	       : status == 128 + SIGKILL   ? "killed: it did not stop"
	       : status == 1 && died_early ? "died during the run (sanitizer report?)"
					   : "sanitizer, valgrind or error exit");
	release_log();
	tap_ok(injected_lines == 0,
	       "no log line was started by a client's string: %lu of %lu lines were (newlines in "
	       "names and Revoke reasons reach the log unescaped)",
	       injected_lines, log_lines);
	tap_ok(atomic_load(&sh->unclean_errors) == 0,
	       "every refusal is clean text: %lu are not (%lu lone collections constrained)",
	       atomic_load(&sh->unclean_errors), atomic_load(&sh->lone_collections));
	tap_ok(unclean_lines == 0,
	       "no log line holds a control character, C1 control or line separator: %lu do",
	       unclean_lines);
	return tap_done();
}
