// SPDX-License-Identifier: MIT
/*
 * Admission of client-supplied memory. A memfd a client hands over must be memory the client
 * already paid for, and must stay so: shmem charges a page to the memory cgroup of the task
 * that allocates it, so any page the daemon faults in (udmabuf pinning a hole, a copy reading
 * through a mapping) would be charged to the daemon, outside every quota.
 */
#include "client-memory.h"

#include <errno.h>
#include <glib.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <linux/magic.h>
#include <linux/sched.h>
#include <linux/udmabuf.h>
#include <linux/wait.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend.h"
#include "broker.h"
#include "errors.h"
#include "fd-util.h"
#include "log.h"
#include "macros.h"
#include "protocol.h"
#include "spec.h"

/* shmem counts st_blocks in 512-byte units for every page it holds, swapped ones included. */
static uint64_t allocated_bytes(const struct stat *st)
{
	return (uint64_t)st->st_blocks * 512u;
}

int db_client_memfd_check(int fd, size_t size, sd_bus_error *error)
{
	struct statfs sfs;
	struct stat st;
	int seals;

	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || fstatfs(fd, &sfs) < 0 ||
	    sfs.f_type != TMPFS_MAGIC)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "memfd: not a memfd (memfd_create without MFD_HUGETLB)");
	seals = fcntl(fd, F_GET_SEALS);
	if (seals < 0)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "memfd: not created with MFD_ALLOW_SEALING");
	if (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE))
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "memfd: a write seal would make it read-only for every "
					 "holder (udmabuf refuses it)");
	if ((seals & DB_CLIENT_MEMFD_SEALS) != DB_CLIENT_MEMFD_SEALS)
		return sd_bus_error_setf(
			error, DB_ERROR_INVALID_ARGUMENT,
			"memfd: needs F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL (it has%s%s%s): "
			"its size must never change under the holders' mappings, and no seal "
			"added later may break them",
			seals & F_SEAL_SHRINK ? " SHRINK" : "", seals & F_SEAL_GROW ? " GROW" : "",
			seals & F_SEAL_SEAL ? " SEAL" : "");
	/*
	 * Pages beyond the end (fallocate with FALLOC_FL_KEEP_SIZE before F_SEAL_GROW) count in
	 * st_blocks and would hide a hole inside from the count below. Nobody can map them, and
	 * with F_SEAL_GROW nobody can allocate there again: drop them (holes are punched, never
	 * filled, so this allocates nothing).
	 */
	if (st.st_size >= 0 && (uint64_t)st.st_size < (uint64_t)INT64_MAX &&
	    fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, st.st_size,
		      INT64_MAX - st.st_size) == 0)
		(void)fstat(fd, &st);
	if ((uint64_t)st.st_size != size)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "memfd: %jd bytes, the spec needs exactly %zu (its size "
					 "rounded up to the page size)",
					 (intmax_t)st.st_size, size);
	/*
	 * Exactly size bytes allocated: fewer is a hole that udmabuf would fill (in the context
	 * of whoever creates it) or the other holders would fault in; more is a huge page
	 * reaching past the end (shmem_enabled=always), which the punch above cannot split.
	 */
	if (allocated_bytes(&st) != size)
		return sd_bus_error_setf(
			error, DB_ERROR_INVALID_ARGUMENT,
			"memfd: %" PRIu64 " of its %zu bytes are allocated; allocate every page "
			"(fallocate) and nothing beyond its end before handing it over: the "
			"daemon does not fault in memory a client is to pay for",
			allocated_bytes(&st), size);
	return 0;
}

bool db_client_memfd_whole(int fd, size_t size)
{
	struct stat st;

	return fstat(fd, &st) == 0 && (uint64_t)st.st_size == size && allocated_bytes(&st) == size;
}

void db_daemon_memfd_reclaim(int fd, size_t size)
{
	/* Seals allow it (no write seal); best effort: the fd is closed right after. */
	(void)fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)size);
}

