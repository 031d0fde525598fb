/* SPDX-License-Identifier: MIT */
#pragma once

#include <systemd/sd-bus.h>

/* Connects to the bus at a D-Bus address ("unix:path=...") as a bus client that passes fds. */
int db_bus_open_address(const char *address, sd_bus **ret);
