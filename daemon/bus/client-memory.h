/* SPDX-License-Identifier: MIT */
#pragma once

#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <systemd/sd-bus.h>

/*
 * Admission of client-supplied memory (AllocateWithMemfd), and the rule that goes with it:
 * the daemon never faults in, and never keeps, pages a client was meant to pay for.
 * docs/limits.md ("A client's memory stays the client's") has the reasoning and the races.
 */

/* The seals a client's memfd must carry: it can neither shrink nor grow under the holders,
 * and nobody (its owner included) can add a seal later that breaks their mappings. */
#define DB_CLIENT_MEMFD_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)

/*
 * Checks the memfd a client brings (borrowed): a shmem memfd (hugetlbfs is refused: 6.12's
 * udmabuf corrupts its vmap) of exactly size bytes, sealed with DB_CLIENT_MEMFD_SEALS and
 * without a write seal (udmabuf refuses those), and wholly allocated: every page already
 * paid for by the client, none beyond its end. Returns 0, or a negative errno with error set
 * to org.dmabroker.Error.InvalidArgument and a message naming what is wrong.
 */
int db_client_memfd_check(int fd, size_t size, sd_bus_error *error);

/*
 * Whether the memfd (borrowed) still has all of its size bytes allocated: checked again after
 * udmabuf pinned it, so that a hole punched meanwhile is refused, not kept.
 */
bool db_client_memfd_whole(int fd, size_t size);

/*
 * Gives back the pages of a memfd the daemon allocated (memfd backend, a Move's new backing)
 * once no client may use it any more: the daemon cannot count who still holds a memfd, so it
 * makes sure nothing it paid for survives; a holder that kept a mapping faults in zero pages
 * of its own. fd is borrowed.
 */
void db_daemon_memfd_reclaim(int fd, size_t size);

/*
 * Copies size bytes from a memfd src into the mapping dst without allocating in src: holes
 * read as zeros (pread on shmem does not fill them; a read fault through a mapping would,
 * charged to the daemon).
 */
int db_copy_from_memfd(void *dst, int src, size_t size);

struct db_alloc_plan;
struct db_broker;
struct db_client;

/*
 * What AllocateWithMemfd does once the buffer's fd exists (bus-broker.c): registers it and
 * replies. fd is owned by the callee; returns 0 or a negative errno (with error set when the
 * failure has a name).
 */
typedef int (*db_memfd_admitted_fn)(struct db_broker *b, sd_bus_message *m, struct db_client *c,
				    const struct db_alloc_plan *plan, int fd, sd_bus_error *error);

/*
 * Turns a checked client memfd (borrowed) into a udmabuf of plan->size bytes so that every
 * page udmabuf has to fault in is charged to the client's memory cgroup: UDMABUF_CREATE runs
 * in a short-lived helper process started directly in the client's cgroup
 * (clone3(CLONE_INTO_CGROUP), found through a pidfd of the client's pid), which hands the
 * udmabuf back over a socket. The event loop never waits for it: the call is answered when
 * the helper exits (admitted() then runs), or with Busy once DB_UDMABUF_HELPER_TIMEOUT_SEC
 * passes (the helper is killed). Afterwards the memfd must still be whole, or the buffer is
 * refused. Without a cgroup v2 hierarchy (no memory cgroup to charge) the udmabuf is made in
 * the daemon right away. Returns 1 while pending, admitted()'s result when done at once, or
 * a negative errno with error set.
 */
#define DB_UDMABUF_HELPER_TIMEOUT_SEC 10
/* Helpers at work at once, for one client and in all. */
#define DB_UDMABUF_HELPERS_PER_CLIENT 1
#define DB_UDMABUF_HELPERS_MAX 16
int db_client_udmabuf_admit(struct db_broker *b, sd_bus_message *m, struct db_client *c, int memfd,
			    const struct db_alloc_plan *plan, db_memfd_admitted_fn admitted,
			    sd_bus_error *error);

/* Kills the helpers still at work and drops their calls (at exit). */
void db_client_memory_free(struct db_broker *b);
