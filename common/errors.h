/* SPDX-License-Identifier: MIT */
#pragma once

#include <systemd/sd-bus.h>

/* org.dmabroker.Error.* <-> errno, registered with sd_bus_error_add_map() by both sides so a
 * named error becomes a meaningful negative errno in the library. */
extern const sd_bus_error_map db_error_map[];

/* The contract's error name for an errno the registry, a backend or sd-bus returned;
 * Failed for what is none of the named conditions. */
const char *db_error_name_for_errno(int err);

/* Registers db_error_map once per process. */
void db_errors_register(void);