int db_copy_from_memfd(void *dst, int src, size_t size)
{
	size_t done = 0;

	while (done < size) {
		ssize_t n = pread(src, (char *)dst + done, size - done, (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0) {
			/* Cannot happen with F_SEAL_SHRINK; zeros rather than a short copy. */
			memset((char *)dst + done, 0, size - done);
			break;
		}
		done += (size_t)n;
	}
	return 0;
}

/* --- udmabuf creation in the client's memory cgroup --- */

#define CGROUP_ROOT "/sys/fs/cgroup"

struct helper {
	struct db_broker *broker;
	uint64_t client_id; /* the client may leave meanwhile: looked up again at the end */
	sd_bus_message *call; /* answered when the helper is done */
	struct db_alloc_plan plan; /* its strings point into call, which we keep */
	db_memfd_admitted_fn admitted;
	int memfd; /* a dup of the client's memfd, owned: checked again at the end */
	int sock; /* our end of the socket the helper sends the udmabuf on, owned */
	int pidfd; /* the helper, owned; readable once it exits */
	bool reaped, timed_out;
	sd_event_source *exit_source;
	sd_event_source *timeout;
};

static GList *helpers; /* struct helper *, one daemon per process */

static void helper_free(struct helper *h)
{
	if (!h)
		return;
	if (h->pidfd >= 0 && !h->reaped) {
		siginfo_t si;

		/* At exit: kill it; whoever inherits it reaps it if we do not get to. */
		(void)syscall(SYS_pidfd_send_signal, h->pidfd, SIGKILL, NULL, 0);
		(void)waitid((idtype_t)P_PIDFD, (id_t)h->pidfd, &si, WEXITED | WNOHANG | __WALL);
	}
	sd_event_source_disable_unref(h->exit_source);
	sd_event_source_disable_unref(h->timeout);
	sd_bus_message_unref(h->call);
	if (h->memfd >= 0)
		close(h->memfd);
	if (h->sock >= 0)
		close(h->sock);
	if (h->pidfd >= 0)
		close(h->pidfd);
	g_free(h);
}

/*
 * The helper's whole life, in the child of clone3: it has its own copy of the daemon's memory
 * (so its page faults are charged to its own cgroup, the client's), calls only system calls,
 * and exits. The memfd and its socket are moved to 0 and 1 and every other fd is closed
 * first, so that it holds no buffer or connection of the daemon's meanwhile (a dma-buf's
 * file count would show it: a buffer released then would linger).
 */
static _Noreturn void helper_main(int memfd, int sock, size_t size)
{
	struct udmabuf_create create = {
		.memfd = 0,
		.flags = UDMABUF_FLAGS_CLOEXEC,
		.offset = 0,
		.size = size,
	};
	char cbuf[CMSG_SPACE(sizeof(int))] = {0};
	int result = 0, dev, fd = -1;
	struct iovec iov = {&result, sizeof(result)};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};

	if (dup2(memfd, 0) < 0 || dup2(sock, 1) < 0)
		_exit(1);
	(void)syscall(SYS_close_range, 2u, ~0u, 0u);
	dev = open(DB_UDMABUF_DEV, O_RDWR | O_CLOEXEC);
	if (dev < 0)
		result = -errno;
	else if ((fd = ioctl(dev, UDMABUF_CREATE, &create)) < 0)
		result = -errno;
	if (fd >= 0) {
		struct cmsghdr *c;

		mh.msg_control = cbuf;
		mh.msg_controllen = sizeof(cbuf);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	(void)sendmsg(1, &mh, MSG_NOSIGNAL);
	_exit(0);
}

/* Reads the helper's answer: 0 with *ret_fd, or the negative errno it got. */
static int helper_result(struct helper *h, int *ret_fd)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	int result = -EIO;
	struct iovec iov = {&result, sizeof(result)};
	struct msghdr mh = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = cbuf,
		.msg_controllen = sizeof(cbuf),
	};
	int fd = -1;
	ssize_t n;

	n = recvmsg(h->sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	if (n != (ssize_t)sizeof(result))
		return -EIO; /* killed (or died) before answering */
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
		    c->cmsg_len == CMSG_LEN(sizeof(int)))
			memcpy(&fd, CMSG_DATA(c), sizeof(int));
	if (result < 0 || fd < 0 || fd_is_dmabuf(fd) != 1) {
		if (fd >= 0)
			close(fd);
		return result < 0 ? result : -EIO;
	}
	*ret_fd = fd;
	return 0;
}

