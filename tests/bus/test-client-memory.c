// SPDX-License-Identifier: MIT
/*
 * A client's memory stays the client's (issue #18), on the host's backend (memfd: this
 * machine has no udmabuf; tests/vm/test-accounting.c measures the cgroups on real kernels):
 *   - AllocateWithMemfd refuses a memfd with holes (sparse, or a page punched), pages beyond
 *     its end, and one that may grow or take another seal later;
 *   - a Move of a client's memfd whose owner punched it after the call does not fault the
 *     holes in (they would be charged to the daemon);
 *   - a daemon-made memfd that its holder Releases and keeps holds no memory of the daemon's
 *     (the daemon cannot count a memfd's references: it gives the pages back), after a plain
 *     Allocate and after a Move's new backing.
 * st_blocks of the memfd shows what exists: shmem counts every page it holds there.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bus-open.h"
#include "bus-util.h"
#include "fixture.h"
#include "macros.h"
#include "protocol.h"
#include "tap.h"

#define MiB (1024ull * 1024ull)
#define SIZE (8 * MiB)
#define ALL_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)

static struct fixture f;

static sd_bus *connect_bus(void)
{
	sd_bus *bus = NULL;

	tap_require(db_bus_open_address(f.address, &bus) >= 0, "connect to the test bus");
	sd_bus_set_method_call_timeout(bus, 10 * 1000000ull);
	return bus;
}

static uint64_t allocated(int fd)
{
	struct stat st;

	return fstat(fd, &st) == 0 ? (uint64_t)st.st_blocks * 512u : UINT64_MAX;
}

enum shape {
	WHOLE, /* every page allocated */
	SPARSE, /* size set, no page */
	PUNCHED, /* allocated, then one page punched */
	BEYOND, /* no page inside, as many beyond the end (fallocate KEEP_SIZE) */
};

/* A memfd of SIZE bytes of the given shape and seals (owned by the caller). */
static int make_memfd(enum shape shape, int seals)
{
	int fd = memfd_create("test", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	if (fd < 0 || ftruncate(fd, (off_t)SIZE) < 0)
		return -1;
	if ((shape == WHOLE || shape == PUNCHED) && fallocate(fd, 0, 0, (off_t)SIZE) < 0)
		return -1;
	if (shape == PUNCHED &&
	    fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 4096) < 0)
		return -1;
	if (shape == BEYOND && fallocate(fd, FALLOC_FL_KEEP_SIZE, (off_t)SIZE, (off_t)SIZE) < 0)
		return -1;
	if (seals && fcntl(fd, F_ADD_SEALS, seals) < 0)
		return -1;
	return fd;
}

/* AllocateWithMemfd of SIZE bytes: the buffer's path and a dup of its fd (owned). */
static int allocate_with(sd_bus *bus, int memfd, char *path, size_t len, int *ret_fd,
			 sd_bus_error *error)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
	const char *p;
	int fd, r;

	r = sd_bus_message_new_method_call(bus, &m, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
					   "AllocateWithMemfd");
	if (r >= 0)
		r = sd_bus_message_append(m, "h", memfd);
	if (r >= 0)
		r = sd_bus_message_append(m, "a{sv}", 1, "size", "t", (uint64_t)SIZE);
	if (r >= 0)
		r = sd_bus_call(bus, m, 0, error, &reply);
	if (r >= 0)
		r = sd_bus_message_read(reply, "oh", &p, &fd);
	if (r < 0)
		return r;
	if (path)
		snprintf(path, len, "%s", p);
	if (ret_fd)
		*ret_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	return 0;
}

static int allocate(sd_bus *bus, char *path, size_t len, int *ret_fd, sd_bus_error *error)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	const char *p;
	int fd, r;

	r = broker_call(bus, "Allocate", error, &reply, "a{sv}", 1, "size", "t", (uint64_t)SIZE);
	if (r >= 0)
		r = sd_bus_message_read(reply, "oh", &p, &fd);
	if (r < 0)
		return r;
	snprintf(path, len, "%s", p);
	*ret_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	return 0;
}

