// SPDX-License-Identifier: MIT
/*
 * Buffer collections through the daemon on a private bus (memfd backend here; the guest suite
 * runs them on dma-bufs with devices): a negotiation whose participants' strides and counts
 * differ, more buffers than one message carries, conflicts named, the deadline dropping a
 * silent participant, late joins, leaving at every step, limits, malformed constraints, used
 * and expired tokens, the visibility rule, and the asynchronous calls.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <drm_fourcc.h>

#include "bus-util.h"
#include "dmabroker.h"
#include "fixture.h"
#include "macros.h"
#include "protocol.h"
#include "tap.h"

/* Short deadlines: every timer here fires before the test ends. */
#define CONFIG                                                                     \
	"[Daemon]\nCollectionDeadlineSec=1\n[Limits]\nMaxCollectionsPerClient=3\n" \
	"MaxParticipantsPerCollection=6\nMaxBuffersPerCollection=40\n"

static struct fixture f;

static struct dmabroker *client(const char *name, bool dynamic)
{
	struct dmabroker *ctx = NULL;

	tap_require(dmabroker_connect(&ctx, NULL, 0) == 0, "connect");
	tap_require(dmabroker_register(ctx, "cpu", dynamic, name, NULL) == 0, "register %s", name);
	return ctx;
}

static struct dmabroker_collection *join(struct dmabroker *ctx, struct dmabroker_collection *col)
{
	struct dmabroker_collection *joined = NULL;
	struct dmabroker_token token;

	tap_require(dmabroker_collection_token(col, &token) == 0, "make a join token");
	tap_require(dmabroker_collection_join(ctx, &token, &joined) == 0, "join (%s)",
		    dmabroker_last_error(ctx));
	return joined;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};

	nanosleep(&ts, NULL);
}

