// SPDX-License-Identifier: MIT
/*
 * dmabrokerd: hands out dma-bufs to clients over D-Bus, tracks who holds what, and applies
 * the kernel's dynamic/static attachment rule to every share.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <systemd/sd-daemon.h>

#include "broker.h"
#include "bus-open.h"
#include "bus-creds.h"
#include "bus-objects.h"
#include "errors.h"
#include "fdstore.h"
#include "log.h"
#include "macros.h"
#include "monitor.h"
#include "protocol.h"
#include "wait-guard.h"

enum bus_kind {
	BUS_SYSTEM,
	BUS_USER,
	BUS_ADDRESS,
};

struct options {
	enum bus_kind bus;
	const char *address;
	const char *config;
	bool fdstore;
	int log_level;
};

static void usage(FILE *f)
{
	fprintf(f, "Usage: dmabrokerd [OPTION...]\n"
		   "Brokers dma-buf sharing between GPU, media and CPU clients over D-Bus.\n\n"
		   "  --system          serve on the system bus (the default)\n"
		   "  --user            serve on the session bus\n"
		   "  --address=ADDR    serve on the bus at the given D-Bus address\n"
		   "  --config=FILE     configuration file (default " DB_CONFIG_FILE ")\n"
		   "  --fd-store        keep buffers in systemd's fd store across restarts\n"
		   "  --verbose         log debug messages\n"
		   "  --version         print the version and exit\n"
		   "  --help            print this help and exit\n");
}

static int parse_args(int argc, char **argv, struct options *o)
{
	enum {
		OPT_SYSTEM = 0x100,
		OPT_USER,
		OPT_ADDRESS,
		OPT_CONFIG,
		OPT_FDSTORE,
		OPT_VERBOSE,
		OPT_VERSION
	};
	static const struct option longopts[] = {
		{"system", no_argument, NULL, OPT_SYSTEM},
		{"user", no_argument, NULL, OPT_USER},
		{"address", required_argument, NULL, OPT_ADDRESS},
		{"config", required_argument, NULL, OPT_CONFIG},
		{"fd-store", no_argument, NULL, OPT_FDSTORE},
		{"verbose", no_argument, NULL, OPT_VERBOSE},
		{"version", no_argument, NULL, OPT_VERSION},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	int c;

	*o = (struct options){
		.bus = BUS_SYSTEM, .config = DB_CONFIG_FILE, .log_level = DB_LOG_INFO};
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_SYSTEM:
			o->bus = BUS_SYSTEM;
			break;
		case OPT_USER:
			o->bus = BUS_USER;
			break;
		case OPT_ADDRESS:
			o->bus = BUS_ADDRESS;
			o->address = optarg;
			break;
		case OPT_CONFIG:
			o->config = optarg;
			break;
		case OPT_FDSTORE:
			o->fdstore = true;
			break;
		case OPT_VERBOSE:
			o->log_level = DB_LOG_DEBUG;
			break;
		case OPT_VERSION:
			printf("dmabrokerd %s\n", DMABROKER_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		usage(stderr);
		return -EINVAL;
	}
	return 1;
}

static int connect_bus(const struct options *o, sd_bus **ret)
{
	if (o->bus == BUS_SYSTEM)
		return sd_bus_open_system_with_description(ret, "dmabrokerd");
	if (o->bus == BUS_USER)
		return sd_bus_open_user_with_description(ret, "dmabrokerd");
	return db_bus_open_address(o->address, ret);
}

/* A client that leaves the bus loses everything at once, even mid-call. */
static int on_name_owner_changed(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct db_broker *b = userdata;
	const char *name, *old_owner, *new_owner;
	struct db_client *c;

	(void)error;
	/*
	 * Only the bus itself may say a name left. Anyone can send a signal that looks like
	 * this one (as a unicast to us, which no match rule filters): believed, it would evict
	 * any client.
	 */
	if (!streq_ptr(sd_bus_message_get_sender(m), "org.freedesktop.DBus"))
		return 0;
	if (sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) < 0)
		return 0;
	if (new_owner[0] || name[0] != ':')
		return 0;
	db_monitor_name_gone(b, name);
	db_bus_creds_forget(b->creds, name);
	c = db_registry_find_client_by_name(b->reg, name);
	if (!c)
		return 0;
	log_debug("Client %" PRIu64 " (%s) left: dropping %u attachment(s) and %" PRIu64
		  " token(s)",
		  c->id, name, c->attachments->len, c->n_tokens);
	db_registry_remove_client(b->reg, c);
	return 0;
}

static int on_udev(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct db_broker *b = userdata;

	(void)s;
	(void)fd;
	(void)revents;
	db_devices_process(b->devices);
	return 0;
}

