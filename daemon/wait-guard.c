// SPDX-License-Identifier: MIT
#include "wait-guard.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <systemd/sd-bus.h>

static bool serving;

void db_wait_guard_set_serving(bool on)
{
	serving = on;
}

bool db_wait_guard_serving(void)
{
	return serving;
}

#ifdef DB_WAIT_GUARD
/* Calls that wait for another process's answer. A peer connection is not a bus client, so
 * a match on it is local and does not wait: only bus clients are refused there. */
static void refuse(const char *what)
{
	fprintf(stderr, "dmabrokerd: %s called while serving: the daemon must never wait\n", what);
	abort();
}

#define GUARD(what)                   \
	do {                          \
		if (serving)          \
			refuse(what); \
	} while (0)

int __real_sd_bus_call(sd_bus *bus, sd_bus_message *m, uint64_t usec, sd_bus_error *ret_error,
		       sd_bus_message **reply);
int __wrap_sd_bus_call(sd_bus *bus, sd_bus_message *m, uint64_t usec, sd_bus_error *ret_error,
		       sd_bus_message **reply);
int __wrap_sd_bus_call(sd_bus *bus, sd_bus_message *m, uint64_t usec, sd_bus_error *ret_error,
		       sd_bus_message **reply)
{
	GUARD("sd_bus_call");
	return __real_sd_bus_call(bus, m, usec, ret_error, reply);
}

int __real_sd_bus_call_methodv(sd_bus *bus, const char *destination, const char *path,
			       const char *interface, const char *member, sd_bus_error *ret_error,
			       sd_bus_message **reply, const char *types, va_list ap);
int __wrap_sd_bus_call_methodv(sd_bus *bus, const char *destination, const char *path,
			       const char *interface, const char *member, sd_bus_error *ret_error,
			       sd_bus_message **reply, const char *types, va_list ap);
int __wrap_sd_bus_call_methodv(sd_bus *bus, const char *destination, const char *path,
			       const char *interface, const char *member, sd_bus_error *ret_error,
			       sd_bus_message **reply, const char *types, va_list ap)
{
	GUARD("sd_bus_call_methodv");
	return __real_sd_bus_call_methodv(bus, destination, path, interface, member, ret_error,
					  reply, types, ap);
}

int __wrap_sd_bus_call_method(sd_bus *bus, const char *destination, const char *path,
			      const char *interface, const char *member, sd_bus_error *ret_error,
			      sd_bus_message **reply, const char *types, ...);
int __wrap_sd_bus_call_method(sd_bus *bus, const char *destination, const char *path,
			      const char *interface, const char *member, sd_bus_error *ret_error,
			      sd_bus_message **reply, const char *types, ...)
{
	va_list ap;
	int r;

	GUARD("sd_bus_call_method");
	va_start(ap, types);
	r = __real_sd_bus_call_methodv(bus, destination, path, interface, member, ret_error, reply,
				       types, ap);
	va_end(ap);
	return r;
}

int __real_sd_bus_get_property(sd_bus *bus, const char *destination, const char *path,
			       const char *interface, const char *member, sd_bus_error *ret_error,
			       sd_bus_message **reply, const char *type);
int __wrap_sd_bus_get_property(sd_bus *bus, const char *destination, const char *path,
			       const char *interface, const char *member, sd_bus_error *ret_error,
			       sd_bus_message **reply, const char *type);
int __wrap_sd_bus_get_property(sd_bus *bus, const char *destination, const char *path,
			       const char *interface, const char *member, sd_bus_error *ret_error,
			       sd_bus_message **reply, const char *type)
{
	GUARD("sd_bus_get_property");
	return __real_sd_bus_get_property(bus, destination, path, interface, member, ret_error,
					  reply, type);
}

int __real_sd_bus_query_sender_creds(sd_bus_message *m, uint64_t mask, sd_bus_creds **creds);
int __wrap_sd_bus_query_sender_creds(sd_bus_message *m, uint64_t mask, sd_bus_creds **creds);
int __wrap_sd_bus_query_sender_creds(sd_bus_message *m, uint64_t mask, sd_bus_creds **creds)
{
	GUARD("sd_bus_query_sender_creds");
	return __real_sd_bus_query_sender_creds(m, mask, creds);
}

int __real_sd_bus_query_sender_privilege(sd_bus_message *m, int capability);
int __wrap_sd_bus_query_sender_privilege(sd_bus_message *m, int capability);
int __wrap_sd_bus_query_sender_privilege(sd_bus_message *m, int capability)
{
	GUARD("sd_bus_query_sender_privilege");
	return __real_sd_bus_query_sender_privilege(m, capability);
}