/* Two participants whose strides and counts differ: the result satisfies both. */
static void test_negotiation(sd_bus *inspect)
{
	struct dmabroker *a = client("gpu-side", true), *b = client("media-side", false),
			 *c = client("cpu-side", false);
	struct dmabroker_collection *ca = NULL, *cb, *cc;
	const uint32_t yuyv = DRM_FORMAT_YUYV;
	const struct dmabroker_constraints gpu = {
		.min_buffers_for_camping = 2,
		.fourccs = &yuyv,
		.n_fourccs = 1,
		.width = 600,
		.height = 480,
		.stride_divisor = 256,
		.cpu_write = true,
	};
	const struct dmabroker_constraints media = {
		.min_buffers_for_camping = 3,
		.fourccs = &yuyv,
		.n_fourccs = 1,
		.min_strides = {1200},
		.max_buffers = 8,
	};
	const struct dmabroker_constraints cpu = {.min_buffers_for_camping = 1, .cpu_read = true};
	const struct dmabroker_collection_info *info;
	uint8_t *pa = NULL, *pc = NULL;
	bool same = true;

	tap_ok(dmabroker_collection_create(a, "negotiation", 3, &ca) == 0,
	       "create a collection for three participants");
	cb = join(b, ca);
	cc = join(c, ca);
	tap_ok(dmabroker_collection_set_constraints(ca, &gpu, sizeof(gpu)) == 0,
	       "the gpu participant wants a stride divisible by 256");
	tap_ok(dmabroker_collection_set_constraints(cb, &media, sizeof(media)) == 0,
	       "the media participant needs 1200 bytes per row of 600 px YUYV");
	tap_ok(dmabroker_collection_set_constraints(cc, &cpu, sizeof(cpu)) == 0,
	       "the cpu participant reads");
	tap_ok(dmabroker_collection_wait(ca) == 0 && dmabroker_collection_wait(cb) == 0 &&
		       dmabroker_collection_wait(cc) == 0,
	       "every participant gets the buffers (%s)", dmabroker_last_error(a));
	info = dmabroker_collection_get_info(cb);
	tap_require(info != NULL, "the outcome is there");
	tap_is(info->buffer_count, 6, "6 buffers: the camping minimums 2 + 3 + 1 added up");
	tap_is(dmabroker_collection_get_buffer_count(cc), 6, "the cpu participant holds 6");
	tap_is(dmabroker_buffer_get_stride(dmabroker_collection_get_buffer(cb, 0), 0), 1280,
	       "stride 1280: at least 1200 and a multiple of 256");
	tap_is(dmabroker_buffer_get_format(dmabroker_collection_get_buffer(ca, 5)), DRM_FORMAT_YUYV,
	       "the format is the one both allow");
	tap_ok(dmabroker_collection_get_info(ca)->path == DMABROKER_PATH_DIRECT &&
		       info->path == DMABROKER_PATH_CACHED,
	       "paths follow the registered capability: the daemon exports dynamically, so "
	       "the dynamic participant is direct and the static one cached (pinned)");
	tap_ok(strcmp(dmabroker_buffer_get_path(dmabroker_collection_get_buffer(ca, 3)),
		      dmabroker_buffer_get_path(dmabroker_collection_get_buffer(cc, 3))) == 0,
	       "they hold the same buffers");
	tap_ok(dmabroker_buffer_map(dmabroker_collection_get_buffer(ca, 4), (void **)&pa) == 0 &&
		       dmabroker_buffer_map(dmabroker_collection_get_buffer(cc, 4), (void **)&pc) ==
			       0,
	       "map buffer 4 in two participants");
	for (size_t i = 0; pa && i < 1280 * 480; i++)
		pa[i] = (uint8_t)(i * 7);
	for (size_t i = 0; pa && pc && i < 1280 * 480; i++)
		same &= pc[i] == (uint8_t)(i * 7);
	tap_ok(same, "what one writes the other reads");
	tap_is(broker_u32(inspect, "NBuffers"), 6, "the daemon keeps 6 buffers");
	dmabroker_collection_leave(cb);
	tap_is(buffer_attachments(
		       inspect, dmabroker_buffer_get_path(dmabroker_collection_get_buffer(ca, 0))),
	       2, "leaving after the allocation releases that participant's attachments");
	dmabroker_collection_leave(ca);
	dmabroker_collection_leave(cc);
	tap_is(broker_u32(inspect, "NBuffers"), 0, "the last one leaving frees the buffers");
	dmabroker_disconnect(a);
	dmabroker_disconnect(b);
	dmabroker_disconnect(c);
}

/* More buffers than the bus carries fds in one message: delivered in batches. */
static void test_many_buffers(void)
{
	struct dmabroker *a = client("many-a", false), *b = client("many-b", false);
	struct dmabroker_collection *ca = NULL, *cb;
	const struct dmabroker_constraints ask = {.min_buffers_for_camping = 30, .min_size = 8192};
	const struct dmabroker_constraints other = {.min_buffers_for_camping = 7};
	bool distinct = true;

	tap_ok(dmabroker_collection_create(a, "many", 0, &ca) == 0, "create (no count: commit)");
	cb = join(b, ca);
	dmabroker_collection_set_constraints(ca, &ask, sizeof(ask));
	dmabroker_collection_set_constraints(cb, &other, sizeof(other));
	tap_ok(dmabroker_collection_commit(cb) == -EACCES, "only the creator commits");
	tap_ok(dmabroker_collection_commit(ca) == 0, "the creator commits");
	tap_ok(dmabroker_collection_wait(cb) == 0, "37 buffers arrive (%s)",
	       dmabroker_last_error(b));
	tap_is(dmabroker_collection_get_buffer_count(cb), 37,
	       "all 37, in batches of at most 16 descriptors");
	for (unsigned i = 0; i < 37; i++)
		for (unsigned k = 0; k < i; k++)
			distinct &=
				dmabroker_buffer_get_fd(dmabroker_collection_get_buffer(cb, i)) !=
				dmabroker_buffer_get_fd(dmabroker_collection_get_buffer(cb, k));
	tap_ok(distinct, "37 distinct descriptors");
	tap_is(dmabroker_buffer_get_size(dmabroker_collection_get_buffer(cb, 36)), 8192,
	       "each of the size asked for");
	dmabroker_collection_leave(ca);
	dmabroker_collection_leave(cb);
	dmabroker_disconnect(a);
	dmabroker_disconnect(b);
}

