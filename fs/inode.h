/*
 * inode.h - what an inode number names.
 *
 *   1                      the root
 *   2                      .stats
 *   1<<60 | wf<<4 | slot   a workflow (slot 0) or one of its fixed entries
 *   2<<60 | generation     a key, one inode per claim
 *   3<<60 | id             a checkpoint
 *   4<<60 | n              a new checkpoint that its writer has not
 *                          committed yet: it exists only for that open
 *                          file (n counts up per mount)
 *   5<<60 | generation     wait/K: the wait for a claim to end
 *
 * Workflow ids and generations are never reused, so an inode never comes
 * to name something else: a stale one finds nothing and says so.
 */
#ifndef ONCE_INODE_H
#define ONCE_INODE_H

#include <stdint.h>

#include "../core/policy.h"

#define INO_ROOT 1
#define INO_STATS 2
#define INO_METRICS 3

enum ino_kind {
	INO_KIND_SPECIAL = 0,
	INO_KIND_WORKFLOW = 1,
	INO_KIND_KEY = 2,
	INO_KIND_STEP = 3,
	INO_KIND_PENDING = 4,	/* a new checkpoint's writer, before it commits */
	INO_KIND_WAIT = 5,	/* wait/K, for one claim */
};

enum wf_slot {
	SLOT_DIR = 0,
	SLOT_KEYS = 1,
	SLOT_STEPS = 2,
	SLOT_POLICY = 3,
	SLOT_FINGERPRINT = 4,
	SLOT_EVENTS = 5,
	SLOT_WAIT = 6,
	SLOT_POLICY_FIELD = 8,	/* + enum policy_field */
};

#define INO_KIND_SHIFT 60
#define INO_VALUE_MASK ((UINT64_C(1) << INO_KIND_SHIFT) - 1)

static inline uint64_t ino_make(enum ino_kind kind, uint64_t value)
{
	return ((uint64_t)kind << INO_KIND_SHIFT) | value;
}

static inline enum ino_kind ino_kind(uint64_t ino)
{
	return (enum ino_kind)(ino >> INO_KIND_SHIFT);
}

static inline int64_t ino_value(uint64_t ino)
{
	return (int64_t)(ino & INO_VALUE_MASK);
}

static inline uint64_t ino_wf(int64_t wf, int slot)
{
	return ino_make(INO_KIND_WORKFLOW, ((uint64_t)wf << 4) | (uint64_t)slot);
}

static inline int64_t ino_wf_id(uint64_t ino)
{
	return ino_value(ino) >> 4;
}

static inline int ino_wf_slot(uint64_t ino)
{
	return (int)(ino_value(ino) & 15);
}

#endif
