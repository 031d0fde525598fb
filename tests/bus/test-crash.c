// SPDX-License-Identifier: MIT
/*
 * The registry survives the daemon's death, without systemd: a small fake fd store (a
 * NOTIFY_SOCKET that keeps what FDSTORE=1 hands it and drops what FDSTOREREMOVE=1 names)
 * holds the fds while the daemon is killed with SIGKILL or SIGABRT right after it answered,
 * then starts it again with them (LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID), as systemd would.
 * What was answered before the kill must be back.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bus-util.h"
#include "dmabroker.h"
#include "fixture.h"
#include "macros.h"
#include "protocol.h"
#include "tap.h"

#define STORE_MAX 12 /* FileDescriptorStoreMax= of the fake store, and FdStoreMax= */
#define MAX_ENTRIES 256

/* --- the fake fd store --- */

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int sock;
	char address[108];
	char *names[MAX_ENTRIES];
	int fds[MAX_ENTRIES];
	unsigned n;
	unsigned refused; /* over STORE_MAX, as PID 1 refuses them */
	unsigned syncs;
	/* What the next daemon gets, prepared before the fork (no lock in the child). */
	int pass_fds[MAX_ENTRIES];
	char pass_names[MAX_ENTRIES * 32];
	unsigned n_pass;
} store = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

/* systemd keeps a file once only (same_fd()); so does this store. */
static bool same_file(int a, int b)
{
	return syscall(SYS_kcmp, getpid(), getpid(), 0 /* KCMP_FILE */, a, b) == 0;
}

static void store_remove_locked(const char *name)
{
	for (unsigned i = 0; i < store.n;) {
		if (strcmp(store.names[i], name) == 0) {
			free(store.names[i]);
			close(store.fds[i]);
			store.n--;
			store.names[i] = store.names[store.n];
			store.fds[i] = store.fds[store.n];
		} else {
			i++;
		}
	}
}

static void store_handle(char *msg, const int *fds, unsigned n_fds)
{
	bool add = false, remove = false;
	const char *name = "stored";
	char *save = NULL;

	for (char *line = strtok_r(msg, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (strcmp(line, "FDSTORE=1") == 0)
			add = true;
		else if (strcmp(line, "FDSTOREREMOVE=1") == 0)
			remove = true;
		else if (strncmp(line, "FDNAME=", 7) == 0)
			name = line + 7;
		else if (strcmp(line, "SYNC=1") == 0)
			store.syncs++;
	}
	if (remove)
		store_remove_locked(name);
	for (unsigned k = 0; k < n_fds; k++) {
		bool dup = false;

		for (unsigned i = 0; add && i < store.n && !dup; i++)
			dup = same_file(store.fds[i], fds[k]);
		if (!add || dup || store.n >= MAX_ENTRIES) {
			close(fds[k]);
		} else if (store.n >= STORE_MAX) {
			store.refused++;
			close(fds[k]);
		} else {
			store.names[store.n] = strdup(name);
			store.fds[store.n++] = fds[k];
		}
	}
	pthread_cond_broadcast(&store.cond);
}

static void *store_thread(void *arg)
{
	(void)arg;
	for (;;) {
		char buf[4096], cbuf[CMSG_SPACE(sizeof(int) * 16)];
		struct iovec iov = {buf, sizeof(buf) - 1};
		struct msghdr mh = {.msg_iov = &iov,
				    .msg_iovlen = 1,
				    .msg_control = cbuf,
				    .msg_controllen = sizeof(cbuf)};
		int fds[16];
		unsigned n_fds = 0;
		ssize_t len = recvmsg(store.sock, &mh, MSG_CMSG_CLOEXEC);

		if (len < 0 && errno == EINTR)
			continue;
		if (len < 0)
			return NULL;
		buf[len] = '\0';
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
			if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
				unsigned n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);

				memcpy(fds + n_fds, CMSG_DATA(c), n * sizeof(int));
				n_fds += n;
			}
		pthread_mutex_lock(&store.lock);
		store_handle(buf, fds, n_fds);
		pthread_mutex_unlock(&store.lock);
	}
}