/* dmabrokerctl monitor tells root and the participants' uids, and nobody else. */
static void test_monitor(void)
{
	const char *argv[] = {"tools/dmabrokerctl", "monitor", NULL};
	struct dmabroker *a = client("watched", false);
	struct dmabroker_collection *ok = NULL, *bad = NULL;
	const struct dmabroker_constraints ask = {.min_size = 4096};
	const struct dmabroker_constraints odd = {.min_size = 8192, .max_size = 4096};
	static char root_out[8192], nobody_out[4096];
	int root_fd, nobody_fd;
	pid_t root, nobody;

	root = spawn_client(argv, false, &root_fd);
	nobody = spawn_client(argv, true, &nobody_fd);
	usleep(500 * 1000); /* they subscribe */
	dmabroker_collection_create(a, "monitored", 1, &ok);
	dmabroker_collection_set_constraints(ok, &ask, sizeof(ask));
	dmabroker_collection_wait(ok);
	dmabroker_collection_create(a, "doomed", 1, &bad);
	tap_ok(dmabroker_collection_set_constraints(bad, &odd, sizeof(odd)) == -EINVAL,
	       "contradictory constraints of one participant are refused at once");
	dmabroker_collection_leave(bad);
	dmabroker_collection_create(a, "doomed", 1, &bad);
	dmabroker_collection_commit(bad);
	dmabroker_collection_wait(bad);
	read_until_quiet(root_fd, root_out, sizeof(root_out), 1000);
	read_until_quiet(nobody_fd, nobody_out, sizeof(nobody_out), 300);
	tap_ok(strstr(root_out, "collection-allocated") && strstr(root_out, "1 x 4096 bytes"),
	       "root's monitor sees the allocation and what it was");
	tap_ok(strstr(root_out, "collection-failed") && strstr(root_out, "how large"),
	       "and a failure, with its reason");
	tap_ok(!strstr(nobody_out, "collection-"), "uid 65534 sees neither");
	kill(root, SIGTERM);
	kill(nobody, SIGTERM);
	waitpid(root, NULL, 0);
	waitpid(nobody, NULL, 0);
	close(root_fd);
	close(nobody_fd);
	dmabroker_collection_leave(ok);
	dmabroker_collection_leave(bad);
	dmabroker_disconnect(a);
}

