// SPDX-License-Identifier: MIT
#include "fixture.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <systemd/sd-bus.h>

#include "bus-open.h"
#include "fd-util.h"
#include "protocol.h"

static const char bus_config[] =
	"<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n"
	" \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
	"<busconfig>\n"
	"  <type>session</type>\n"
	"  <listen>unix:dir=%s</listen>\n"
	"  <auth>EXTERNAL</auth>\n"
	/* Other uids connect too: the privacy tests run a client as nobody. */
	"  <policy context=\"default\">\n"
	"    <allow user=\"*\"/>\n"
	"    <allow own=\"*\"/>\n"
	"    <allow send_destination=\"*\" eavesdrop=\"true\"/>\n"
	"    <allow eavesdrop=\"true\"/>\n"
	"  </policy>\n"
	"%s"
	"</busconfig>\n";

const char *fixture_bus_limits;
const char *const *fixture_daemon_args;
void (*fixture_daemon_setup)(void);
/* Set only while the daemon is spawned. */
static void (*spawn_setup)(void);

const char *fixture_build_path(const char *relative, char *out, size_t len)
{
	const char *root = getenv("DMABROKER_BUILD_ROOT");

	snprintf(out, len, "%s/%s", root ? root : ".", relative);
	return out;
}

static int write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "we");

	if (!f)
		return -errno;
	fputs(text, f);
	return fclose(f) == 0 ? 0 : -errno;
}

int fixture_write_config(struct fixture *f, const char *config_text)
{
	return write_file(f->config, config_text ? config_text : "");
}

