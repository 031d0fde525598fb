// SPDX-License-Identifier: MIT
/* The registry's rules, without a bus: paths, pinning, privacy, tokens, limits, lifetime. */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "fd-util.h"
#include "registry.h"
#include "tap.h"

static int some_fd(void)
{
	return open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static struct db_client *client(struct db_registry *reg, const char *name, uid_t uid, bool dynamic)
{
	struct db_client *c = NULL;
	int r = db_registry_add_client(reg, name, uid, 100, "cpu", dynamic, "", NULL, &c);

	tap_require(r == 0, "register %s", name);
	return c;
}

static struct db_buffer *buffer(struct db_registry *reg, struct db_client *owner, size_t size)
{
	struct db_buffer *buf = NULL;
	int fd = some_fd();
	int r = db_registry_add_buffer(reg, owner, fd, size, NULL, "memfd", 0, "t", NULL, &buf);

	if (r < 0)
		close(fd);
	return r < 0 ? NULL : buf;
}

static void test_path_rule(void)
{
	struct db_limits l;
	struct db_registry *reg;
	struct db_client *dyn_a, *dyn_b, *stat_a, *stat_b;
	struct db_buffer *buf;
	struct db_attachment *a;

	db_limits_init_default(&l);
	reg = db_registry_new(&l);
	dyn_a = client(reg, ":1.1", 1000, true);
	dyn_b = client(reg, ":1.2", 1000, true);
	stat_a = client(reg, ":1.3", 1000, false);
	stat_b = client(reg, ":1.4", 1000, false);

	tap_is(db_attach_path_for(1, 1), DB_PATH_DIRECT,
	       "rule: dynamic importer, dynamic exporter: direct");
	tap_is(db_attach_path_for(0, 0), DB_PATH_DIRECT,
	       "rule: static importer, static exporter: direct");
	tap_is(db_attach_path_for(0, 1), DB_PATH_CACHED,
	       "rule: static importer, dynamic exporter: cached");
	tap_is(db_attach_path_for(1, 0), DB_PATH_CACHED,
	       "rule: dynamic importer, static exporter: cached");

	/* The daemon's backends export dynamically. */
	buf = buffer(reg, dyn_a, 4096);
	tap_ok(buf && buf->exporter_dynamic, "daemon-allocated buffer has a dynamic exporter");
	tap_ok(!db_buffer_is_pinned(buf), "dynamic owner of a daemon buffer: not pinned");
	db_registry_attach(reg, dyn_b, buf, &a);
	tap_is(a->path, DB_PATH_DIRECT, "second dynamic client: direct");
	tap_ok(!db_buffer_is_pinned(buf), "two dynamic clients: not pinned");
	db_registry_attach(reg, stat_a, buf, &a);
	tap_is(a->path, DB_PATH_CACHED, "static client on a daemon buffer: cached");
	tap_ok(db_buffer_is_pinned(buf), "a cached attachment pins the buffer");
	{
		int fd = some_fd();

		tap_is(db_registry_reserve_move(reg, buf), -EBUSY, "a pinned buffer cannot move");
		close(fd);
	}
	db_registry_detach(reg, stat_a, buf);
	tap_ok(!db_buffer_is_pinned(buf), "the pin goes with the cached attachment");

	/* A buffer a static client exported: static importers agree, dynamic ones do not. */
	{
		struct db_buffer *exp = NULL;
		int r = db_registry_add_buffer(reg, stat_a, some_fd(), 8192, NULL, "export",
					       DB_BUFFER_DMABUF, "", stat_a, &exp);

		tap_ok(r == 0 && !exp->exporter_dynamic, "export takes the exporter's capability");
		tap_is(db_buffer_find_attachment(exp, stat_a)->path, DB_PATH_DIRECT,
		       "the static exporter's own attachment is direct");
		db_registry_attach(reg, stat_b, exp, &a);
		tap_is(a->path, DB_PATH_DIRECT, "static importer of a static export: direct");
		db_registry_attach(reg, dyn_a, exp, &a);
		tap_is(a->path, DB_PATH_CACHED, "dynamic importer of a static export: cached");
		tap_ok(db_buffer_is_pinned(exp), "and the export is pinned");
	}
	db_registry_free(reg);
}

static void test_tokens(void)
{
	struct db_limits l;
	struct db_registry *reg;
	struct db_client *a, *b, *other_uid;
	struct db_buffer *buf;
	struct db_token *t;
	struct db_token_bytes bytes, guess = {{0}};
	struct db_attachment *att;

	db_limits_init_default(&l);
	reg = db_registry_new(&l);
	a = client(reg, ":1.1", 1000, true);
	b = client(reg, ":1.2", 1000, true);
	other_uid = client(reg, ":1.3", 2000, true);
	buf = buffer(reg, a, 4096);

	tap_is(db_registry_share(reg, b, buf, true, 0, false, 0, 0, &t), -EACCES,
	       "a client that does not hold a buffer cannot share it");
	tap_is(db_registry_redeem(reg, b, &guess, 0, &att), -ENOENT, "a guessed token is refused");
	tap_ok(!db_buffer_find_attachment(buf, b), "nothing attached without a token");

	db_registry_share(reg, a, buf, true, 0, false, 0, 0, &t);
	bytes = t->bytes;
	tap_is(db_registry_redeem(reg, b, &bytes, 0, &att), 0, "the token imports");
	tap_ok(att->buffer == buf, "into the shared buffer");
	tap_is(db_registry_redeem(reg, other_uid, &bytes, 0, &att), -ENOENT,
	       "a single-use token works once");

	db_registry_share(reg, a, buf, false, 0, true, 1000, 0, &t);
	bytes = t->bytes;
	tap_is(db_registry_redeem(reg, other_uid, &bytes, 0, &att), -EACCES,
	       "a uid-bound token refuses another uid");
	tap_is(db_registry_redeem(reg, b, &bytes, 0, &att), 0, "and admits its uid");
	tap_is(db_registry_redeem(reg, b, &bytes, 0, &att), 0, "a reusable token works again");

	db_registry_share(reg, a, buf, true, 1000, false, 0, 0, &t);
	bytes = t->bytes;
	tap_is(db_registry_redeem(reg, other_uid, &bytes, 1000, &att), -ENOENT,
	       "an expired token is refused");

	db_registry_share(reg, a, buf, true, 0, false, 0, 0, &t);
	bytes = t->bytes;
	tap_is(a->n_tokens, 2, "the issuer counts its live tokens");
	db_registry_remove_client(reg, a);
	tap_is(db_registry_redeem(reg, other_uid, &bytes, 0, &att), -ENOENT,
	       "tokens go with their issuer");
	tap_ok(db_registry_find_buffer(reg, buf->id) == buf,
	       "the buffer lives on while another client holds it");
	db_registry_detach(reg, b, buf);
	tap_is(db_registry_n_buffers(reg), 0, "and is freed when its last holder releases");
	tap_is(db_registry_bytes_in_use(reg), 0, "no bytes accounted after");
	db_registry_free(reg);
}

static void test_limits(void)
{
	struct db_limits l;
	struct db_registry *reg;
	struct db_client *a, *b, *c;
	struct db_buffer *buf = NULL;
	struct db_token *t;
	int r;

	db_limits_init_default(&l);
	l.max_buffer_size = 1 << 20;
	l.max_buffers_per_client = 2;
	l.max_bytes_per_client = 3 << 20;
	l.max_tokens_per_client = 1;
	l.max_buffers_per_uid = 3;
	l.max_clients_per_uid = 3;
	l.max_clients = 4;
	l.max_name_length = 8;
	reg = db_registry_new(&l);
	a = client(reg, ":1.1", 1000, true);
	b = client(reg, ":1.2", 1000, true);

	tap_is(db_registry_check_allocation(reg, a, (1 << 20) + 1, 1), -EDQUOT,
	       "MaxBufferSize refuses a bigger buffer");
	tap_ok(strcmp(db_registry_exceeded(reg, NULL), "MaxBufferSize") == 0,
	       "and names the limit");
	tap_ok(buffer(reg, a, 4096) && (buf = buffer(reg, a, 4096)), "two buffers fit");
	tap_ok(!buffer(reg, a, 4096), "a third exceeds MaxBuffersPerClient");
	tap_ok(strcmp(db_registry_exceeded(reg, NULL), "MaxBuffersPerClient") == 0, "named");
	tap_ok(buffer(reg, b, 4096) != NULL, "the uid's third buffer fits");
	tap_ok(!buffer(reg, b, 4096), "its fourth exceeds MaxBuffersPerUid");
	tap_ok(strcmp(db_registry_exceeded(reg, NULL), "MaxBuffersPerUid") == 0, "named");
	tap_is(db_registry_share(reg, a, buf, true, 0, false, 0, 0, &t), 0, "one token fits");
	tap_is(db_registry_share(reg, a, buf, true, 0, false, 0, 0, &t), -EDQUOT,
	       "a second exceeds MaxTokensPerClient");
	tap_is(db_registry_check_allocation(reg, b, 1 << 20, 4), -EDQUOT,
	       "a batch over MaxBytesPerClient is refused as a whole");
	tap_is(db_registry_check_allocation(reg, b, SIZE_MAX / 2, 4), -EDQUOT,
	       "an overflowing batch is refused, not wrapped");

	r = db_registry_add_client(reg, ":1.3", 1000, 1, "cpu", false, "", NULL, &c);
	tap_is(r, 0, "third client of the uid fits");
	r = db_registry_add_client(reg, ":1.4", 1000, 1, "cpu", false, "", NULL, &c);
	tap_is(r, -EDQUOT, "a fourth exceeds MaxClientsPerUid");
	r = db_registry_add_client(reg, ":1.5", 2000, 1, "cpu", false, "", NULL, &c);
	tap_is(r, 0, "another uid still registers");
	r = db_registry_add_client(reg, ":1.6", 3000, 1, "cpu", false, "", NULL, &c);
	tap_is(r, -EDQUOT, "MaxClients caps everyone");
	r = db_registry_add_client(reg, ":1.7", 3000, 1, "cpu", false, "much-too-long", NULL, &c);
	tap_ok(r == -ENAMETOOLONG || r == -EDQUOT, "names over MaxNameLength are refused");
	tap_is(db_registry_check_name(reg, "bad\nname"), -EINVAL, "control characters are refused");
	r = db_registry_add_client(reg, ":1.1", 1000, 1, "cpu", false, "", NULL, &c);
	tap_is(r, -EEXIST, "a bus name registers once");
	tap_ok(!db_role_is_valid("root"), "unknown roles are refused");

	/* Reload lowers a limit: what is held stays, new requests meet the new limit. */
	l.max_buffers_per_client = 1;
	db_registry_set_limits(reg, &l);
	tap_is(a->attachments->len, 2, "a lower limit drops nothing held");
	tap_ok(!buffer(reg, a, 4096), "but applies to the next request");
	db_registry_free(reg);
}

static void test_move(void)
{
	struct db_limits l;
	struct db_registry *reg;
	struct db_client *a, *b;
	struct db_buffer *buf;
	struct db_attachment *att;
	int old_fd;

	db_limits_init_default(&l);
	reg = db_registry_new(&l);
	a = client(reg, ":1.1", 1000, true);
	b = client(reg, ":1.2", 1000, true);
	buf = buffer(reg, a, 4096);
	db_registry_attach(reg, b, buf, &att);
	old_fd = buf->fd;
	tap_is(db_registry_begin_move(reg, buf, -1), -EINVAL, "a move must be reserved first");
	tap_is(db_registry_reserve_move(reg, buf), 0, "an unpinned buffer may move");
	tap_is(db_registry_bytes_in_use(reg), 8192, "the new backing is charged while it is made");
	tap_is(db_registry_reserve_move(reg, buf), -EBUSY, "one move at a time (copying)");
	tap_is(db_registry_begin_move(reg, buf, some_fd()), 0, "the new backing goes in");
	tap_is(buf->old_fd, old_fd, "the old backing is kept for the holders");
	tap_is(buf->n_pending_reacquire, 2, "both holders must reacquire");
	tap_is(db_registry_bytes_in_use(reg), 8192,
	       "both backings are charged while holders reacquire");
	tap_is(db_registry_reserve_move(reg, buf), -EBUSY, "one move at a time (waiting)");
	db_registry_reacquire(reg, a, buf);
	tap_ok(buf->old_fd >= 0, "one holder left: still kept");
	db_registry_reacquire(reg, b, buf);
	tap_is(buf->old_fd, -1, "every holder reacquired: the old backing is gone");
	tap_is(db_registry_bytes_in_use(reg), 4096, "and so is its charge");
	db_registry_reserve_move(reg, buf);
	db_registry_cancel_move(reg, buf);
	tap_is(db_registry_bytes_in_use(reg), 4096,
	       "a move that could not be made gives its charge back");
	db_registry_reserve_move(reg, buf);
	db_registry_begin_move(reg, buf, some_fd());
	db_registry_remove_client(reg, b);
	db_registry_finish_move(reg, buf);
	tap_is(buf->old_fd, -1, "a deadline ends the wait");
	tap_is(db_registry_bytes_in_use(reg), 4096, "and the charge of the old backing");
	db_registry_reserve_move(reg, buf);
	db_registry_begin_move(reg, buf, some_fd());
	db_registry_remove_client(reg, a);
	tap_is(db_registry_bytes_in_use(reg), 0, "a buffer freed mid-move gives back both charges");
	db_registry_free(reg);

	/* A move needs room for a second backing. */
	l.max_bytes_per_uid = 6144;
	reg = db_registry_new(&l);
	a = client(reg, ":1.1", 1000, true);
	buf = buffer(reg, a, 4096);
	tap_is(db_registry_reserve_move(reg, buf), -EDQUOT,
	       "a move over the uid's byte limit is refused");
	tap_ok(!buf->moving && db_registry_bytes_in_use(reg) == 4096, "and charges nothing");
	db_registry_free(reg);
}

/* What the kernel says of each buffer's references outside the daemon, by buffer id. */
static int outside[16];

static int fake_outside_refs(struct db_buffer *buf, void *userdata)
{
	(void)userdata;
	return outside[buf->id];
}

static void test_lingering(void)
{
	struct db_limits l;
	struct db_registry *reg;
	struct db_client *a, *b, *c;
	struct db_buffer *buf, *buf2;

	db_limits_init_default(&l);
	l.max_bytes_per_uid = 8192;
	l.max_bytes_total = 12288;
	reg = db_registry_new(&l);
	db_registry_set_hooks(reg, &(struct db_registry_hooks){.outside_refs = fake_outside_refs});
	a = client(reg, ":1.1", 1000, true);
	b = client(reg, ":1.2", 1000, true);
	c = client(reg, ":1.3", 2000, true);

	buf = buffer(reg, a, 4096);
	outside[buf->id] = 1; /* a kept its fd after releasing */
	db_registry_detach(reg, a, buf);
	tap_ok(buf->lingering, "released while its fd is held outside: it lingers");
	tap_is(db_registry_bytes_in_use(reg), 4096, "and stays charged");
	tap_is(db_registry_count_lingering(reg), 1, "one lingering buffer");
	tap_ok(buffer(reg, a, 4096) != NULL, "the uid may use the rest of its limit");
	tap_ok(buffer(reg, b, 4096) == NULL, "but not more: Release did not give the charge back");
	outside[buf->id] = 0; /* now the fd is closed */
	buf2 = buffer(reg, b, 4096);
	tap_ok(buf2 != NULL, "once the kernel says nothing holds it, a quota check frees it");
	tap_is(db_registry_count_lingering(reg), 0, "nothing lingers");

	/* Revoked while a holder maps it: the owner keeps paying. */
	outside[buf2->id] = 2;
	db_registry_revoke(reg, buf2);
	tap_is(db_registry_count_lingering(reg), 1, "a revoked buffer lingers while mapped");
	tap_ok(buffer(reg, c, 8192) == NULL,
	       "the daemon-wide limit counts lingering memory (MaxBytesTotal)");
	outside[buf2->id] = 0;
	db_registry_remove_client(reg, b);
	tap_is(db_registry_count_lingering(reg), 0, "a client leaving looks again");
	tap_ok(buffer(reg, c, 4096) != NULL, "and the memory is free for others");
	db_registry_free(reg);
}

int main(void)
{
	int fds_before = proc_count_fds(getpid());

	test_path_rule();
	test_tokens();
	test_limits();
	test_move();
	test_lingering();
	tap_is(proc_count_fds(getpid()), fds_before, "every buffer fd was closed");
	return tap_done();
}