/* Conflicts fail the collection for everyone, naming who conflicts. */
static void test_conflicts(void)
{
	struct dmabroker *a = client("small-one", false), *b = client("big-one", false),
			 *c = client("bystander", false);
	struct dmabroker_collection *ca = NULL, *cb, *cc;
	const struct dmabroker_constraints small = {.max_size = 4096};
	const struct dmabroker_constraints big = {.min_size = 65536};
	const struct dmabroker_constraints none = {.min_buffers_for_camping = 1};
	const struct dmabroker_constraints contiguous = {
		.min_size = 1 << 20, .contiguous = true, .device_import = true};
	const char *msg;

	dmabroker_collection_create(a, "conflict", 3, &ca);
	cb = join(b, ca);
	cc = join(c, ca);
	dmabroker_collection_set_constraints(ca, &small, sizeof(small));
	dmabroker_collection_set_constraints(cc, &none, sizeof(none));
	dmabroker_collection_set_constraints(cb, &big, sizeof(big));
	tap_is(dmabroker_collection_wait(cc), -EOPNOTSUPP, "a size conflict fails the collection");
	msg = dmabroker_last_error(c);
	tap_ok(strstr(msg, "small-one") && strstr(msg, "big-one") && !strstr(msg, "bystander"),
	       "the message names the two that conflict, not the third: %s", msg);
	tap_is(dmabroker_collection_wait(ca), -EOPNOTSUPP, "the creator is told the same");
	dmabroker_collection_leave(ca);
	dmabroker_collection_leave(cb);
	dmabroker_collection_leave(cc);

	/* One participant against what this machine offers (no contiguous memory here). */
	dmabroker_collection_create(a, "contiguous", 1, &ca);
	dmabroker_collection_set_constraints(ca, &contiguous, sizeof(contiguous));
	tap_is(dmabroker_collection_wait(ca), -EOPNOTSUPP,
	       "contiguous memory for a device is refused where no backend has it");
	msg = dmabroker_last_error(a);
	tap_ok(strstr(msg, "small-one") && strstr(msg, "contiguous"),
	       "naming the participant and its contiguity: %s", msg);
	dmabroker_collection_leave(ca);

	/* Malformed constraints are refused and leave the earlier ones in place. */
	{
		const struct dmabroker_constraints odd = {.min_size = 8192, .max_size = 4096};
		const struct dmabroker_constraints page = {.min_size = 4096};

		dmabroker_collection_create(a, "kept", 0, &ca);
		dmabroker_collection_set_constraints(ca, &page, sizeof(page));
		tap_ok(dmabroker_collection_set_constraints(ca, &odd, sizeof(odd)) == -EINVAL,
		       "a participant's own contradiction is refused at once: %s",
		       dmabroker_last_error(a));
		dmabroker_collection_commit(ca);
		tap_ok(dmabroker_collection_wait(ca) == 0 &&
			       dmabroker_collection_get_info(ca)->size == 4096,
		       "and what it set before stands (%s)", dmabroker_last_error(a));
		dmabroker_collection_leave(ca);
	}
	dmabroker_disconnect(a);
	dmabroker_disconnect(b);
	dmabroker_disconnect(c);
}

/* A participant that joins and stays silent is dropped at the deadline; the rest proceed. */
static void test_deadline(void)
{
	struct dmabroker *a = client("patient", false), *b = client("silent", false);
	struct dmabroker_collection *ca = NULL, *cb;
	const struct dmabroker_constraints ask = {.min_size = 4096, .min_buffers_for_camping = 2};
	struct dmabroker_token late;
	struct dmabroker_collection *nope = NULL;

	dmabroker_collection_create(a, "deadline", 0, &ca);
	cb = join(b, ca);
	tap_ok(dmabroker_collection_token(ca, &late) == 0, "a token nobody uses in time");
	dmabroker_collection_set_constraints(ca, &ask, sizeof(ask));
	dmabroker_collection_commit(ca);
	tap_ok(dmabroker_collection_wait(ca) == 0,
	       "the wait ends after CollectionDeadlineSec with the silent one dropped (%s)",
	       dmabroker_last_error(a));
	tap_is(dmabroker_collection_get_info(ca)->buffer_count, 2, "2 buffers, for the one left");
	tap_is(dmabroker_collection_wait(cb), -ENOENT, "the silent participant is out");
	tap_is(dmabroker_collection_join(b, &late, &nope), -ENOENT, "the unused token expired");
	sleep_ms(1200);
	tap_ok(dmabroker_collection_get_buffer(ca, 1) != NULL,
	       "the buffers stay past the deadline");
	dmabroker_collection_leave(cb);
	dmabroker_collection_leave(ca);
	dmabroker_disconnect(a);
	dmabroker_disconnect(b);
}