static void store_start(void)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	pthread_t t;
	int size = 4 << 20;

	/* Abstract: nothing to clean up, and sd_notify() takes "@name". */
	snprintf(store.address, sizeof(store.address), "@dmabroker-crash-%d", (int)getpid());
	sa.sun_path[0] = '\0';
	memcpy(sa.sun_path + 1, store.address + 1, strlen(store.address + 1));
	store.sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	tap_require(store.sock >= 0 && bind(store.sock, (struct sockaddr *)&sa,
					    offsetof(struct sockaddr_un, sun_path) + 1 +
						    strlen(store.address + 1)) == 0,
		    "the fake fd store listens on %s", store.address);
	setsockopt(store.sock, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
	tap_require(pthread_create(&t, NULL, store_thread, NULL) == 0, "store thread");
}

/* Waits until the store has handled everything sent before now (datagrams keep order). */
static void store_sync(void)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	unsigned want;

	memcpy(sa.sun_path + 1, store.address + 1, strlen(store.address + 1));
	pthread_mutex_lock(&store.lock);
	want = store.syncs + 1;
	pthread_mutex_unlock(&store.lock);
	sendto(s, "SYNC=1", 6, 0, (struct sockaddr *)&sa,
	       offsetof(struct sockaddr_un, sun_path) + 1 + strlen(store.address + 1));
	close(s);
	pthread_mutex_lock(&store.lock);
	while (store.syncs < want)
		pthread_cond_wait(&store.cond, &store.lock);
	pthread_mutex_unlock(&store.lock);
}

static bool store_has(const char *name)
{
	bool found = false;

	store_sync();
	pthread_mutex_lock(&store.lock);
	for (unsigned i = 0; i < store.n; i++)
		found |= strcmp(store.names[i], name) == 0;
	pthread_mutex_unlock(&store.lock);
	return found;
}

static unsigned store_count(void)
{
	unsigned n;

	store_sync();
	pthread_mutex_lock(&store.lock);
	n = store.n;
	pthread_mutex_unlock(&store.lock);
	return n;
}

/* In the daemon's process, before exec: the store's fds from 3 on, and the variables. */
static void child_setup(void)
{
	char num[32];

	for (unsigned i = 0; i < store.n_pass; i++)
		store.pass_fds[i] = fcntl(store.pass_fds[i], F_DUPFD_CLOEXEC, 3 + MAX_ENTRIES);
	for (unsigned i = 0; i < store.n_pass; i++)
		dup2(store.pass_fds[i], 3 + (int)i); /* dup2 clears close-on-exec */
	setenv("NOTIFY_SOCKET", store.address, 1);
	if (store.n_pass > 0) {
		snprintf(num, sizeof(num), "%u", store.n_pass);
		setenv("LISTEN_FDS", num, 1);
		setenv("LISTEN_FDNAMES", store.pass_names, 1);
		snprintf(num, sizeof(num), "%d", (int)getpid());
		setenv("LISTEN_PID", num, 1);
	}
	/* An abort should not leave a core file behind. */
	setrlimit(RLIMIT_CORE, &(struct rlimit){0, 0});
}

static void prepare_restart(void)
{
	store_sync();
	pthread_mutex_lock(&store.lock);
	store.n_pass = store.n;
	store.pass_names[0] = '\0';
	for (unsigned i = 0; i < store.n; i++) {
		store.pass_fds[i] = store.fds[i];
		if (i)
			strcat(store.pass_names, ":");
		strcat(store.pass_names, store.names[i]);
	}
	pthread_mutex_unlock(&store.lock);
}

static void kill_and_restart(struct fixture *f, int sig)
{
	int status = fixture_kill_daemon(f, sig);

	tap_ok(WIFSIGNALED(status) && WTERMSIG(status) == sig, "the daemon died of %s",
	       strsignal(sig));
	prepare_restart();
	tap_diag("restarting with %u fd(s): %s", store.n_pass, store.pass_names);
	tap_require(fixture_restart_daemon(f) == 0, "a new daemon starts with the store's fds");
}