static int reacquire(sd_bus *bus, const char *path, int *ret_fd)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	sd_bus_error error = SD_BUS_ERROR_NULL;
	int fd, r;

	r = broker_call(bus, "Reacquire", &error, &reply, "o", path);
	if (r >= 0)
		r = sd_bus_message_read(reply, "h", &fd);
	sd_bus_error_free(&error);
	if (r < 0)
		return r;
	*ret_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	return 0;
}

static uint64_t bytes_in_use(sd_bus *bus)
{
	uint64_t v = UINT64_MAX;

	sd_bus_get_property_trivial(bus, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER, "BytesInUse",
				    NULL, 't', &v);
	return v;
}

/* 1. Only a whole, fully sealed memfd is taken. */
static void test_admission(sd_bus *bus)
{
	static const struct {
		const char *what;
		enum shape shape;
		int seals;
	} refused[] = {
		{"a sparse memfd (size set, no page written)", SPARSE, ALL_SEALS},
		{"a memfd with one page punched", PUNCHED, ALL_SEALS},
		{"a memfd whose pages lie beyond its end", BEYOND, ALL_SEALS},
		{"a memfd that may grow (no F_SEAL_GROW)", WHOLE, F_SEAL_SHRINK | F_SEAL_SEAL},
		{"a memfd that takes more seals (no F_SEAL_SEAL)", WHOLE,
		 F_SEAL_SHRINK | F_SEAL_GROW},
	};
	sd_bus_error error = SD_BUS_ERROR_NULL;
	char path[128] = "";
	int fd, r;

	for (size_t i = 0; i < ARRAY_SIZE(refused); i++) {
		fd = make_memfd(refused[i].shape, refused[i].seals);
		if (!tap_ok(fd >= 0, "make %s", refused[i].what))
			continue;
		r = allocate_with(bus, fd, NULL, 0, NULL, &error);
		tap_ok(r < 0 && sd_bus_error_has_name(&error, DB_ERROR_INVALID_ARGUMENT) &&
			       error.message && error.message[0],
		       "%s is refused: %s (%s)", refused[i].what,
		       error.name ? error.name : "accepted", error.message ? error.message : "");
		sd_bus_error_free(&error);
		close(fd);
	}
	tap_is(broker_u32(bus, "NBuffers"), 0, "no buffer was made of them");

	fd = make_memfd(WHOLE, ALL_SEALS);
	r = allocate_with(bus, fd, path, sizeof(path), NULL, &error);
	tap_ok(r == 0, "a whole memfd sealed SHRINK|GROW|SEAL is taken (%s)",
	       error.message ? error.message : "ok");
	sd_bus_error_free(&error);
	/* What the seals promise the holders: the size never changes, no seal is added. */
	tap_ok(ftruncate(fd, (off_t)(2 * SIZE)) < 0 && errno == EPERM,
	       "its owner cannot grow it afterwards (ftruncate: %m)");
	tap_ok(fallocate(fd, 0, (off_t)SIZE, (off_t)SIZE) < 0 && errno == EPERM,
	       "nor grow it with fallocate (%m)");
	tap_ok(fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE) < 0 && errno == EPERM,
	       "nor seal it read-only for the other holders (%m)");
	close(fd);
	tap_ok(r == 0 && broker_call(bus, "Release", &error, NULL, "o", path) == 0, "released");
	sd_bus_error_free(&error);
}

/*
 * 2. The owner punches its memfd after handing it over, then Moves the buffer: the copy must
 * read the holes as zeros, not fault them in (on the memfd backend the buffer is the
 * client's memfd itself). Repeated: each round would add SIZE bytes to the daemon's cgroup.
 */