/* After the allocation, a joiner gets the buffers if they fit it. */
static void test_late_join(void)
{
	struct dmabroker *a = client("early", false), *d = client("late-fit", true),
			 *e = client("late-misfit", false);
	struct dmabroker_collection *ca = NULL, *cd, *ce;
	const struct dmabroker_constraints ask = {.min_size = 16384, .min_buffers_for_camping = 4};
	const struct dmabroker_constraints fits = {.min_size = 8192, .min_buffers_for_camping = 0};
	const struct dmabroker_constraints misfit = {.min_size = 1 << 20};

	dmabroker_collection_create(a, "late", 1, &ca);
	dmabroker_collection_set_constraints(ca, &ask, sizeof(ask));
	tap_ok(dmabroker_collection_wait(ca) == 0, "allocated for the first participant");
	cd = join(d, ca);
	tap_ok(dmabroker_collection_set_constraints(cd, &fits, sizeof(fits)) == 0,
	       "a late joiner the buffers fit is attached");
	tap_ok(dmabroker_collection_wait(cd) == 0 && dmabroker_collection_get_buffer_count(cd) == 4,
	       "and gets the same 4 buffers");
	tap_is(dmabroker_collection_get_info(cd)->path, DMABROKER_PATH_DIRECT,
	       "its own path (dynamic importer of the daemon's dynamic exporter: direct)");
	{
		struct dmabroker_collection *twice = NULL;
		struct dmabroker_token once;

		dmabroker_collection_token(ca, &once);
		tap_ok(dmabroker_collection_join(e, &once, &ce) == 0, "a token works once");
		tap_ok(dmabroker_collection_join(d, &once, &twice) == -ENOENT, "and not twice: %s",
		       dmabroker_last_error(d));
	}
	tap_ok(dmabroker_collection_set_constraints(ce, &misfit, sizeof(misfit)) == -EOPNOTSUPP,
	       "one they do not fit is refused: %s", dmabroker_last_error(e));
	tap_is(dmabroker_collection_set_constraints(ca, &ask, sizeof(ask)), -EBUSY,
	       "constraints cannot change after the allocation");
	dmabroker_collection_leave(ce);
	dmabroker_collection_leave(cd);
	dmabroker_collection_leave(ca);
	dmabroker_disconnect(a);
	dmabroker_disconnect(d);
	dmabroker_disconnect(e);
}

/* Leaving at every step: the creator before allocation ends it; others are dropped; a client
 * killed mid-negotiation leaves. */
static void test_leaving(void)
{
	struct dmabroker *a = client("creator", false), *b = client("other", false);
	struct dmabroker_collection *ca = NULL, *cb, *cx;
	const struct dmabroker_constraints ask = {.min_size = 4096, .min_buffers_for_camping = 1};
	char hex[DMABROKER_TOKEN_STRING_SIZE];
	struct dmabroker_token token;
	int status;

	dmabroker_collection_create(a, "creator-leaves", 2, &ca);
	cb = join(b, ca);
	dmabroker_collection_set_constraints(cb, &ask, sizeof(ask));
	dmabroker_collection_leave(ca);
	tap_is(dmabroker_collection_wait(cb), -ENOENT, "the creator leaving ends the negotiation");
	tap_ok(strstr(dmabroker_last_error(b), "creator") != NULL, "saying so: %s",
	       dmabroker_last_error(b));
	dmabroker_collection_leave(cb);

	/* A participant leaves before the allocation: the other two proceed. */
	dmabroker_collection_create(a, "one-leaves", 2, &ca);
	cb = join(b, ca);
	dmabroker_collection_leave(cb);
	dmabroker_collection_set_constraints(ca, &ask, sizeof(ask));
	cx = join(b, ca);
	dmabroker_collection_set_constraints(cx, &ask, sizeof(ask));
	tap_ok(dmabroker_collection_wait(ca) == 0 && dmabroker_collection_get_buffer_count(ca) == 2,
	       "after one left, the next two proceed");
	dmabroker_collection_leave(cx);
	dmabroker_collection_leave(ca);

	/*
	 * A client killed after joining: dropped, the rest go on. The creator is ready and has
	 * committed, so the departure itself completes the set: the allocation comes from the
	 * re-check after the client is gone, with no further call of the creator's.
	 */
	dmabroker_collection_create(a, "killed", 2, &ca);
	dmabroker_collection_set_constraints(ca, &ask, sizeof(ask));
	dmabroker_collection_commit(ca);
	dmabroker_collection_token(ca, &token);
	dmabroker_token_to_string(&token, hex);
	{
		const char *argv[] = {"tests/bus/test-client", "join-and-die", hex, NULL};
		char out[256];

		status = run_client(argv, false, out, sizeof(out));
	}
	tap_ok(WIFSIGNALED(status) || WEXITSTATUS(status) == 0, "a client joined and died");
	tap_ok(dmabroker_collection_wait(ca) == 0 && dmabroker_collection_get_buffer_count(ca) == 1,
	       "the dead one is dropped and the creator gets its buffer");
	dmabroker_collection_leave(ca);
	dmabroker_disconnect(a);
	dmabroker_disconnect(b);
}