/* --- clients --- */

static struct dmabroker *client(bool dynamic, uint32_t flags)
{
	struct dmabroker *ctx = NULL;

	tap_require(dmabroker_connect(&ctx, NULL, flags) == 0, "connect");
	tap_require(dmabroker_register(ctx, "cpu", dynamic, "crash", NULL) == 0, "register");
	return ctx;
}

static uint64_t buffer_id(struct dmabroker_buffer *buf)
{
	const char *p = strrchr(dmabroker_buffer_get_path(buf), '/');

	return p ? strtoull(p + 1, NULL, 10) : 0;
}

static bool all_bytes(const uint8_t *p, size_t n, uint8_t v)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != v)
			return false;
	return true;
}

/* --- streams, spoken raw (a stream's membership is journaled; its links are not the daemon's) --- */

static sd_bus *raw_client(const char *name)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	sd_bus *bus = inspect_bus();

	tap_require(bus && broker_call(bus, "Register", &e, NULL, "a{sv}", 1, "name", "s", name) >=
				    0,
		    "register %s (%s)", name, e.message ? e.message : "ok");
	return bus;
}

/* JoinStream by name with no options: 0, or the error in e. */
static int join_stream(sd_bus *c, const char *name, sd_bus_error *e)
{
	return broker_call(c, "JoinStream", e, NULL, "sa{sv}", name, 0);
}

/* The streams root lists, and whether one is called name with n consumers. */
static bool stream_listed(sd_bus *bus, const char *name, unsigned n_consumers)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	bool found = false;

	if (broker_call(bus, "ListStreams", &e, &reply, NULL) < 0) {
		sd_bus_error_free(&e);
		return false;
	}
	sd_bus_message_enter_container(reply, 'a', "a{sv}");
	while (sd_bus_message_enter_container(reply, 'a', "{sv}") > 0) {
		bool named = false;
		unsigned n = 0;
		const char *key, *value;

		while (sd_bus_message_enter_container(reply, 'e', "sv") > 0) {
			sd_bus_message_read(reply, "s", &key);
			if (strcmp(key, "name") == 0) {
				sd_bus_message_read(reply, "v", "s", &value);
				named = strcmp(value, name) == 0;
			} else if (strcmp(key, "consumers") == 0) {
				sd_bus_message_enter_container(reply, 'v', "aa{sv}");
				sd_bus_message_enter_container(reply, 'a', "a{sv}");
				while (sd_bus_message_skip(reply, "a{sv}") > 0)
					n++;
				sd_bus_message_exit_container(reply);
				sd_bus_message_exit_container(reply);
			} else {
				sd_bus_message_skip(reply, "v");
			}
			sd_bus_message_exit_container(reply);
		}
		sd_bus_message_exit_container(reply);
		found |= named && n == n_consumers;
	}
	return found;
}

static char *owner_of(sd_bus *bus, const char *path)
{
	sd_bus_message *m = NULL;
	const char *owner = NULL;
	char *ret = NULL;

	if (sd_bus_get_property(bus, DB_BUS_NAME, path, DB_IFACE_BUFFER, "Owner", NULL, &m, "o") >=
		    0 &&
	    sd_bus_message_read(m, "o", &owner) > 0)
		ret = strdup(owner);
	sd_bus_message_unref(m);
	return ret;
}