static void helper_reply_error(struct helper *h, sd_bus_error *error, int r)
{
	_cleanup_(sd_bus_error_free) sd_bus_error generic = SD_BUS_ERROR_NULL;

	if (!sd_bus_error_is_set(error)) {
		sd_bus_error_setf(&generic, db_error_name_for_errno(r),
				  "AllocateWithMemfd failed: %s", strerror(-r));
		error = &generic;
	}
	/* The caller may be gone: then there is nobody to tell. */
	(void)sd_bus_reply_method_error(h->call, error);
}

static void helper_finish(struct helper *h, int r, int fd)
{
	_cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
	struct db_broker *b = h->broker;
	struct db_client *c = db_registry_find_client(b->reg, h->client_id);

	helpers = g_list_remove(helpers, h);
	if (r == -ETIME)
		sd_bus_error_setf(&error, DB_ERROR_BUSY,
				  "udmabuf did not pin the memfd's %zu bytes within %d s (in the "
				  "caller's memory cgroup, which may be at its memory.high or "
				  "memory.max); nothing was made",
				  h->plan.size, DB_UDMABUF_HELPER_TIMEOUT_SEC);
	else if (r == -ENOMEM)
		sd_bus_error_setf(&error, DB_ERROR_NO_MEMORY,
				  "udmabuf could not pin the memfd's %zu bytes", h->plan.size);
	else if (r < 0)
		sd_bus_error_setf(&error, DB_ERROR_INVALID_ARGUMENT,
				  "udmabuf refused the memfd: %s", strerror(-r));
	else if (!db_client_memfd_whole(h->memfd, h->plan.size)) {
		/* Whatever udmabuf filled was charged to the caller; still, refuse the trick. */
		r = -EINVAL;
		sd_bus_error_setf(&error, DB_ERROR_INVALID_ARGUMENT,
				  "memfd: a hole was punched in it while it was handed over");
	} else if (!c) {
		r = -ENOENT;
		sd_bus_error_setf(&error, DB_ERROR_NOT_REGISTERED, "the caller left");
	}
	if (r < 0) {
		if (fd >= 0)
			close(fd);
		helper_reply_error(h, &error, r);
	} else {
		/* On a peer, the wire takes the answer from sd-bus when it is sent. */
		r = h->admitted(b, h->call, c, &h->plan, fd, &error);
		if (r < 0)
			helper_reply_error(h, &error, r);
	}
	helper_free(h);
}

static int on_helper_exit(sd_event_source *s, int pidfd, uint32_t revents, void *userdata)
{
	struct helper *h = userdata;
	siginfo_t si = {0};
	int fd = -1, r;

	(void)s;
	(void)revents;
	/*
	 * Readable means it exited: this does not wait. An error (nobody else reaps a child
	 * whose exit_signal is 0, but if so) counts as the exit, so that a level-triggered
	 * source cannot spin.
	 */
	if (waitid((idtype_t)P_PIDFD, (id_t)pidfd, &si, WEXITED | WNOHANG | __WALL) == 0 &&
	    si.si_pid == 0)
		return 0;
	h->reaped = true;
	r = h->timed_out ? -ETIME : helper_result(h, &fd);
	helper_finish(h, r, fd);
	return 0;
}

static int on_helper_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct helper *h = userdata;

	(void)s;
	(void)usec;
	/*
	 * A fatal signal ends a charge that memory.high throttles or memory.max refuses; the
	 * call is answered when the helper has exited (on_helper_exit), so the helper is never
	 * left unreaped. Until then only this client's next AllocateWithMemfd is refused.
	 */
	h->timed_out = true;
	(void)syscall(SYS_pidfd_send_signal, h->pidfd, SIGKILL, NULL, 0);
	return 0;
}