static void test_limits(void)
{
	struct dmabroker *a = client("limited", false);
	struct dmabroker_collection *cols[4] = {0};
	struct dmabroker_token tokens[6];
	const struct dmabroker_constraints greedy = {.min_size = 4096,
						     .min_buffers_for_camping = 41};
	int n_tokens = 0;

	for (int i = 0; i < 3; i++)
		dmabroker_collection_create(a, "limit", 0, &cols[i]);
	tap_ok(dmabroker_collection_create(a, "limit", 0, &cols[3]) == -EDQUOT,
	       "MaxCollectionsPerClient: %s", dmabroker_last_error(a));
	while (n_tokens < 6 && dmabroker_collection_token(cols[0], &tokens[n_tokens]) == 0)
		n_tokens++;
	tap_is(n_tokens, 5, "MaxParticipantsPerCollection counts participants and tokens");
	dmabroker_collection_set_constraints(cols[1], &greedy, sizeof(greedy));
	dmabroker_collection_commit(cols[1]);
	tap_ok(dmabroker_collection_wait(cols[1]) == -EDQUOT, "MaxBuffersPerCollection: %s",
	       dmabroker_last_error(a));
	for (int i = 0; i < 3; i++)
		dmabroker_collection_leave(cols[i]);
	dmabroker_disconnect(a);
}

static bool refused(sd_bus *bus, const char *name, const char *what, const char *member,
		    const char *types, ...)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	va_list ap;
	bool ok;
	int r;

	va_start(ap, types);
	r = broker_callv(bus, member, &e, NULL, types, ap);
	va_end(ap);
	ok = r < 0 && sd_bus_error_has_name(&e, name);
	tap_ok(ok, "%s: %s (%s)", what, e.name ? e.name : "no error", e.message ? e.message : "");
	sd_bus_error_free(&e);
	return ok;
}