int main(void)
{
	static const char *const args[] = {"--fd-store", NULL};
	struct dmabroker_alloc_spec spec = {.size = 1 << 20, .name = "crash"};
	struct dmabroker_alloc_spec small = {.size = 4096, .name = "small"};
	struct dmabroker_share_opts reusable = {.reusable = true};
	struct dmabroker_share_opts brief = {.reusable = true, .expires_in_ms = 200};
	struct dmabroker_buffer *x, *y, *bx, *by, *cx, *z, *w, *more[16];
	struct dmabroker_token t1, t2, t3;
	struct dmabroker *a, *b, *c, *d;
	struct fixture f;
	char ypath[128], old_name[64], new_name[64], *owner;
	uint8_t *pa, *pc;
	sd_bus *bus;
	uint64_t max_id;
	int r, n;

	signal(SIGPIPE, SIG_IGN);
	store_start();
	fixture_daemon_args = args;
	fixture_daemon_setup = child_setup;
	tap_require(fixture_start(&f, "[Daemon]\nFdStoreMax=12\nMoveDeadlineSec=600\n") == 0,
		    "start bus and daemon with --fd-store");
	bus = inspect_bus();
	tap_require(bus != NULL, "inspect the daemon");

	/* --- what is answered before a SIGKILL comes back --- */
	a = client(true, 0); /* over a peer connection, which the kill closes */
	b = client(true, DMABROKER_CONNECT_NO_PEER);
	tap_require(dmabroker_allocate(a, &spec, sizeof(spec), &x) == 0, "a allocates x");
	tap_require(dmabroker_buffer_map(x, (void **)&pa) == 0, "a maps x");
	memset(pa, 0x11, spec.size);
	tap_require(dmabroker_share(x, &reusable, sizeof(reusable), &t1) == 0,
		    "a shares x (reusable)");
	tap_require(dmabroker_share(x, &brief, sizeof(brief), &t2) == 0,
		    "a shares x (expires in 200 ms)");
	tap_require(dmabroker_import(b, &t1, &bx) == 0, "b imports x");
	tap_require(dmabroker_allocate(a, &small, sizeof(small), &y) == 0, "a allocates y");
	tap_require(dmabroker_share(y, NULL, 0, &t3) == 0, "a shares y");
	tap_require(dmabroker_import(b, &t3, &by) == 0, "b imports y");
	snprintf(ypath, sizeof(ypath), "%s", dmabroker_buffer_get_path(y));
	tap_require(dmabroker_buffer_move(y) == 0, "a moves y: both holders must reacquire");
	kill_and_restart(&f, SIGKILL); /* right after the Move reply */

	tap_is(broker_u32(bus, "NBuffers"), 2, "both buffers are back");
	tap_is(broker_u32(bus, "NClients"), 2, "both clients are back");
	tap_is(buffer_attachments(bus, dmabroker_buffer_get_path(x)), 2, "x has both holders");
	tap_is(buffer_attachments(bus, ypath), 2, "y has both holders");
	owner = owner_of(bus, dmabroker_buffer_get_path(x));
	tap_ok(owner && strcmp(owner, dmabroker_client_path(a)) == 0, "x's owner is a (%s)",
	       owner ? owner : "none");
	free(owner);
	snprintf(old_name, sizeof(old_name), "buf-%" PRIu64, buffer_id(y));
	snprintf(new_name, sizeof(new_name), "buf-%" PRIu64 ".1", buffer_id(y));
	tap_ok(store_has(old_name) && store_has(new_name),
	       "y's move is pending: the store keeps its old and its new backing");
	tap_is(dmabroker_buffer_reacquire(y), 0, "a reacquires y after the restart");
	tap_ok(store_has(old_name), "the old backing waits for b");
	tap_is(dmabroker_buffer_reacquire(by), 0, "b reacquires y");
	tap_ok(!store_has(old_name) && store_has(new_name),
	       "the move settles: the old backing leaves the store");

	c = client(false, DMABROKER_CONNECT_NO_PEER);
	usleep(250 * 1000);
	tap_is(dmabroker_import(c, &t1, &cx), 0, "a token issued before the kill imports after it");
	tap_is(dmabroker_import(c, &t2, &z), -ENOENT, "an expired one does not");
	tap_require(cx && dmabroker_buffer_map(cx, (void **)&pc) == 0, "c maps x");
	tap_ok(all_bytes(pc, spec.size, 0x11), "c sees what a wrote before the kill");
	memset(pa, 0x22, spec.size);
	tap_ok(all_bytes(pc, spec.size, 0x22),
	       "a's mapping from before the kill still is x's memory (c sees a's new bytes)");
	max_id = buffer_id(y);
	tap_is(dmabroker_allocate(a, &small, sizeof(small), &z), 0,
	       "a allocates again, over the bus now");
	tap_ok(buffer_id(z) > max_id, "with a new id (%" PRIu64 " > %" PRIu64 ")", buffer_id(z),
	       max_id);

	/* --- SIGABRT (what the watchdog sends) right after a Release --- */
	tap_is(dmabroker_release(bx), 0, "b releases x");
	kill_and_restart(&f, SIGABRT);
	tap_is(buffer_attachments(bus, dmabroker_buffer_get_path(x)), 2,
	       "x is held by a and c, b's release kept");
	tap_is(broker_u32(bus, "NClients"), 3, "the three clients are back");

	/* --- a collection's buffers are ordinary buffers: they come back; a negotiation under
	 * way does not (its participants start again) --- */
	{
		const struct dmabroker_constraints ask = {.min_size = 4096,
							  .min_buffers_for_camping = 1};
		struct dmabroker_collection *ca = NULL, *cc = NULL, *pending = NULL;
		struct dmabroker_token tok;
		char first[128];

		tap_require(
			dmabroker_collection_create(a, "crash", 2, &ca) == 0 &&
				dmabroker_collection_token(ca, &tok) == 0 &&
				dmabroker_collection_join(c, &tok, &cc) == 0 &&
				dmabroker_collection_set_constraints(ca, &ask, sizeof(ask)) == 0 &&
				dmabroker_collection_set_constraints(cc, &ask, sizeof(ask)) == 0 &&
				dmabroker_collection_wait(ca) == 0 &&
				dmabroker_collection_wait(cc) == 0,
			"a and c negotiate a collection of 2 buffers");
		tap_require(dmabroker_collection_create(b, "pending", 2, &pending) == 0,
			    "b starts another");
		snprintf(first, sizeof(first), "%s",
			 dmabroker_buffer_get_path(dmabroker_collection_get_buffer(ca, 0)));
		kill_and_restart(&f, SIGKILL);
		tap_is(buffer_attachments(bus, first), 2,
		       "the collection's buffers come back, held by both participants");
		tap_is(dmabroker_collection_token(pending, &tok), -ENOENT,
		       "the negotiation under way is gone: it starts again");
		tap_is(dmabroker_collection_leave(ca), 0,
		       "leaving after the restart releases the buffers one by one");
		tap_is(buffer_attachments(bus, first), 1, "so a no longer holds them");
		dmabroker_collection_leave(cc);
		dmabroker_collection_leave(pending);
		tap_is(buffer_attachments(bus, first), -1, "and with c gone too, they are freed");
	}

	/* --- a stream's membership comes back; its collection does not, so it takes no new
	 * consumer, while the members' links (never the daemon's) go on --- */
	{
		_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
		sd_bus *sp = raw_client("stream-producer"), *sc = raw_client("stream-consumer"),
		       *late = raw_client("stream-late");
		sd_bus_error e = SD_BUS_ERROR_NULL;
		const char *path = NULL;
		char col[128], stream[128], out[2048] = "";
		const char *argv[] = {"tools/dmabrokerctl", "streams", NULL};

		tap_require(broker_call(sp, "CreateCollection", &e, &reply, "a{sv}", 0) >= 0 &&
				    sd_bus_message_read(reply, "o", &path) > 0,
			    "the producer creates a collection");
		snprintf(col, sizeof(col), "%s", path);
		reply = sd_bus_message_unref(reply);
		tap_require(broker_call(sp, "SetCollectionConstraints", &e, NULL, "oa{sv}", col, 1,
					"min-size", "t", (uint64_t)4096) >= 0 &&
				    broker_call(sp, "CommitCollection", &e, NULL, "o", col) >= 0 &&
				    broker_call(sp, "WaitCollection", &e, NULL, "o", col) >= 0,
			    "and has it allocated (%s)", e.message ? e.message : "ok");
		tap_require(broker_call(sp, "CreateStream", &e, &reply, "oa{sv}", col, 1, "name",
					"s", "crash-cam") >= 0 &&
				    sd_bus_message_read(reply, "o", &path) > 0,
			    "the producer creates stream crash-cam (%s)",
			    e.message ? e.message : "ok");
		snprintf(stream, sizeof(stream), "%s", path);
		tap_require(join_stream(sc, "crash-cam", &e) >= 0, "a consumer joins it (%s)",
			    e.message ? e.message : "ok");
		kill_and_restart(&f, SIGKILL);
		tap_ok(stream_listed(bus, "crash-cam", 1),
		       "ListStreams lists crash-cam again, with its consumer");
		tap_ok(run_client(argv, false, out, sizeof(out)) == 0 &&
			       strstr(out, "crash-cam") != NULL,
		       "and so does dmabrokerctl streams");
		tap_ok(join_stream(late, "crash-cam", &e) < 0 &&
			       sd_bus_error_has_name(&e, DB_ERROR_NOT_FOUND) &&
			       strstr(e.message, "is gone"),
		       "its collection did not come back: no new consumer (%s)",
		       e.message ? e.message : "accepted");
		sd_bus_error_free(&e);
		tap_ok(broker_call(sp, "EndStream", &e, NULL, "os", stream, "") >= 0,
		       "the producer ends the restored stream");
		tap_ok(!stream_listed(bus, "crash-cam", 1), "it is gone");
		sd_bus_flush_close_unref(sp);
		sd_bus_flush_close_unref(sc);
		sd_bus_flush_close_unref(late);
		tap_ok(fixture_wait_clients(&f, 3, 5000), "the stream's clients are gone again");
	}

	/* --- a client that leaves while the daemon is down loses its buffers --- */
	d = client(true, DMABROKER_CONNECT_NO_PEER);
	tap_require(dmabroker_allocate(d, &small, sizeof(small), &w) == 0, "d allocates w");
	snprintf(old_name, sizeof(old_name), "buf-%" PRIu64, buffer_id(w));
	tap_ok(store_has(old_name), "w is in the store");
	fixture_kill_daemon(&f, SIGKILL);
	dmabroker_disconnect(d);
	prepare_restart();
	tap_require(fixture_restart_daemon(&f) == 0, "restart after d left");
	tap_ok(!store_has(old_name), "d left during the restart: w is dropped from the store");
	tap_is(broker_u32(bus, "NClients"), 3, "and d is not restored");
	tap_ok(store.refused == 0, "the store never refused an fd so far");

	/* --- a full store refuses up front --- */
	n = 0;
	while (n < 16 && (r = dmabroker_allocate(b, &small, sizeof(small), &more[n])) == 0)
		n++;
	tap_is(r, -EDQUOT, "Allocate is refused once the store would be full");
	tap_ok(strstr(dmabroker_last_error(b), "FdStoreMax") != NULL, "naming FdStoreMax (%s)",
	       dmabroker_last_error(b));
	tap_ok(store_count() <= STORE_MAX - 1, "one entry is left for compaction (%u of %d)",
	       store_count(), STORE_MAX);
	tap_is(dmabroker_release(more[--n]), 0, "one released");
	tap_is(dmabroker_allocate_many(b, &small, sizeof(small), 2, more), -EDQUOT,
	       "AllocateMany of 2 is refused where 1 would fit");
	tap_is(dmabroker_allocate(b, &small, sizeof(small), &more[n++]), 0, "Allocate of 1 is not");
	tap_is(dmabroker_buffer_move(z), -EDQUOT, "a Move (a second backing) is refused too");
	tap_is(store.refused, 0, "the store itself never refused an fd");
	kill_and_restart(&f, SIGKILL);
	tap_is(broker_u32(bus, "NBuffers"), (uint32_t)(n + 3),
	       "a full store's buffers all come back");

	dmabroker_disconnect(a);
	dmabroker_disconnect(b);
	dmabroker_disconnect(c);
	sd_bus_flush_close_unref(bus);
	tap_is(fixture_stop(&f), 0, "the daemon stops cleanly");
	return tap_done();
}