int __real_sd_bus_get_name_creds(sd_bus *bus, const char *name, uint64_t mask,
				 sd_bus_creds **creds);
int __wrap_sd_bus_get_name_creds(sd_bus *bus, const char *name, uint64_t mask,
				 sd_bus_creds **creds);
int __wrap_sd_bus_get_name_creds(sd_bus *bus, const char *name, uint64_t mask, sd_bus_creds **creds)
{
	GUARD("sd_bus_get_name_creds");
	return __real_sd_bus_get_name_creds(bus, name, mask, creds);
}

int __real_sd_bus_get_owner_creds(sd_bus *bus, uint64_t mask, sd_bus_creds **creds);
int __wrap_sd_bus_get_owner_creds(sd_bus *bus, uint64_t mask, sd_bus_creds **creds);
int __wrap_sd_bus_get_owner_creds(sd_bus *bus, uint64_t mask, sd_bus_creds **creds)
{
	GUARD("sd_bus_get_owner_creds");
	return __real_sd_bus_get_owner_creds(bus, mask, creds);
}

int __real_sd_bus_request_name(sd_bus *bus, const char *name, uint64_t flags);
int __wrap_sd_bus_request_name(sd_bus *bus, const char *name, uint64_t flags);
int __wrap_sd_bus_request_name(sd_bus *bus, const char *name, uint64_t flags)
{
	GUARD("sd_bus_request_name");
	return __real_sd_bus_request_name(bus, name, flags);
}

int __real_sd_bus_release_name(sd_bus *bus, const char *name);
int __wrap_sd_bus_release_name(sd_bus *bus, const char *name);
int __wrap_sd_bus_release_name(sd_bus *bus, const char *name)
{
	GUARD("sd_bus_release_name");
	return __real_sd_bus_release_name(bus, name);
}

int __real_sd_bus_add_match(sd_bus *bus, sd_bus_slot **slot, const char *match,
			    sd_bus_message_handler_t callback, void *userdata);
int __wrap_sd_bus_add_match(sd_bus *bus, sd_bus_slot **slot, const char *match,
			    sd_bus_message_handler_t callback, void *userdata);
int __wrap_sd_bus_add_match(sd_bus *bus, sd_bus_slot **slot, const char *match,
			    sd_bus_message_handler_t callback, void *userdata)
{
	if (sd_bus_is_bus_client(bus) > 0)
		GUARD("sd_bus_add_match");
	return __real_sd_bus_add_match(bus, slot, match, callback, userdata);
}

int __real_sd_bus_match_signal(sd_bus *bus, sd_bus_slot **ret, const char *sender, const char *path,
			       const char *interface, const char *member,
			       sd_bus_message_handler_t callback, void *userdata);
int __wrap_sd_bus_match_signal(sd_bus *bus, sd_bus_slot **ret, const char *sender, const char *path,
			       const char *interface, const char *member,
			       sd_bus_message_handler_t callback, void *userdata);
int __wrap_sd_bus_match_signal(sd_bus *bus, sd_bus_slot **ret, const char *sender, const char *path,
			       const char *interface, const char *member,
			       sd_bus_message_handler_t callback, void *userdata)
{
	if (sd_bus_is_bus_client(bus) > 0)
		GUARD("sd_bus_match_signal");
	return __real_sd_bus_match_signal(bus, ret, sender, path, interface, member, callback,
					  userdata);
}

int __real_sd_bus_flush(sd_bus *bus);
int __wrap_sd_bus_flush(sd_bus *bus);
int __wrap_sd_bus_flush(sd_bus *bus)
{
	GUARD("sd_bus_flush");
	return __real_sd_bus_flush(bus);
}

int __real_sd_bus_wait(sd_bus *bus, uint64_t timeout_usec);
int __wrap_sd_bus_wait(sd_bus *bus, uint64_t timeout_usec);
int __wrap_sd_bus_wait(sd_bus *bus, uint64_t timeout_usec)
{
	GUARD("sd_bus_wait");
	return __real_sd_bus_wait(bus, timeout_usec);
}

sd_bus *__real_sd_bus_flush_close_unref(sd_bus *bus);
sd_bus *__wrap_sd_bus_flush_close_unref(sd_bus *bus);
sd_bus *__wrap_sd_bus_flush_close_unref(sd_bus *bus)
{
	GUARD("sd_bus_flush_close_unref");
	return __real_sd_bus_flush_close_unref(bus);
}
#endif