/* Malformed and hostile input on the raw bus. */
static void test_hostile(sd_bus *inspect)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	sd_bus *raw = inspect_bus();
	sd_bus_error e = SD_BUS_ERROR_NULL;
	const char *path = NULL;
	uint32_t many[17] = {0};
	uint8_t zero[16] = {0};

	tap_require(broker_call(raw, "Register", &e, NULL, "a{sv}", 1, "name", "s", "raw") >= 0,
		    "a raw client registers");
	tap_require(broker_call(raw, "CreateCollection", &e, &reply, "a{sv}", 0) >= 0 &&
			    sd_bus_message_read(reply, "o", &path) > 0,
		    "and creates a collection");
	path = strdup(path);
	refused(raw, DB_ERROR_INVALID_ARGUMENT, "an unknown key", "SetCollectionConstraints",
		"oa{sv}", path, 1, "colour", "s", "red");
	refused(raw, DB_ERROR_INVALID_ARGUMENT, "a value of the wrong type",
		"SetCollectionConstraints", "oa{sv}", path, 1, "min-size", "u", 5);
	refused(raw, DB_ERROR_INVALID_ARGUMENT, "an empty fourcc set", "SetCollectionConstraints",
		"oa{sv}", path, 1, "fourccs", "au", 0);
	{
		_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;

		sd_bus_message_new_method_call(raw, &m, DB_BUS_NAME, DB_OBJECT_PATH,
					       DB_IFACE_BROKER, "SetCollectionConstraints");
		sd_bus_message_append(m, "o", path);
		sd_bus_message_open_container(m, 'a', "{sv}");
		sd_bus_message_open_container(m, 'e', "sv");
		sd_bus_message_append_basic(m, 's', "fourccs");
		sd_bus_message_open_container(m, 'v', "au");
		sd_bus_message_append_array(m, 'u', many, sizeof(many));
		sd_bus_message_close_container(m);
		sd_bus_message_close_container(m);
		sd_bus_message_close_container(m);
		tap_ok(sd_bus_call(raw, m, 5000000, &e, NULL) < 0 &&
			       sd_bus_error_has_name(&e, DB_ERROR_INVALID_ARGUMENT),
		       "a set of 17 is refused: %s", e.message);
		sd_bus_error_free(&e);
	}
	refused(raw, DB_ERROR_INVALID_ARGUMENT, "a stride range that is empty",
		"SetCollectionConstraints", "oa{sv}", path, 2, "min-strides", "au", 1, 4096,
		"max-strides", "au", 1, 1024);
	refused(raw, DB_ERROR_INVALID_ARGUMENT, "a backend name with a line break",
		"SetCollectionConstraints", "oa{sv}", path, 1, "backends", "as", 1, "memfd\nx");
	refused(raw, DB_ERROR_INVALID_ARGUMENT, "a device it did not register",
		"SetCollectionConstraints", "oa{sv}", path, 1, "device", "s", "/dev/video0");
	refused(raw, DB_ERROR_NOT_FOUND, "a forged collection path", "SetCollectionConstraints",
		"oa{sv}", DB_COLLECTION_PATH_PREFIX "/999999", 0);
	refused(raw, DB_ERROR_NOT_FOUND, "a path that is not a collection's", "WaitCollection", "o",
		DB_OBJECT_PATH);
	refused(raw, DB_ERROR_INVALID_ARGUMENT, "a token of the wrong length", "JoinCollection",
		"ay", 3, "abc");
	{
		_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;

		sd_bus_message_new_method_call(raw, &m, DB_BUS_NAME, DB_OBJECT_PATH,
					       DB_IFACE_BROKER, "JoinCollection");
		sd_bus_message_append_array(m, 'y', zero, sizeof(zero));
		tap_ok(sd_bus_call(raw, m, 5000000, &e, NULL) < 0 &&
			       sd_bus_error_has_name(&e, DB_ERROR_NOT_FOUND),
		       "a token never issued: %s", e.message);
		sd_bus_error_free(&e);
	}
	refused(raw, DB_ERROR_BUSY, "buffers before the allocation", "GetCollectionBuffers", "ouu",
		path, 0, 1);
	/* A wait that is owed, then a second one. */
	{
		_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;

		sd_bus_message_new_method_call(raw, &m, DB_BUS_NAME, DB_OBJECT_PATH,
					       DB_IFACE_BROKER, "WaitCollection");
		sd_bus_message_append(m, "o", path);
		tap_ok(sd_bus_send(raw, m, NULL) >= 0, "one WaitCollection is pending");
		refused(raw, DB_ERROR_BUSY, "a second one at once", "WaitCollection", "o", path);
	}
	/* Another uid sees nothing of it. */
	{
		const char *argv[] = {"tools/dmabrokerctl", "collections", NULL};
		char out[256] = "";
		int status = run_client(argv, true, out, sizeof(out));

		out[strcspn(out, "\n")] = '\0';
		tap_ok(status == 0 && strstr(out, "no collections") != NULL,
		       "uid 65534 lists no collection of ours (%s)", out);
	}
	{
		_cleanup_(sd_bus_message_unrefp) sd_bus_message *list = NULL;
		int n = 0;

		tap_ok(broker_call(inspect, "ListCollections", &e, &list, NULL) >= 0,
		       "root lists collections");
		sd_bus_message_enter_container(list, 'a', "a{sv}");
		while (sd_bus_message_skip(list, "a{sv}") > 0)
			n++;
		tap_is(n, 1, "and sees the raw client's one");
	}
	{
		const char *argv[] = {"tools/dmabrokerctl", "collections", NULL};
		char out[2048] = "";
		int status = run_client(argv, false, out, sizeof(out));

		for (char *line = strtok(strdupa(out), "\n"); line; line = strtok(NULL, "\n"))
			tap_diag("dmabrokerctl collections: %s", line);
		tap_ok(status == 0 && strstr(out, "negotiating") &&
			       strstr(out, "participant raw") &&
			       strstr(out, "constraints: not set"),
		       "dmabrokerctl collections shows it to root, with its participant");
	}
	/* The raw client goes while its wait is owed: the daemon does not care. */
	sd_bus_flush_close_unref(raw);
	free((char *)path);
	tap_ok(fixture_wait_clients(&f, 0, 5000), "the raw client is gone");
	tap_is(broker_u32(inspect, "NClients"), 0, "nothing of it is left");
}