/* The client's cgroup v2 directory, opened through its /proc/PID/cgroup line "0::PATH". */
static int open_client_cgroup(pid_t pid, uid_t uid, int pidfd, int *ret_fd)
{
	_cleanup_(freep) char *text = NULL;
	char proc[64], *path, *nl;
	struct stat st;
	int r, fd;

	snprintf(proc, sizeof(proc), "/proc/%d/cgroup", (int)pid);
	r = read_small_file(proc, &text, 8192);
	if (r < 0)
		return r;
	path = strstr(text, "0::/");
	if (!path || (path != text && path[-1] != '\n'))
		return -EOPNOTSUPP; /* no unified hierarchy: cgroup v1 */
	path += 3;
	nl = strchr(path, '\n');
	if (nl)
		*nl = '\0';
	if (strstr(path, "/../") || strstr(path, " (deleted)"))
		return -ESRCH;
	fd = open(CGROUP_ROOT, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	r = path[1] ? openat(fd, path + 1, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
		    : fcntl(fd, F_DUPFD_CLOEXEC, 3);
	close(fd);
	if (r < 0)
		return -errno;
	fd = r;
	/*
	 * The pid is the one the bus gave at Register. The pidfd, opened before /proc was read,
	 * pins the process we read: if it is still alive now, and is the registered uid's,
	 * the cgroup is that process's (a reused pid of another uid is refused).
	 */
	snprintf(proc, sizeof(proc), "/proc/%d", (int)pid);
	if (syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) < 0 || stat(proc, &st) < 0 ||
	    st.st_uid != uid) {
		close(fd);
		return -ESRCH;
	}
	*ret_fd = fd;
	return 0;
}

/* Whether cgroup v2 is mounted where we look: else no memory cgroup charges anybody. */
static bool have_cgroup2(void)
{
	struct statfs sfs;

	return statfs(CGROUP_ROOT, &sfs) == 0 && sfs.f_type == CGROUP2_SUPER_MAGIC;
}

static int spawn_helper(struct helper *h, int cgroup_fd, size_t size)
{
	_cleanup_(closep) int theirs = -1;
	int pair[2], pidfd = -1;
	struct clone_args args = {
		.flags = CLONE_PIDFD | CLONE_INTO_CGROUP,
		.pidfd = (uint64_t)(uintptr_t)&pidfd,
		.exit_signal = 0, /* no SIGCHLD: reaped through the pidfd */
		.cgroup = (uint64_t)cgroup_fd,
	};
	long pid;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
		return -errno;
	h->sock = pair[0];
	theirs = pair[1];
	pid = syscall(SYS_clone3, &args, sizeof(args));
	if (pid < 0)
		return -errno;
	if (pid == 0)
		helper_main(h->memfd, theirs, size);
	h->pidfd = pidfd;
	return 0;
}

/*
 * The udmabuf made by the daemon itself, the memfd checked whole before (by the caller) and
 * after. Where there is no memory cgroup to charge, nothing is misdirected. Where the daemon
 * may not start a process in the caller's cgroup (the shipped unit runs as its own user,
 * without capabilities, with the cgroup tree read-only), a hole punched between the check
 * and UDMABUF_CREATE is filled in the daemon's context: at most the buffer's size, for the
 * buffer's life, and counted against its owner's byte quotas like every buffer.
 */
static int create_here(struct db_broker *b, sd_bus_message *m, struct db_client *c, int memfd,
		       const struct db_alloc_plan *plan, db_memfd_admitted_fn admitted,
		       sd_bus_error *error)
{
	_cleanup_(closep) int fd = -1;
	int r;

	r = db_udmabuf_create(memfd, plan->size, &fd);
	if (r == -ENOMEM)
		return sd_bus_error_setf(error, DB_ERROR_NO_MEMORY,
					 "udmabuf could not pin the memfd's %zu bytes", plan->size);
	if (r < 0)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "udmabuf refused the memfd: %s", strerror(-r));
	if (!db_client_memfd_whole(memfd, plan->size))
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "memfd: a hole was punched in it while it was handed over");
	return admitted(b, m, c, plan, take_fd(&fd), error);
}

