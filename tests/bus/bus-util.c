// SPDX-License-Identifier: MIT
#include "bus-util.h"

#include <errno.h>
#include <poll.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bus-open.h"
#include "fixture.h"
#include "macros.h"
#include "protocol.h"

static void exec_client(const char *const *argv, bool as_nobody)
{
	char path[512];
	const char *args[32];
	int n = 0;

	fixture_build_path(argv[0], path, sizeof(path));
	if (as_nobody) {
		args[n++] = "setpriv";
		args[n++] = "--reuid=65534";
		args[n++] = "--regid=65534";
		args[n++] = "--clear-groups";
		args[n++] = "--";
	}
	args[n++] = path;
	for (int i = 1; argv[i] && n < 31; i++)
		args[n++] = argv[i];
	args[n] = NULL;
	execvp(args[0], (char *const *)args);
	fprintf(stderr, "exec %s: %m\n", args[0]);
	_exit(127);
}

int run_client(const char *const *argv, bool as_nobody, char *out, size_t len)
{
	int pipefd[2], status;
	size_t got = 0;
	ssize_t n;
	pid_t pid;

	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid == 0) {
		dup2(pipefd[1], STDOUT_FILENO);
		exec_client(argv, as_nobody);
	}
	close(pipefd[1]);
	while (got + 1 < len && (n = read(pipefd[0], out + got, len - 1 - got)) > 0)
		got += (size_t)n;
	out[got] = '\0';
	close(pipefd[0]);
	if (waitpid(pid, &status, 0) != pid)
		return -errno;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

pid_t start_client(const char *const *argv, int *ret_out, int *ret_in, char *line, size_t len)
{
	int out[2], in[2];
	size_t got = 0;
	pid_t pid;
	char c;

	if (pipe2(out, O_CLOEXEC) < 0 || pipe2(in, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid == 0) {
		dup2(out[1], STDOUT_FILENO);
		dup2(in[0], STDIN_FILENO);
		exec_client(argv, false);
	}
	close(out[1]);
	close(in[0]);
	while (got + 1 < len && read(out[0], &c, 1) == 1 && c != '\n')
		line[got++] = c;
	line[got] = '\0';
	*ret_out = out[0];
	*ret_in = in[1];
	return pid;
}

pid_t spawn_client(const char *const *argv, bool as_nobody, int *ret_out)
{
	int out[2];
	pid_t pid;

	if (pipe2(out, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid == 0) {
		dup2(out[1], STDOUT_FILENO);
		exec_client(argv, as_nobody);
	}
	close(out[1]);
	*ret_out = out[0];
	return pid;
}

sd_bus *inspect_bus(void)
{
	sd_bus *bus = NULL;
	const char *unique;

	if (db_bus_open_address(getenv(DB_ENV_BUS_ADDRESS), &bus) < 0)
		return NULL;
	/*
	 * Finish authenticating now (the unique name waits for Hello's reply): dbus-daemon
	 * drops a connection still unauthenticated after 30 s, and a test may open this one
	 * long before its first call (the hostile test's warm-up, on a loaded TCG guest).
	 */
	if (sd_bus_get_unique_name(bus, &unique) < 0)
		return sd_bus_flush_close_unref(bus);
	return bus;
}

bool buffer_pinned(sd_bus *bus, const char *path)
{
	int pinned = 0;

	sd_bus_get_property_trivial(bus, DB_BUS_NAME, path, DB_IFACE_BUFFER, "Pinned", NULL, 'b',
				    &pinned);
	return pinned;
}

int buffer_attachments(sd_bus *bus, const char *path)
{
	sd_bus_message *m = NULL;
	const char *client, *p;
	int dyn, n = 0;

	if (sd_bus_get_property(bus, DB_BUS_NAME, path, DB_IFACE_BUFFER, "Attachments", NULL, &m,
				"a(osb)") < 0)
		return -1;
	sd_bus_message_enter_container(m, 'a', "(osb)");
	while (sd_bus_message_read(m, "(osb)", &client, &p, &dyn) > 0)
		n++;
	sd_bus_message_unref(m);
	return n;
}

uint32_t broker_u32(sd_bus *bus, const char *property)
{
	uint32_t v = UINT32_MAX;

	sd_bus_get_property_trivial(bus, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER, property,
				    NULL, 'u', &v);
	return v;
}

int debugfs_dmabuf_objects(void)
{
	FILE *f = fopen("/sys/kernel/debug/dma_buf/bufinfo", "re");
	char line[256];
	int n = -1;

	if (!f)
		return -1;
	/* The last line is the total; each buffer's own block has a "Total N devices attached"
	 * line that a plain "Total %d" would also take. */
	while (fgets(line, sizeof(line), f)) {
		int v, end = 0;

		if (sscanf(line, "Total %d objects%n", &v, &end) == 1 && end > 0)
			n = v;
	}
	fclose(f);
	return n;
}

void read_until_quiet(int fd, char *out, size_t len, int quiet_ms)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	size_t got = 0;

	while (got + 1 < len && poll(&pfd, 1, quiet_ms) == 1) {
		ssize_t n = read(fd, out + got, len - 1 - got);

		if (n <= 0)
			break;
		got += (size_t)n;
	}
	out[got] = '\0';
}

int broker_callv(sd_bus *bus, const char *member, sd_bus_error *error, sd_bus_message **reply,
		 const char *types, va_list ap)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	int r;

	r = sd_bus_message_new_method_call(bus, &m, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
					   member);
	if (r >= 0 && types)
		r = sd_bus_message_appendv(m, types, ap);
	if (r < 0)
		return r;
	r = sd_bus_call(bus, m, 5 * 1000000ull, error, reply);
	return r < 0 ? r : 0;
}

int broker_call(sd_bus *bus, const char *member, sd_bus_error *error, sd_bus_message **reply,
		const char *types, ...)
{
	va_list ap;
	int r;

	va_start(ap, types);
	r = broker_callv(bus, member, error, reply, types, ap);
	va_end(ap);
	return r;
}

int find_peer_socket(void)
{
	for (int fd = 3; fd < 1024; fd++) {
		struct sockaddr_un sa;
		socklen_t len = sizeof(sa);
		int domain;
		socklen_t dlen = sizeof(domain);

		if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &dlen) < 0 || domain != AF_UNIX)
			continue;
		/* A socket pair's end: connected, with no address. */
		if (getpeername(fd, (struct sockaddr *)&sa, &len) == 0 &&
		    len <= sizeof(sa_family_t))
			return fd;
	}
	return -1;
}