struct async_state {
	struct dmabroker_collection *col;
	int result;
	int calls;
};

static void on_collection(int r, struct dmabroker_collection *col, void *userdata)
{
	struct async_state *s = userdata;

	s->result = r;
	s->col = col;
	s->calls++;
}

static void on_done(int r, void *userdata)
{
	struct async_state *s = userdata;

	s->result = r;
	s->calls++;
}

static void pump(struct dmabroker *ctx, struct async_state *s, int want)
{
	for (int i = 0; i < 500 && s->calls < want; i++) {
		struct pollfd p = {.fd = dmabroker_get_fd(ctx), .events = POLLIN};

		poll(&p, 1, 10);
		dmabroker_dispatch(ctx);
	}
}

static void test_async(void)
{
	struct dmabroker *a = client("async", false);
	struct async_state s = {0};
	const struct dmabroker_constraints ask = {.min_size = 4096, .min_buffers_for_camping = 20};

	tap_ok(dmabroker_collection_create_async(a, "async", 1, on_collection, &s, NULL) == 0,
	       "create, asynchronously");
	pump(a, &s, 1);
	tap_ok(s.calls == 1 && s.result == 0 && s.col, "created");
	tap_ok(dmabroker_collection_set_constraints_async(s.col, &ask, sizeof(ask), on_done, &s,
							  NULL) == 0,
	       "set constraints, asynchronously");
	pump(a, &s, 2);
	tap_is(s.result, 0, "set");
	tap_ok(dmabroker_collection_wait_async(s.col, on_done, &s, NULL) == 0,
	       "wait, asynchronously");
	pump(a, &s, 3);
	tap_ok(s.result == 0 && dmabroker_collection_get_buffer_count(s.col) == 20,
	       "20 buffers, in two batches, without blocking");
	tap_ok(dmabroker_collection_leave_async(s.col, on_done, &s, NULL) == 0,
	       "leave, asynchronously");
	pump(a, &s, 4);
	tap_ok(s.calls == 4 && s.result == 0, "left");
	dmabroker_disconnect(a);
}

int main(void)
{
	sd_bus *inspect;
	int baseline, r;

	r = fixture_start(&f, CONFIG);
	tap_require(r == 0, "start a private bus and the daemon (%s)", strerror(-r));
	inspect = inspect_bus();
	tap_require(inspect != NULL, "connect an inspector");
	baseline = fixture_daemon_fds(&f);

	test_negotiation(inspect);
	test_many_buffers();
	test_conflicts();
	test_monitor();
	test_deadline();
	test_late_join();
	test_leaving();
	test_limits();
	test_hostile(inspect);
	test_async();

	tap_ok(fixture_wait_clients(&f, 0, 5000), "every client is gone");
	tap_is(broker_u32(inspect, "NBuffers"), 0, "no buffer is left");
	tap_is(fixture_daemon_fds(&f), baseline, "the daemon's fd count is back to its baseline");
	sd_bus_flush_close_unref(inspect);
	tap_is(fixture_stop(&f), 0, "the daemon exits cleanly on SIGTERM");
	return tap_done();
}