static int on_sighup(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
	struct db_broker *b = userdata;

	(void)s;
	(void)si;
	sd_notify(0, "RELOADING=1\nSTATUS=Reloading the configuration");
	db_broker_reload(b);
	sd_notifyf(0, "READY=1\nSTATUS=Serving %u client(s), %u buffer(s)",
		   db_registry_n_clients(b->reg), db_registry_n_buffers(b->reg));
	return 0;
}

static int on_exit_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
	(void)userdata;
	log_info("Stopping on %s", strsignal((int)si->ssi_signo));
	return sd_event_exit(sd_event_source_get_event(s), 0);
}

/* Buffers are fds: allow as many as the hard limit, as systemd's own services do. */
static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static int run(const struct options *o)
{
	_cleanup_(sd_event_unrefp) sd_event *event = NULL;
	/* Closed without a flush at exit: a frozen bus must not hold the stop either. */
	_cleanup_(sd_bus_close_unrefp) sd_bus *bus = NULL;
	struct db_broker *b = NULL;
	sigset_t mask;
	int r;

	raise_fd_limit();
	db_errors_register();
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	/* A client closing its socket mid-reply must not kill the daemon. */
	signal(SIGPIPE, SIG_IGN);

	r = sd_event_default(&event);
	if (r < 0)
		goto fail;
	r = connect_bus(o, &bus);
	if (r < 0) {
		log_error("Failed to connect to the bus: %s", strerror(-r));
		return r;
	}
	r = db_broker_new(&b, event, bus, o->config);
	if (r < 0)
		return r;
	b->fdstore = o->fdstore;

	r = sd_event_add_signal(event, NULL, SIGTERM, on_exit_signal, b);
	if (r >= 0)
		r = sd_event_add_signal(event, NULL, SIGINT, on_exit_signal, b);
	if (r >= 0)
		r = sd_event_add_signal(event, NULL, SIGHUP, on_sighup, b);
	/* Pings WATCHDOG=1 from the loop when the service sets WatchdogSec=. */
	if (r >= 0)
		r = sd_event_set_watchdog(event, 1);
	if (r < 0)
		goto fail;
	if (b->devices && db_devices_get_fd(b->devices) >= 0) {
		r = sd_event_add_io(event, &b->udev_source, db_devices_get_fd(b->devices), EPOLLIN,
				    on_udev, b);
		if (r < 0)
			goto fail;
	}

	/* Match before taking the name, so no client can register before we see it leave. */
	r = sd_bus_match_signal(bus, NULL, "org.freedesktop.DBus", "/org/freedesktop/DBus",
				"org.freedesktop.DBus", "NameOwnerChanged", on_name_owner_changed,
				b);
	if (r < 0)
		goto fail;
	r = db_broker_add_objects(b, bus);
	if (r < 0)
		goto fail;
	db_broker_probe_kernel_report(b);
	r = db_fdstore_restore(b);
	if (r < 0)
		log_warning("Failed to restore from the fd store: %s", strerror(-r));
	r = sd_bus_attach_event(bus, event, SD_EVENT_PRIORITY_NORMAL);
	if (r < 0)
		goto fail;
	r = sd_bus_request_name(bus, DB_BUS_NAME, 0);
	if (r < 0) {
		log_error("Failed to own %s: %s", DB_BUS_NAME, strerror(-r));
		goto out;
	}
	sd_notifyf(0, "READY=1\nSTATUS=Serving %u client(s), %u buffer(s)",
		   db_registry_n_clients(b->reg), db_registry_n_buffers(b->reg));
	log_info("Serving %s (version %s)", DB_BUS_NAME, DMABROKER_VERSION);

	/* From here on nothing may wait for anyone (wait-guard.h). */
	db_wait_guard_set_serving(true);
	r = sd_event_loop(event);
	db_wait_guard_set_serving(false);
	if (r < 0)
		goto fail;
	sd_notify(0, "STOPPING=1\nSTATUS=Stopping");
	/* The journal is complete already: what is freed below stays in the store. */
	db_fdstore_stop(b);
	b->fdstore = false;
	r = 0;
	goto out;
fail:
	log_error("Failed to run: %s", strerror(-r));
out:
	db_broker_free(b);
	if (bus)
		sd_bus_detach_event(bus);
	return r;
}

int main(int argc, char **argv)
{
	struct options o;
	int r;

	r = parse_args(argc, argv, &o);
	if (r <= 0)
		return r < 0 ? 2 : 0;
	db_log_init(o.log_level);
	r = run(&o);
	return r < 0 ? 1 : 0;
}
