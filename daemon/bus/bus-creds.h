/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <sys/types.h>
#include <systemd/sd-bus.h>

/*
 * Who is calling on the bus, learned without waiting. On dbus-daemon a caller's uid is not
 * in its messages: sd_bus_query_sender_creds() asks the bus synchronously, and any client
 * that fills the bus's queue toward the daemon would stall it there. A unique name's uid and
 * pid never change, so each is asked once, asynchronously: a filter holds the first calls
 * of a name whose credentials are not known yet, asks GetConnectionCredentials, and puts
 * the held calls back in sd-bus's read queue when the answer comes. So every handler, and
 * every property or object-manager callback (which cannot defer their answers), finds the
 * caller's credentials known: db_bus_creds_get() never fails for a call being dispatched.
 *
 * Bounds: at most DB_BUS_CREDS_HELD_PER_NAME calls held per name and
 * DB_BUS_CREDS_PENDING_NAMES names being asked about; past either a call is answered Busy
 * at once. A name's entry goes when it leaves the bus.
 */
struct db_bus_creds;

#define DB_BUS_CREDS_HELD_PER_NAME 32
#define DB_BUS_CREDS_PENDING_NAMES 1024

/* Installs the filter on bus (before anything is dispatched). */
int db_bus_creds_new(sd_bus *bus, struct db_bus_creds **ret);
struct db_bus_creds *db_bus_creds_free(struct db_bus_creds *creds);

/* The uid and pid of a unique name: -ENOENT unless learned (pid 0 if the bus had none). */
int db_bus_creds_get(struct db_bus_creds *creds, const char *name, uid_t *ret_uid, pid_t *ret_pid);

/* A name left the bus (NameOwnerChanged from the bus itself): forget it. */
void db_bus_creds_forget(struct db_bus_creds *creds, const char *name);

/* Names known or being asked about (for tests and the fuzzers' bookkeeping). */
unsigned db_bus_creds_count(const struct db_bus_creds *creds);