static void test_move_punched(sd_bus *bus)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	char path[128];
	int memfd, fd = -1, nfd = -1, r;

	for (int round = 1; round <= 3; round++) {
		memfd = make_memfd(WHOLE, ALL_SEALS);
		r = allocate_with(bus, memfd, path, sizeof(path), &fd, &error);
		if (!tap_ok(r == 0, "round %d: a whole memfd is taken (%s)", round,
			    error.message ? error.message : "ok")) {
			sd_bus_error_free(&error);
			close(memfd);
			return;
		}
		tap_ok(fallocate(memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
				 (off_t)SIZE) == 0 &&
			       allocated(memfd) == 0,
		       "round %d: its owner punches every page out after the call", round);
		r = broker_call(bus, "Move", &error, NULL, "o", path);
		tap_ok(r == 0, "round %d: the owner moves it (%s)", round,
		       error.message ? error.message : "ok");
		sd_bus_error_free(&error);
		tap_ok(allocated(memfd) == 0,
		       "round %d: the Move faulted no hole in (%llu bytes allocated in the memfd)",
		       round, (unsigned long long)allocated(memfd));
		tap_ok(reacquire(bus, path, &nfd) == 0, "round %d: reacquired", round);
		/* The new backing is the daemon's: the holder keeps it past its Release. */
		tap_ok(broker_call(bus, "Release", &error, NULL, "o", path) == 0,
		       "round %d: released, keeping the new fd", round);
		sd_bus_error_free(&error);
		tap_ok(allocated(nfd) == 0,
		       "round %d: the kept new backing holds no page of the daemon's (%llu bytes)",
		       round, (unsigned long long)allocated(nfd));
		close(nfd);
		close(fd);
		close(memfd);
	}
	tap_is(bytes_in_use(bus), 0, "BytesInUse is back to 0");
}

/* 3. Release-and-keep of a daemon-made memfd: the daemon's pages do not stay with the keeper. */
static void test_release_and_keep(sd_bus *bus)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	char path[128];
	int fd = -1;
	char *map;

	for (int round = 1; round <= 3; round++) {
		if (!tap_ok(allocate(bus, path, sizeof(path), &fd, &error) == 0,
			    "round %d: Allocate (the daemon's memory) %s", round,
			    error.message ? error.message : ""))
			break;
		tap_ok(allocated(fd) == SIZE, "round %d: the daemon allocated its %llu bytes",
		       round, SIZE);
		map = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		tap_ok(map != MAP_FAILED, "round %d: mapped", round);
		if (map != MAP_FAILED)
			memset(map, 0x5a, 4096);
		tap_ok(broker_call(bus, "Release", &error, NULL, "o", path) == 0,
		       "round %d: released, keeping the fd and the mapping", round);
		sd_bus_error_free(&error);
		tap_ok(bytes_in_use(bus) == 0, "round %d: BytesInUse no longer counts it", round);
		tap_ok(allocated(fd) == 0,
		       "round %d: so none of the daemon's pages stays behind (%llu bytes)", round,
		       (unsigned long long)allocated(fd));
		if (map != MAP_FAILED) {
			/* What the keeper touches now is its own memory. */
			tap_ok(map[0] == 0, "round %d: the keeper's mapping reads zeros", round);
			munmap(map, SIZE);
		}
		close(fd);
	}
}

int main(void)
{
	sd_bus *bus;

	signal(SIGPIPE, SIG_IGN);
	tap_require(fixture_start(&f, "[Limits]\nMaxBytesPerUid=64M\n") == 0,
		    "start a private bus and dmabrokerd");
	bus = connect_bus();
	/* Dynamic: its buffers may move (a static holder would pin them). */
	tap_require(broker_call(bus, "Register", NULL, NULL, "a{sv}", 2, "role", "s", "cpu",
				"dynamic", "b", 1) == 0,
		    "register");
	test_admission(bus);
	test_move_punched(bus);
	test_release_and_keep(bus);
	sd_bus_flush_close_unref(bus);
	tap_ok(fixture_wait_clients(&f, 0, 5000), "the client is gone");
	tap_is(fixture_stop(&f), 0, "the daemon exits cleanly");
	return tap_done();
}