static void msleep(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

static int open_bus(struct fixture *f, sd_bus **ret)
{
	return db_bus_open_address(f->address, ret);
}

static bool daemon_answers(struct fixture *f)
{
	sd_bus *bus = NULL;
	char *version = NULL;
	bool ok;

	if (open_bus(f, &bus) < 0)
		return false;
	ok = sd_bus_get_property_string(bus, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER,
					"Version", NULL, &version) >= 0;
	free(version);
	sd_bus_flush_close_unref(bus);
	return ok;
}

bool fixture_wait_clients(struct fixture *f, unsigned n, int timeout_ms)
{
	for (int waited = 0; waited <= timeout_ms; waited += 20) {
		sd_bus *bus = NULL;
		uint32_t count = 0;
		int r = open_bus(f, &bus);

		if (r >= 0)
			r = sd_bus_get_property_trivial(bus, DB_BUS_NAME, DB_OBJECT_PATH,
							DB_IFACE_BROKER, "NClients", NULL, 'u',
							&count);
		sd_bus_flush_close_unref(bus);
		if (r >= 0 && count == n)
			return true;
		msleep(20);
	}
	return false;
}

static pid_t spawn(char *const argv[], int stdout_fd)
{
	pid_t pid = fork();

	if (pid == 0) {
		/* Die with the test, even if a sanitizer aborts it: meson waits for our output. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (stdout_fd >= 0)
			dup2(stdout_fd, STDOUT_FILENO);
		if (spawn_setup)
			spawn_setup();
		execvp(argv[0], argv);
		fprintf(stderr, "exec %s: %m\n", argv[0]);
		_exit(127);
	}
	return pid;
}

/* A test that bails out must not leave a bus or daemon behind (meson would wait on them). */
static struct fixture *running;

static void kill_leftovers(void)
{
	if (running && running->daemon_pid > 0)
		kill(running->daemon_pid, SIGKILL);
	if (running && running->bus_pid > 0)
		kill(running->bus_pid, SIGKILL);
}

/* Starts the daemon on f's bus and waits until it answers. */
static int start_daemon(struct fixture *f)
{
	char daemon_path[512], address_arg[600], config_arg[320], *wrapper_argv[32];
	const char *wrapper = getenv("DMABROKER_TEST_WRAPPER");
	char *wrapper_copy = NULL, *saveptr = NULL, *tok;
	int n = 0;

	fixture_build_path("daemon/dmabrokerd", daemon_path, sizeof(daemon_path));
	snprintf(address_arg, sizeof(address_arg), "--address=%s", f->address);
	snprintf(config_arg, sizeof(config_arg), "--config=%s", f->config);
	if (wrapper && *wrapper) {
		wrapper_copy = strdup(wrapper);
		for (tok = strtok_r(wrapper_copy, " ", &saveptr); tok && n < 24;
		     tok = strtok_r(NULL, " ", &saveptr))
			wrapper_argv[n++] = tok;
	}
	wrapper_argv[n++] = daemon_path;
	wrapper_argv[n++] = address_arg;
	wrapper_argv[n++] = config_arg;
	if (getenv("DMABROKER_TEST_VERBOSE"))
		wrapper_argv[n++] = "--verbose";
	for (size_t i = 0; fixture_daemon_args && fixture_daemon_args[i] && n < 30; i++)
		wrapper_argv[n++] = (char *)fixture_daemon_args[i];
	wrapper_argv[n] = NULL;
	spawn_setup = fixture_daemon_setup;
	f->daemon_pid = spawn(wrapper_argv, -1);
	spawn_setup = NULL;
	free(wrapper_copy);
	/* Valgrind takes seconds to start the daemon. */
	for (int waited = 0; waited < 60000; waited += 20) {
		if (daemon_answers(f))
			return 0;
		if (waitpid(f->daemon_pid, NULL, WNOHANG) == f->daemon_pid) {
			f->daemon_pid = 0;
			return -ECHILD;
		}
		msleep(20);
	}
	return -ETIMEDOUT;
}

void fixture_wrap_self(char **argv)
{
	const char *wrapper = getenv("DMABROKER_TEST_CLIENT_WRAPPER");
	char *copy, *saveptr = NULL, *tok, *args[64];
	int n = 0;

	if (!wrapper || !*wrapper || getenv("DMABROKER_TEST_CLIENT_WRAPPED"))
		return;
	setenv("DMABROKER_TEST_CLIENT_WRAPPED", "1", 1);
	copy = strdup(wrapper);
	for (tok = strtok_r(copy, " ", &saveptr); tok && n < 48;
	     tok = strtok_r(NULL, " ", &saveptr))
		args[n++] = tok;
	for (size_t i = 0; argv[i] && n < 63; i++)
		args[n++] = argv[i];
	args[n] = NULL;
	execvp(args[0], args);
	fprintf(stderr, "exec %s: %m\n", args[0]);
	free(copy);
}

int fixture_restart_daemon(struct fixture *f)
{
	return start_daemon(f);
}

int fixture_kill_daemon(struct fixture *f, int sig)
{
	int status = 0;

	if (f->daemon_pid <= 0)
		return -1;
	kill(f->daemon_pid, sig);
	if (waitpid(f->daemon_pid, &status, 0) != f->daemon_pid)
		return -1;
	f->daemon_pid = 0;
	return status;
}

int fixture_start(struct fixture *f, const char *config_text)
{
	char conf_path[300], text[2048];
	int pipefd[2];
	ssize_t len;

	memset(f, 0, sizeof(*f));
	if (!running)
		atexit(kill_leftovers);
	running = f;
	snprintf(f->dir, sizeof(f->dir), "%s/dmabroker-test-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(f->dir))
		return -errno;
	/* Clients running as another uid must reach the socket. */
	chmod(f->dir, 0755);
	snprintf(conf_path, sizeof(conf_path), "%s/bus.conf", f->dir);
	snprintf(text, sizeof(text), bus_config, f->dir,
		 fixture_bus_limits ? fixture_bus_limits : "");
	if (write_file(conf_path, text) < 0)
		return -EIO;
	snprintf(f->config, sizeof(f->config), "%s/dmabroker.conf", f->dir);
	if (fixture_write_config(f, config_text) < 0)
		return -EIO;

	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return -errno;
	{
		char config_file_arg[320];
		char *argv[] = {"dbus-daemon", config_file_arg, "--nofork", "--print-address=1",
				NULL};

		snprintf(config_file_arg, sizeof(config_file_arg), "--config-file=%s", conf_path);
		f->bus_pid = spawn(argv, pipefd[1]);
	}
	close(pipefd[1]);
	len = read(pipefd[0], f->address, sizeof(f->address) - 1);
	close(pipefd[0]);
	if (len <= 0)
		return -EIO;
	f->address[len] = '\0';
	f->address[strcspn(f->address, "\n")] = '\0';
	setenv(DB_ENV_BUS_ADDRESS, f->address, 1);

	return start_daemon(f);
}

int fixture_stop_daemon(struct fixture *f)
{
	int status;

	if (f->daemon_pid <= 0)
		return -1;
	kill(f->daemon_pid, SIGTERM);
	if (waitpid(f->daemon_pid, &status, 0) != f->daemon_pid)
		return -1;
	f->daemon_pid = 0;
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return 128 + WTERMSIG(status);
}

int fixture_stop(struct fixture *f)
{
	int status = fixture_stop_daemon(f);
	char cmd[300];

	/* main()'s fixture is gone once main returns: the exit handler must not look at it. */
	if (running == f)
		running = NULL;

	if (f->bus_pid > 0) {
		kill(f->bus_pid, SIGTERM);
		waitpid(f->bus_pid, NULL, 0);
		f->bus_pid = 0;
	}
	if (f->dir[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", f->dir);
	}
	return status;
}

int fixture_daemon_fds(struct fixture *f)
{
	return proc_count_fds(f->daemon_pid);
}