static void note_no_helper(const char *why)
{
	static bool told;

	if (!told)
		log_notice("udmabufs of handed-over memfds are made by the daemon itself (%s): a "
			   "hole punched while one is made is charged to the daemon, within the "
			   "owner's byte quotas",
			   why);
	told = true;
}

int db_client_udmabuf_admit(struct db_broker *b, sd_bus_message *m, struct db_client *c, int memfd,
			    const struct db_alloc_plan *plan, db_memfd_admitted_fn admitted,
			    sd_bus_error *error)
{
	_cleanup_(closep) int client_pidfd = -1, cgroup_fd = -1;
	struct helper *h;
	unsigned mine = 0;
	int r;

	/* No memory cgroup to charge: nothing to misdirect. */
	if (!have_cgroup2())
		return create_here(b, m, c, memfd, plan, admitted, error);
	for (GList *l = helpers; l; l = l->next)
		mine += ((struct helper *)l->data)->client_id == c->id;
	if (mine >= DB_UDMABUF_HELPERS_PER_CLIENT ||
	    g_list_length(helpers) >= DB_UDMABUF_HELPERS_MAX)
		return sd_bus_error_setf(error, DB_ERROR_BUSY,
					 "%u of the caller's AllocateWithMemfd calls are under way "
					 "(%d at most per client, %d in all); try again",
					 mine, DB_UDMABUF_HELPERS_PER_CLIENT,
					 DB_UDMABUF_HELPERS_MAX);
	client_pidfd = c->pid > 0 ? (int)syscall(SYS_pidfd_open, c->pid, 0) : -1;
	r = client_pidfd < 0 ? -ESRCH
			     : open_client_cgroup(c->pid, c->uid, client_pidfd, &cgroup_fd);
	/*
	 * The caller is alive (its pidfd opened) but its cgroup cannot be read: the shipped unit
	 * hides other users' /proc entries (ProtectProc=invisible: ENOENT) and may not open their
	 * cgroups. The daemon makes the udmabuf itself then.
	 */
	if (r < 0 && client_pidfd >= 0) {
		note_no_helper("the caller's cgroup cannot be read");
		return create_here(b, m, c, memfd, plan, admitted, error);
	}
	if (r < 0)
		return sd_bus_error_setf(error, DB_ERROR_PERMISSION_DENIED,
					 "the caller's memory cgroup cannot be found (pid %d: %s): "
					 "its memory would be charged to the daemon",
					 (int)c->pid, strerror(-r));

	h = g_new0(struct helper, 1);
	h->broker = b;
	h->client_id = c->id;
	h->plan = *plan;
	h->admitted = admitted;
	h->sock = h->pidfd = -1;
	h->memfd = fd_dup_cloexec(memfd);
	r = h->memfd < 0 ? h->memfd : spawn_helper(h, cgroup_fd, plan->size);
	if (r < 0) {
		helper_free(h);
		/* ENOSYS: no clone3 (valgrind does not know it either). EACCES, EPERM: the
		 * daemon may not place a process in that cgroup (the shipped unit). */
		if (r == -EACCES || r == -EPERM || r == -EBUSY || r == -EOPNOTSUPP || r == -ENOSYS ||
		    r == -EROFS) {
			note_no_helper("it may not start a process in the caller's cgroup");
			return create_here(b, m, c, memfd, plan, admitted, error);
		}
		return r;
	}
	r = sd_event_add_io(b->event, &h->exit_source, h->pidfd, EPOLLIN, on_helper_exit, h);
	if (r >= 0)
		r = sd_event_add_time_relative(b->event, &h->timeout, CLOCK_MONOTONIC,
					       DB_UDMABUF_HELPER_TIMEOUT_SEC * 1000000ull, 0,
					       on_helper_timeout, h);
	if (r < 0) {
		helper_free(h);
		return r;
	}
	h->call = sd_bus_message_ref(m);
	helpers = g_list_prepend(helpers, h);
	return 1;
}

void db_client_memory_free(struct db_broker *b)
{
	(void)b;
	g_list_free_full(helpers, (GDestroyNotify)helper_free);
	helpers = NULL;
}
