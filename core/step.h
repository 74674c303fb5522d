/*
 * step.h - checkpoints and the input fingerprint they belong to.
 *
 * A workflow's checkpoints are kept per epoch; the workflow's epoch is
 * that of its current fingerprint, and only checkpoints of the current
 * epoch are visible.  Writing a different fingerprint, by the workflow's
 * on_input_change policy:
 *
 *   reset   epoch + 1: every old checkpoint vanishes at once (one row
 *           changes, whatever their number); old epochs are purged later
 *   reuse   the epoch stays: the checkpoints stay visible
 *   raise   -EBUSY while a checkpoint of the epoch exists; nothing changes
 *
 * Writing the value the workflow already has changes nothing (a resume).
 * Unset (empty, or unlinked) is a value like any other.
 */
#ifndef ONCE_STEP_H
#define ONCE_STEP_H

#include "once.h"

/*
 * The checks of write() for input.fingerprint: the value's syntax
 * (-EINVAL) and the raise rule (-EBUSY).
 */
int step_check_fingerprint(struct once *o, int64_t wf, const char *buf,
			   size_t len);

/*
 * Set the fingerprint from the bytes written (buf NULL: unset, as by
 * unlink), applying the policy.  -EINVAL, -EBUSY, -ENOENT.
 */
int step_set_fingerprint(struct once *o, int64_t wf, const char *buf,
			 size_t len, const struct caller *who);

#endif
