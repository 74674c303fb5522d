/*
 * fuzz_model.c - random sequences of core operations (workflows, keys,
 * checkpoints, fingerprints, policies, a clock that the fuzzer moves,
 * remounts) applied to the core on a temporary store, each result and
 * errno compared with a small model of DESIGN.md written here, and the
 * whole visible state compared with the model after every operation.
 *
 * The model, in brief (DESIGN.md, "Keys", "Steps", "Input fingerprint",
 * "Policy files"):
 *   - a key is absent, vacant (a failure freed it, the attempt count
 *     stays), in_flight (lease until claim/renewal + the held lease,
 *     touch + in_flight_ttl),
 *     succeeded or failed; it is live when terminal or leased;
 *   - claim: -EEXIST when live, else a new generation above every earlier
 *     one, attempt + 1 (1 after a release);
 *   - finalize through a generation: grammar (-EINVAL), size (-EFBIG),
 *     then the generation must still be the key's and its lease not
 *     passed (-ESTALE, whether or not a sweep ran), not terminal (-EPERM for root,
 *     -EACCES for users), and a generation written in the line must be
 *     the handle's (-ESTALE); failed under dedup_on=success frees the key;
 *   - release: -ENOENT unless live; the key is gone (attempts restart);
 *   - checkpoints: created empty, replaced whole at commit; a writer whose
 *     fingerprint was replaced is -ESTALE; a writer of a removed
 *     checkpoint commits into nothing;
 *   - fingerprint: same value changes nothing; reset hides every
 *     checkpoint, reuse keeps them, raise is -EBUSY while any exists;
 *   - a workflow is removed or replaced only when it holds no live key
 *     and no checkpoint (-ENOTEMPTY);
 *   - input holds: a fingerprint set through a holding slot holds its
 *     value for the mount's lease, renewed by step_renew_holds() once a
 *     third of it has passed; while another slot's hold lives, another
 *     value is -EBUSY (before the raise rule), the holding slot's own
 *     hold does not count; a release, a clean remount or the workflow's
 *     removal ends a hold.
 *
 * Input: a byte string read as operations with their arguments.
 */
#include <dirent.h>
#include <inttypes.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"
#include "key.h"
#include "once.h"
#include "policy.h"
#include "step.h"
#include "store.h"
#include "workflow.h"

#define NWF 2
#define NKEY 3
#define NSTEP 3
#define NHANDLE 8
#define NWRITER 2
#define NREADER 2
#define NHOLD 2
#define LEASE_MS ((int64_t)ONCE_LEASE_MS_DEFAULT)
#define MAX_RESULT 32
#define MAX_CKPT 64
#define T0 ((int64_t)1700000000000)
#define STALE_WF_ID ((int64_t)1 << 40)	/* an id no workflow has */

static const char *const wf_names[NWF] = { "w0", "w1" };
static const char *const key_names[NKEY] = { "k0", "k1", "k2" };
static const char *const step_names[NSTEP] = { "s0", "s1", "s2" };

static const struct caller callers[2] = {
	{ .pid = 100, .uid = 0, .gid = 0 },
	{ .pid = 200, .uid = 1000, .gid = 1000 },
};

enum mstatus { M_NONE, M_VACANT, M_FLIGHT, M_SUCC, M_FAIL };

struct mkey {
	enum mstatus st;
	int64_t gen, expires, attempt;
	char res[MAX_RESULT];
	size_t rlen;
};

struct mstep {
	bool on;
	int64_t id;
	char c[MAX_CKPT];
	size_t len;
};

struct mwf {
	bool on;
	int64_t id;		/* also kept once removed: a stale id */
	struct policy pol;
	char fp[FINGERPRINT_MAX];
	size_t fplen;
	int64_t epoch;		/* the model's own count of resets */
	struct mkey k[NKEY];
	struct mstep s[NSTEP];
	int64_t last_step_id[NSTEP];
};

struct mwriter {
	bool on;
	bool gone;		/* its checkpoint was removed (rm, replaced) */
	struct step_writer *w;
	int64_t wf_id, step_id, epoch;
	char c[MAX_CKPT];
	size_t len;
};

/* A reader of a checkpoint: it sees one version from open to close. */
struct mreader {
	bool on;
	struct step_row row;	/* its content version pinned */
	char c[MAX_CKPT];
	size_t len;
};

/* A file that holds an input (a slot): its hold id and when it lapses. */
struct mhold {
	int w;			/* the workflow */
	int64_t id;		/* 0: holds nothing */
	int64_t expires;
};

static struct {
	struct mhold h[NHOLD];
	int64_t holds_renew_at;	/* when the store renews its holds next */
	struct mreader rd[NREADER];
	char dir[PATH_MAX];
	char path[PATH_MAX + 16];
	struct store *st;
	struct once o;
	int64_t now;
	struct mwf W[NWF];
	int64_t last_gen;
	int64_t handles[NHANDLE];
	int nhandles;
	struct mwriter wr[NWRITER];
	int64_t wf_ids_seen[64];
	int nwf_ids;
	char trace[48][160];
	int ntrace;
} F;

/* ---- failure reports -------------------------------------------------- */

__attribute__((format(printf, 1, 2)))
static void note(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(F.trace[F.ntrace % 48], sizeof(F.trace[0]), fmt, ap);
	va_end(ap);
	F.ntrace++;
}

__attribute__((format(printf, 1, 2), noreturn))
static void fail(const char *fmt, ...)
{
	va_list ap;
	int first = F.ntrace > 48 ? F.ntrace - 48 : 0;

	fprintf(stderr, "\nMODEL CHECK FAILED after %d operations (the last ones):\n", F.ntrace);
	for (int i = first; i < F.ntrace; i++)
		fprintf(stderr, "  %3d %s\n", i + 1, F.trace[i % 48]);
	fprintf(stderr, "  => ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

#define EXPECT(what, got, want) do {						\
	long _g = (long)(got), _w = (long)(want);				\
	if (_g != _w)								\
		fail("%s = %s (%ld), the model says %s (%ld)", (what),		\
		     fuzz_errname(_g), _g, fuzz_errname(_w), _w);		\
} while (0)

#define EXPECT_EQ(what, got, want) do {						\
	long long _g = (long long)(got), _w = (long long)(want);		\
	if (_g != _w)								\
		fail("%s = %lld, the model says %lld", (what), _g, _w);	\
} while (0)

/* ---- input ------------------------------------------------------------ */

static const uint8_t *in;
static size_t in_left;

static unsigned take(void)
{
	if (!in_left)
		return 0;
	in_left--;
	return *in++;
}

/* ---- the model's rules -------------------------------------------------- */

static bool m_live(const struct mkey *k)
{
	return k->st == M_SUCC || k->st == M_FAIL ||
	       (k->st == M_FLIGHT && k->expires > F.now);
}

static bool m_terminal(const struct mkey *k)
{
	return k->st == M_SUCC || k->st == M_FAIL;
}

static bool m_has_live_keys(const struct mwf *w)
{
	for (int i = 0; i < NKEY; i++)
		if (m_live(&w->k[i]))
			return true;
	return false;
}

static bool m_has_steps(const struct mwf *w)
{
	for (int i = 0; i < NSTEP; i++)
		if (w->s[i].on)
			return true;
	return false;
}

/*
 * The key whose current generation is gen (not vacant, and not a claim
 * whose lease has passed: that generation is dead), or NULL.
 */
static struct mkey *m_key_of_gen(int64_t gen, struct mwf **wf)
{
	for (int w = 0; w < NWF; w++) {
		if (!F.W[w].on)
			continue;
		for (int i = 0; i < NKEY; i++) {
			struct mkey *k = &F.W[w].k[i];

			if (k->st >= M_FLIGHT && k->gen == gen &&
			    !(k->st == M_FLIGHT && k->expires <= F.now)) {
				if (wf)
					*wf = &F.W[w];
				return k;
			}
		}
	}
	return NULL;
}

static struct mwf *m_wf_by_id(int64_t id)
{
	for (int w = 0; w < NWF; w++)
		if (F.W[w].on && F.W[w].id == id)
			return &F.W[w];
	return NULL;
}

static void m_wf_clear(struct mwf *w)
{
	int64_t id = w->id;
	int64_t last[NSTEP];

	memcpy(last, w->last_step_id, sizeof(last));
	memset(w, 0, sizeof(*w));
	w->id = id;
	memcpy(w->last_step_id, last, sizeof(last));
}

/* Writers whose checkpoint row was deleted. */
static void row_gone(int64_t step_id)
{
	for (int i = 0; i < NWRITER; i++)
		if (F.wr[i].on && F.wr[i].step_id == step_id)
			F.wr[i].gone = true;
}

static void rows_gone_of_wf(int64_t wf_id)
{
	for (int i = 0; i < NWRITER; i++)
		if (F.wr[i].on && F.wr[i].wf_id == wf_id)
			F.wr[i].gone = true;
}

static int m_refuse(const struct caller *who)
{
	return who->uid == 0 ? -EPERM : -EACCES;
}

/* ---- the fixture -------------------------------------------------------- */

static int64_t fuzz_clock(void *arg)
{
	(void)arg;
	return F.now;
}

static void attach(void)
{
	struct once_config cfg = {
		.max_result = MAX_RESULT,
		.max_checkpoint = MAX_CKPT,
		.tmpdir = F.dir,
	};

	once_init(&F.o, F.st, &cfg);
	F.o.clock = fuzz_clock;
}

static void open_store(bool create)
{
	struct store_options opt = {
		.create = create,
		.sync = STORE_SYNC_OFF,
		.busy_timeout_ms = 1000,
	};
	char err[256] = "";
	int rc = store_open(F.path, &opt, &F.st, err, sizeof(err));

	if (rc)
		fail("store_open(%s) = %s: %s", F.path, fuzz_errname(rc), err);
	attach();
}

static void remove_store(void)
{
	char p[PATH_MAX + 32];

	unlink(F.path);
	snprintf(p, sizeof(p), "%s-wal", F.path);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", F.path);
	unlink(p);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";

	(void)argc;
	(void)argv;
	if (getenv("TMPDIR") && *getenv("TMPDIR"))
		base = getenv("TMPDIR");
	snprintf(F.dir, sizeof(F.dir), "%s/oncefs-fuzz-XXXXXX", base);
	if (!mkdtemp(F.dir)) {
		perror("mkdtemp");
		exit(1);
	}
	snprintf(F.path, sizeof(F.path), "%s/state.db", F.dir);
	return 0;
}

__attribute__((destructor)) static void cleanup_dir(void)
{
	if (F.dir[0]) {
		remove_store();
		rmdir(F.dir);
	}
}

/* ---- checks of the whole state ------------------------------------------ */

static void check_key_row(const char *what, const struct key_row *r, const struct mkey *k)
{
	static const enum key_status map[] = {
		[M_FLIGHT] = KEY_IN_FLIGHT, [M_SUCC] = KEY_SUCCEEDED, [M_FAIL] = KEY_FAILED,
	};

	if (r->status != map[k->st] || r->generation != k->gen || r->attempt != k->attempt ||
	    (k->st == M_FLIGHT && r->expires_ms != k->expires) ||
	    r->result_len != (int64_t)k->rlen)
		fail("%s: status %d gen %" PRId64 " attempt %" PRId64 " expires %" PRId64
		     " result %" PRId64 ", the model says %d %" PRId64 " %" PRId64 " %" PRId64 " %zu",
		     what, r->status, r->generation, r->attempt, r->expires_ms, r->result_len,
		     map[k->st], k->gen, k->attempt, k->expires, k->rlen);
}

static void check_content(const char *what, int64_t gen, const struct mkey *k)
{
	struct key_row r;
	char *buf = NULL, line[64];
	size_t len = 0;
	int n, rc = key_content(&F.o, gen, &r, &buf, &len);

	EXPECT(what, rc, 0);
	n = snprintf(line, sizeof(line), "%s %" PRId64 "\n",
		     k->st == M_FLIGHT ? "in_flight" : k->st == M_SUCC ? "succeeded" : "failed", k->gen);
	if (len != (size_t)n + k->rlen || memcmp(buf, line, (size_t)n) != 0 ||
	    memcmp(buf + n, k->res, k->rlen) != 0) {
		fprintf(stderr, "content: ");
		fuzz_print_bytes(buf, len);
		fail("%s: the content differs from the model's \"%.*s\" + %zu result bytes",
		     what, n - 1, line, k->rlen);
	}
	free(buf);
}

static void check_all(void)
{
	struct wf_row wr, rows[8];
	int n = 0, want = 0;
	char what[128];

	for (int w = 0; w < NWF; w++) {
		struct mwf *m = &F.W[w];
		int rc = workflow_lookup(&F.o, wf_names[w], 2, &wr);
		bool has;

		snprintf(what, sizeof(what), "workflow_lookup(%s)", wf_names[w]);
		EXPECT(what, rc, m->on ? 0 : -ENOENT);
		if (!m->on)
			continue;
		want++;
		EXPECT_EQ("workflow id", wr.id, m->id);
		if (memcmp(&wr.policy, &m->pol, sizeof(m->pol)) != 0)
			fail("%s: policy %d %d %" PRId64 " %" PRId64 ", the model says %d %d %" PRId64
			     " %" PRId64, wf_names[w], wr.policy.on_input_change, wr.policy.dedup_on,
			     wr.policy.in_flight_ttl, wr.policy.retention, m->pol.on_input_change,
			     m->pol.dedup_on, m->pol.in_flight_ttl, m->pol.retention);
		if (wr.fingerprint_len != m->fplen || memcmp(wr.fingerprint, m->fp, m->fplen) != 0)
			fail("%s: fingerprint \"%.*s\", the model says \"%.*s\"", wf_names[w],
			     (int)wr.fingerprint_len, wr.fingerprint, (int)m->fplen, m->fp);

		for (int i = 0; i < NKEY; i++) {
			struct mkey *k = &m->k[i];
			struct key_row kr;

			snprintf(what, sizeof(what), "key_lookup(%s/%s)", wf_names[w], key_names[i]);
			rc = key_lookup(&F.o, m->id, key_names[i], 2, &kr, NULL);
			EXPECT(what, rc, m_live(k) ? 0 : -ENOENT);
			if (rc == 0) {
				check_key_row(what, &kr, k);
				snprintf(what, sizeof(what), "key_content(%s/%s)", wf_names[w], key_names[i]);
				check_content(what, k->gen, k);
			}
		}
		EXPECT("workflow_has_keys", workflow_has_keys(&F.o, m->id, &has), 0);
		EXPECT_EQ("workflow_has_keys", has, m_has_live_keys(m));
		{
			struct key_row kr[8];
			int nk = 0, live = 0;

			EXPECT("key_list", key_list(&F.o, m->id, 0, kr, 8, &nk), 0);
			for (int i = 0; i < NKEY; i++)
				live += m_live(&m->k[i]);
			EXPECT_EQ("key_list count", nk, live);
			for (int j = 0; j < nk; j++) {
				int i = kr[j].name[1] - '0';

				if (kr[j].name_len != 2 || i < 0 || i >= NKEY || !m_live(&m->k[i]))
					fail("key_list lists %s, not live in the model", kr[j].name);
			}
		}

		for (int i = 0; i < NSTEP; i++) {
			struct mstep *s = &m->s[i];
			struct step_row sr;

			snprintf(what, sizeof(what), "step_lookup(%s/%s)", wf_names[w], step_names[i]);
			rc = step_lookup(&F.o, m->id, step_names[i], 2, &sr);
			EXPECT(what, rc, s->on ? 0 : -ENOENT);
			if (rc == 0) {
				struct step_row pr;
				char buf[MAX_CKPT + 8];
				size_t got = 0;

				EXPECT_EQ("step id", sr.id, s->id);
				EXPECT_EQ("step size", sr.size, (int64_t)s->len);
				EXPECT("step_get_pinned", step_get_pinned(&F.o, sr.id, &pr), 0);
				EXPECT_EQ("reader size", pr.size, (int64_t)s->len);
				if (pr.size > 0)
					EXPECT("store_content_read",
					       store_content_read(F.st, pr.content, pr.size, 0, buf,
								  sizeof(buf), &got), 0);
				store_unpin(F.st, pr.content);
				if (got != s->len || memcmp(buf, s->c, s->len) != 0) {
					fprintf(stderr, "checkpoint: ");
					fuzz_print_bytes(buf, got);
					fprintf(stderr, "\nmodel:      ");
					fuzz_print_bytes(s->c, s->len);
					fail("\n%s: the content differs from the model's", what);
				}
			}
		}
		EXPECT("workflow_has_steps", workflow_has_steps(&F.o, m->id, &has), 0);
		EXPECT_EQ("workflow_has_steps", has, m_has_steps(m));
		{
			struct step_row sr[8];
			int ns = 0, vis = 0;

			EXPECT("step_list", step_list(&F.o, m->id, 0, sr, 8, &ns), 0);
			for (int i = 0; i < NSTEP; i++)
				vis += m->s[i].on;
			EXPECT_EQ("step_list count", ns, vis);
		}
	}
	EXPECT("workflow_list", workflow_list(&F.o, 0, rows, 8, &n), 0);
	EXPECT_EQ("workflow_list count", n, want);
}

/* ---- operations ----------------------------------------------------------- */

static const struct caller *who_of(unsigned b)
{
	return &callers[b & 1];
}

static void op_wf_create(void)
{
	unsigned a = take();
	int w = a % NWF;
	struct mwf *m = &F.W[w];
	struct wf_row r;
	int rc = workflow_create(&F.o, wf_names[w], 2, 0755, who_of(a >> 1), &r);

	note("workflow_create(%s) = %s", wf_names[w], fuzz_errname(rc));
	EXPECT("workflow_create", rc, m->on ? -EEXIST : 0);
	if (rc)
		return;
	for (int i = 0; i < F.nwf_ids; i++)
		if (F.wf_ids_seen[i] == r.id)
			fail("workflow id %" PRId64 " reused", r.id);
	if (F.nwf_ids < 64)
		F.wf_ids_seen[F.nwf_ids++] = r.id;
	m_wf_clear(m);
	m->on = true;
	m->id = r.id;
	policy_init(&m->pol);
}

static void op_wf_remove(void)
{
	unsigned a = take();
	int w = a % NWF;
	struct mwf *m = &F.W[w];
	int rc = workflow_remove(&F.o, wf_names[w], 2, who_of(a >> 1));
	int want = !m->on ? -ENOENT : (m_has_live_keys(m) || m_has_steps(m)) ? -ENOTEMPTY : 0;

	note("workflow_remove(%s) = %s", wf_names[w], fuzz_errname(rc));
	EXPECT("workflow_remove", rc, want);
	if (rc == 0) {
		rows_gone_of_wf(m->id);
		m_wf_clear(m);
		m->on = false;
		for (int i = 0; i < NHOLD; i++)
			if (F.h[i].id && F.h[i].w == w)
				memset(&F.h[i], 0, sizeof(F.h[i]));
	}
}

static void op_wf_rename(void)
{
	unsigned a = take();
	int from = a % NWF, to = (a >> 1) % NWF;
	unsigned flags = (a >> 2) & 3;
	bool reserved = (a >> 4) & 1 && (a >> 5) & 1;
	const char *to_name = reserved ? ".x" : wf_names[to];
	struct mwf *mf = &F.W[from], *mt = &F.W[to];
	int rc = workflow_rename(&F.o, wf_names[from], 2, to_name, 2, flags, who_of(a >> 6));
	int want;

	note("workflow_rename(%s, %s, flags %u) = %s", wf_names[from], to_name, flags, fuzz_errname(rc));
	if (flags & WORKFLOW_RENAME_EXCHANGE || reserved)
		want = -EINVAL;
	else if (!mf->on)
		want = -ENOENT;
	else if (from == to)
		want = 0;
	else if (mt->on && (flags & WORKFLOW_RENAME_NOREPLACE))
		want = -EEXIST;
	else if (mt->on && (m_has_live_keys(mt) || m_has_steps(mt)))
		want = -ENOTEMPTY;
	else
		want = 0;
	EXPECT("workflow_rename", rc, want);
	if (rc == 0 && from != to) {
		int64_t stale = mt->on ? mt->id : STALE_WF_ID;

		if (mt->on)
			rows_gone_of_wf(mt->id);
		/* Holds are the workflow's: the replaced one's go, the moved one's follow. */
		for (int i = 0; i < NHOLD; i++) {
			if (F.h[i].id && F.h[i].w == to && mt->on)
				memset(&F.h[i], 0, sizeof(F.h[i]));
			else if (F.h[i].id && F.h[i].w == from)
				F.h[i].w = to;
		}
		*mt = *mf;
		memset(mf, 0, sizeof(*mf));
		mf->id = stale;		/* the old name names nothing now */
	}
}

/* The workflow id to act on: the slot's (maybe stale) id; 0 if none yet. */
static int64_t wf_id(int w)
{
	return F.W[w].id;
}

static void add_handle(int64_t gen)
{
	memmove(F.handles + 1, F.handles, sizeof(F.handles) - sizeof(F.handles[0]));
	F.handles[0] = gen;
	if (F.nhandles < NHANDLE)
		F.nhandles++;
}

/* A generation to act through: a recent claim's, or one never given. */
static int64_t pick_gen(unsigned b)
{
	if (F.nhandles && (b & 7) != 7)
		return F.handles[(b >> 3) % F.nhandles];
	return (b & 8) ? F.last_gen + 1000 : 0;
}

/* A held claim's lease: -o lease (the default here), at most in_flight_ttl. */
static int64_t held_lease_ms(const struct mwf *m)
{
	int64_t ttl = m->pol.in_flight_ttl * 1000;

	return ONCE_LEASE_MS_DEFAULT < ttl ? ONCE_LEASE_MS_DEFAULT : ttl;
}

static void op_claim(void)
{
	unsigned a = take();
	int w = a % NWF, i = (a >> 1) % NKEY;
	const struct caller *who = who_of(a >> 3);
	struct mwf *m = &F.W[w];
	struct mkey *k = &m->k[i];
	struct key_row r;
	int rc, want;

	if (!wf_id(w))
		return;
	rc = key_claim(&F.o, wf_id(w), key_names[i], 2, who, &r, NULL);
	note("key_claim(%s/%s) = %s gen %" PRId64, wf_names[w], key_names[i], fuzz_errname(rc),
	     rc ? 0 : r.generation);
	want = !m->on ? -ENOENT : m_live(k) ? -EEXIST : 0;
	EXPECT("key_claim", rc, want);
	if (rc)
		return;
	if (r.generation <= F.last_gen)
		fail("claim got generation %" PRId64 ", not above %" PRId64 ": reused", r.generation,
		     F.last_gen);
	F.last_gen = r.generation;
	k->attempt = k->st == M_NONE ? 1 : k->attempt + 1;
	k->st = M_FLIGHT;
	k->gen = r.generation;
	k->expires = F.now + held_lease_ms(m);
	k->rlen = 0;
	check_key_row("the claimed key", &r, k);
	add_handle(r.generation);
}

/* Status lines a finalizer may write (%G: the handle's generation). */
static const char *const lines[] = {
	"succeeded", "failed", "succeeded\n", "failed\n", "succeeded\nresult",
	"failed\nwhy it failed", "succeeded %G\nwith its generation", "failed %G \r\n",
	"succeeded %H\n", "succeeded 0\n", "done\n", "in_flight\n", "Succeeded\n",
	"succeeded\n0123456789012345678901234567890123456789", "succeeded\n0123456789012345678901234567890X",
	"succeeded  \r\r  \nx", "", "\n", "succeeded 12345678901234567890\n",
};

/* Expected rc of a finalize's bytes before the key is looked at, and the
 * status/result they carry. */
static int m_line(const char *buf, size_t len, enum mstatus *st, int64_t *gen, size_t *roff)
{
	const char *nl = memchr(buf, '\n', len);
	size_t line = nl ? (size_t)(nl - buf) : len, i;
	const char *word = NULL;

	*gen = 0;
	if (line > KEY_STATUS_LINE_MAX)
		return -EINVAL;
	if (line >= 9 && memcmp(buf, "succeeded", 9) == 0) {
		word = "succeeded";
		*st = M_SUCC;
	} else if (line >= 6 && memcmp(buf, "failed", 6) == 0) {
		word = "failed";
		*st = M_FAIL;
	} else {
		return -EINVAL;
	}
	i = strlen(word);
	if (i + 1 < line && buf[i] == ' ' && buf[i + 1] >= '1' && buf[i + 1] <= '9') {
		int digits = 0;

		for (i++; i < line && buf[i] >= '0' && buf[i] <= '9'; i++) {
			if (++digits > 18)
				return -EINVAL;
			*gen = *gen * 10 + (buf[i] - '0');
		}
	}
	for (; i < line; i++)
		if (buf[i] != ' ' && buf[i] != '\r')
			return -EINVAL;
	*roff = nl ? line + 1 : len;
	if (len - *roff > MAX_RESULT)
		return -EFBIG;
	return 0;
}

static size_t make_line(unsigned b, int64_t gen, char *buf, size_t size)
{
	const char *t = lines[b % (sizeof(lines) / sizeof(lines[0]))];
	size_t n = 0;

	for (; *t && n + 24 < size; t++) {
		if (t[0] == '%' && (t[1] == 'G' || t[1] == 'H')) {
			n += (size_t)snprintf(buf + n, size - n, "%" PRId64, t[1] == 'G' ? gen : gen + 1);
			t++;
		} else {
			buf[n++] = *t;
		}
	}
	return n;
}

/* What finalizing (or checking a write of) buf through gen should give. */
static int m_finalize_rc(int64_t gen, const char *buf, size_t len, const struct caller *who,
			 struct mkey **kp, struct mwf **wp, enum mstatus *st, size_t *roff)
{
	int64_t line_gen;
	int rc = m_line(buf, len, st, &line_gen, roff);
	struct mkey *k;

	*kp = NULL;
	if (rc)
		return rc;
	k = m_key_of_gen(gen, wp);
	if (!k)
		return -ESTALE;
	if (m_terminal(k))
		return m_refuse(who);
	if (line_gen && line_gen != gen)
		return -ESTALE;
	*kp = k;
	return 0;
}

static void op_finalize(void)
{
	unsigned a = take(), b = take();
	const struct caller *who = who_of(a);
	int64_t gen = pick_gen(a >> 1);
	char buf[128];
	size_t len = make_line(b, gen, buf, sizeof(buf)), roff = 0;
	enum mstatus st = M_NONE;
	struct mkey *k;
	struct mwf *m = NULL;
	int want = m_finalize_rc(gen, buf, len, who, &k, &m, &st, &roff);
	struct mkey *kk;
	struct mwf *kw = NULL;
	const char *kname;
	int rc;

	/* The check of write() says the same as the commit would, but for
	 * nothing written yet, which may still become a status line. */
	rc = key_check_write(&F.o, gen, buf, len, who);
	note("key_check_write(gen %" PRId64 ", \"%.*s\") = %s", gen, (int)(len > 40 ? 40 : len), buf,
	     fuzz_errname(rc));
	if (len == 0) {
		struct mkey *kk = m_key_of_gen(gen, NULL);

		EXPECT("key_check_write(nothing yet)", rc, !kk ? -ESTALE : m_terminal(kk) ? m_refuse(who) : 0);
	} else {
		EXPECT("key_check_write", rc, want);
	}
	if (a & 0x80)
		return;	/* a write that is never committed */
	/* The handle's name is its key's; a stale one names any. */
	kk = m_key_of_gen(gen, &kw);
	kname = kk ? key_names[kk - kw->k] : key_names[0];
	rc = key_finalize(&F.o, gen, kname, 2, buf, len, who);
	note("key_finalize(gen %" PRId64 ") = %s", gen, fuzz_errname(rc));
	EXPECT("key_finalize", rc, want);
	if (rc)
		return;
	if (st == M_FAIL && m->pol.dedup_on == DEDUP_SUCCESS) {
		k->st = M_VACANT;
		k->rlen = 0;
	} else {
		k->st = st;
		k->rlen = len - roff;
		memcpy(k->res, buf + roff, k->rlen);
	}
}

static void op_touch(void)
{
	unsigned a = take();
	const struct caller *who = who_of(a);
	int64_t gen = pick_gen(a >> 1);
	struct mwf *m = NULL;
	struct mkey *k = m_key_of_gen(gen, &m);
	int rc = key_touch(&F.o, gen, who);

	note("key_touch(gen %" PRId64 ") = %s", gen, fuzz_errname(rc));
	EXPECT("key_touch", rc, !k ? -ESTALE : m_terminal(k) ? m_refuse(who) : 0);
	if (rc == 0)
		k->expires = F.now + m->pol.in_flight_ttl * 1000;
}

static void op_renew(void)
{
	unsigned a = take();
	int64_t gens[2] = { pick_gen(a), pick_gen(a >> 4) };
	size_t n = 1 + (a & 1);
	int rc = key_renew(&F.o, gens, n);

	note("key_renew(%" PRId64 ", %" PRId64 ", n=%zu) = %s", gens[0], gens[1], n, fuzz_errname(rc));
	EXPECT("key_renew", rc, 0);
	for (size_t i = 0; i < n; i++) {
		struct mwf *m = NULL;
		struct mkey *k = m_key_of_gen(gens[i], &m);
		int64_t ttl_ms;

		if (i == 1 && gens[1] == gens[0])
			break;
		if (!k || k->st != M_FLIGHT)
			continue;
		ttl_ms = held_lease_ms(m);	/* the short lease of a held claim */
		if (k->expires - F.now < ttl_ms - ttl_ms / 3)	/* a third has passed */
			k->expires = F.now + ttl_ms;
	}
}

static void op_release(void)
{
	unsigned a = take();
	int w = a % NWF, i = (a >> 1) % NKEY;
	struct mwf *m = &F.W[w];
	struct mkey *k = &m->k[i];
	int rc;

	if (!wf_id(w))
		return;
	rc = key_release(&F.o, wf_id(w), key_names[i], 2, who_of(a >> 3));
	note("key_release(%s/%s) = %s", wf_names[w], key_names[i], fuzz_errname(rc));
	EXPECT("key_release", rc, m->on && m_live(k) ? 0 : -ENOENT);
	if (rc == 0)
		memset(k, 0, sizeof(*k));
}

static void op_bad_names(void)
{
	static char longname[300];
	static const struct {
		const char *s;
		size_t len;
		int err, err_wf;
	} bad[] = {
		{ "", 0, -EINVAL, -EINVAL },
		{ ".", 1, -EINVAL, -EINVAL },
		{ "..", 2, -EINVAL, -EINVAL },
		{ "a/b", 3, -EINVAL, -EINVAL },
		{ "a\0b", 3, -EINVAL, -EINVAL },
		{ longname, 256, -ENAMETOOLONG, -ENAMETOOLONG },
		{ ".dot", 4, 0, -EINVAL },
	};
	unsigned a = take();
	int b = (int)((a >> 1) % (sizeof(bad) / sizeof(bad[0])));
	int w = a & 1;
	struct key_row kr;
	struct step_row sr;
	struct wf_row wr;
	int rc;

	memset(longname, 'n', sizeof(longname));
	rc = workflow_create(&F.o, bad[b].s, bad[b].len, 0755, &callers[0], &wr);
	note("workflow_create(bad name %d) = %s", b, fuzz_errname(rc));
	EXPECT("workflow_create(bad name)", rc, bad[b].err_wf);
	if (!F.W[w].on || bad[b].err == 0)
		return;
	EXPECT("key_claim(bad name)", key_claim(&F.o, F.W[w].id, bad[b].s, bad[b].len, &callers[0], &kr, NULL),
	       bad[b].err);
	EXPECT("key_release(bad name)", key_release(&F.o, F.W[w].id, bad[b].s, bad[b].len, &callers[0]),
	       bad[b].err);
	EXPECT("step_create(bad name)", step_create(&F.o, F.W[w].id, bad[b].s, bad[b].len, false,
						    &callers[0], &sr), bad[b].err);
}

/* Policy values, and whether each is valid for its field. */
static const struct {
	enum policy_field f;
	const char *v;
	int64_t value;	/* -1: invalid */
} values[] = {
	{ POLICY_ON_INPUT_CHANGE, "reset\n", ON_INPUT_RESET },
	{ POLICY_ON_INPUT_CHANGE, "reuse", ON_INPUT_REUSE },
	{ POLICY_ON_INPUT_CHANGE, "raise \t\r\n", ON_INPUT_RAISE },
	{ POLICY_ON_INPUT_CHANGE, "Raise", -1 },
	{ POLICY_ON_INPUT_CHANGE, " reset", -1 },
	{ POLICY_DEDUP_ON, "any\n", DEDUP_ANY },
	{ POLICY_DEDUP_ON, "success", DEDUP_SUCCESS },
	{ POLICY_DEDUP_ON, "none\n", -1 },
	{ POLICY_IN_FLIGHT_TTL, "1\n", 1 },
	{ POLICY_IN_FLIGHT_TTL, "60", 60 },
	{ POLICY_IN_FLIGHT_TTL, "86400\n", 86400 },
	{ POLICY_IN_FLIGHT_TTL, "0\n", -1 },
	{ POLICY_IN_FLIGHT_TTL, "-5\n", -1 },
	{ POLICY_IN_FLIGHT_TTL, "060\n", -1 },
	{ POLICY_IN_FLIGHT_TTL, "316224000\n", 316224000 },
	{ POLICY_IN_FLIGHT_TTL, "316224001\n", -1 },
	{ POLICY_RETENTION, "0\n", 0 },
	{ POLICY_RETENTION, "3162240000", 3162240000 },
	{ POLICY_RETENTION, "3162240001", -1 },
	{ POLICY_RETENTION, "1e3\n", -1 },
};

static void set_field(struct policy *p, enum policy_field f, int64_t v)
{
	switch (f) {
	case POLICY_ON_INPUT_CHANGE:
		p->on_input_change = (enum on_input_change)v;
		break;
	case POLICY_DEDUP_ON:
		p->dedup_on = (enum dedup_on)v;
		break;
	case POLICY_IN_FLIGHT_TTL:
		p->in_flight_ttl = v;
		break;
	default:
		p->retention = v;
		break;
	}
}

static void op_policy(void)
{
	unsigned a = take();
	int w = a % NWF;
	bool unset = (a >> 1) % 8 == 0;
	int v = (int)((a >> 4 | take() << 4) % (sizeof(values) / sizeof(values[0])));
	enum policy_field f = unset ? (enum policy_field)((a >> 4) % POLICY_NFIELDS) : values[v].f;
	struct mwf *m = &F.W[w];
	int rc, want;

	if (!wf_id(w))
		return;
	if (unset) {
		rc = workflow_set_policy(&F.o, wf_id(w), f, NULL, 0, &callers[0]);
		note("workflow_set_policy(%s, %s, unset) = %s", wf_names[w], policy_field_name(f),
		     fuzz_errname(rc));
		EXPECT("workflow_set_policy(unset)", rc, m->on ? 0 : -ENOENT);
		if (rc == 0) {
			struct policy d;

			policy_init(&d);
			switch (f) {
			case POLICY_ON_INPUT_CHANGE:
				m->pol.on_input_change = d.on_input_change;
				break;
			case POLICY_DEDUP_ON:
				m->pol.dedup_on = d.dedup_on;
				break;
			case POLICY_IN_FLIGHT_TTL:
				m->pol.in_flight_ttl = d.in_flight_ttl;
				break;
			default:
				m->pol.retention = d.retention;
				break;
			}
		}
		return;
	}
	rc = workflow_check_policy(f, values[v].v, strlen(values[v].v));
	if (strchr(values[v].v, '\n'))
		EXPECT("workflow_check_policy(a whole value)", rc, values[v].value >= 0 ? 0 : -EINVAL);
	else if (values[v].value >= 0 && rc != 0 && rc != -EAGAIN)
		EXPECT("workflow_check_policy(a valid value)", rc, 0);
	rc = workflow_set_policy(&F.o, wf_id(w), f, values[v].v, strlen(values[v].v), &callers[0]);
	note("workflow_set_policy(%s, %s, \"%s\") = %s", wf_names[w], policy_field_name(f),
	     values[v].v, fuzz_errname(rc));
	want = values[v].value < 0 ? -EINVAL : m->on ? 0 : -ENOENT;
	EXPECT("workflow_set_policy", rc, want);
	if (rc == 0)
		set_field(&m->pol, f, values[v].value);
}

/* Is another live hold than slot own's on workflow w? */
static bool m_held_by_other(int w, int own)
{
	for (int i = 0; i < NHOLD; i++)
		if (i != own && F.h[i].id && F.h[i].w == w && F.h[i].expires > F.now)
			return true;
	return false;
}

static void op_fingerprint(void)
{
	static const char *const fps[] = { NULL, "", "v1", "v1\n", "v2", "v2\n", "v", "bad\x01", "\n" };
	unsigned a = take(), b = take();
	int w = a % NWF;
	int i = (int)((a >> 1) % (sizeof(fps) / sizeof(fps[0])));
	const char *v = fps[i];
	size_t len = v ? strlen(v) : 0, vlen = len;
	struct mwf *m = &F.W[w];
	/* Through a holding file (a slot), or a plain one (-1). */
	int slot = b % 3 == 2 || !v ? -1 : (int)(b % 3);
	struct mhold *hd = slot >= 0 ? &F.h[slot] : NULL;
	int64_t hold = 0;
	bool complete, same, steps, busy;
	int rc, want;

	if (!wf_id(w))
		return;
	if (hd && hd->id && hd->w != w)
		return;		/* a file holds the input of one workflow */
	if (hd)
		hold = hd->id;
	if (v && len && v[len - 1] == '\n')
		vlen--;
	if (v && memchr(v, '\x01', len)) {
		want = -EINVAL;
	} else if (!m->on) {
		want = -ENOENT;
	} else {
		complete = !v || (len && v[len - 1] == '\n');
		steps = m_has_steps(m);
		/* The check of write(): an unfinished value may still become the current one. */
		busy = m_held_by_other(w, slot);
		same = (complete ? vlen == m->fplen : vlen <= m->fplen) &&
		       (!vlen || memcmp(v, m->fp, vlen) == 0);
		want = !same && (busy || (steps && m->pol.on_input_change == ON_INPUT_RAISE))
			? -EBUSY : 0;
		if (v) {
			rc = step_check_fingerprint(&F.o, wf_id(w), v, len, hold);
			note("step_check_fingerprint(%s, \"%s\", hold %" PRId64 ") = %s", wf_names[w], v,
			     hold, fuzz_errname(rc));
			EXPECT("step_check_fingerprint", rc, want);
		}
		same = vlen == m->fplen && (!vlen || memcmp(v, m->fp, vlen) == 0);
		want = !same && (busy || (steps && m->pol.on_input_change == ON_INPUT_RAISE))
			? -EBUSY : 0;
	}
	rc = step_set_fingerprint(&F.o, wf_id(w), v, len, &callers[a >> 7], hd ? &hold : NULL);
	note("step_set_fingerprint(%s, %s%s%s, slot %d) = %s, hold %" PRId64, wf_names[w],
	     v ? "\"" : "", v ? v : "NULL", v ? "\"" : "", slot, fuzz_errname(rc), hold);
	EXPECT("step_set_fingerprint", rc, want);
	/* A value set (or found set) through a slot is held from now on. */
	if (rc == 0 && hd && !hd->id && vlen > 0) {
		if (hold == 0)
			fail("step_set_fingerprint took no hold");
		for (int j = 0; j < NHOLD; j++)
			if (F.h[j].id == hold)
				fail("hold id %" PRId64 " reused", hold);
		hd->w = w;
		hd->id = hold;
		hd->expires = F.now + LEASE_MS;
	} else if (hd) {
		EXPECT_EQ("the slot's hold", hold, hd->id);
	}
	if (rc || (vlen == m->fplen && (!vlen || memcmp(v, m->fp, vlen) == 0)))
		return;
	/* Reset moves to a new epoch, with or without checkpoints. */
	if (m->pol.on_input_change == ON_INPUT_RESET) {
		m->epoch++;
		for (int s = 0; s < NSTEP; s++)
			m->s[s].on = false;
	}
	memcpy(m->fp, v ? v : "", vlen);
	m->fplen = vlen;
}

static void op_step_create(void)
{
	unsigned a = take();
	int w = a % NWF, i = (a >> 1) % NSTEP;
	bool excl = (a >> 3) & 1;
	struct mwf *m = &F.W[w];
	struct mstep *s = &m->s[i];
	struct step_row r;
	int rc, want;

	if (!wf_id(w))
		return;
	rc = step_create(&F.o, wf_id(w), step_names[i], 2, excl, who_of(a >> 4), &r);
	note("step_create(%s/%s, excl %d) = %s", wf_names[w], step_names[i], excl, fuzz_errname(rc));
	want = !m->on ? -ENOENT : s->on && excl ? -EEXIST : 0;
	EXPECT("step_create", rc, want);
	if (rc)
		return;
	if (s->on) {
		EXPECT_EQ("step_create of an existing step: id", r.id, s->id);
		EXPECT_EQ("step_create of an existing step: size", r.size, (int64_t)s->len);
		return;
	}
	/*
	 * A new checkpoint: no row until its writer commits (step_lookup
	 * says ENOENT until then).  The model makes it as touch does: open,
	 * commit empty.
	 */
	EXPECT_EQ("new step id", r.id, 0);
	EXPECT_EQ("new step size", r.size, 0);
	{
		struct step_writer *sw = NULL;
		struct step_row seen;

		EXPECT("step_lookup of a new step",
		       step_lookup(&F.o, wf_id(w), step_names[i], 2, &seen), -ENOENT);
		EXPECT("step_writer_open (new)", step_writer_open(&F.o, &r, true, &sw), 0);
		EXPECT("step_writer_commit (new)", step_writer_commit(&F.o, sw, who_of(a >> 4)), 0);
		r.id = step_writer_id(sw);
		step_writer_close(sw);
	}
	s->on = true;
	s->id = r.id;
	s->len = 0;
	m->last_step_id[i] = r.id;
}

static void op_step_remove(void)
{
	unsigned a = take();
	int w = a % NWF, i = (a >> 1) % NSTEP;
	struct mwf *m = &F.W[w];
	int rc;

	if (!wf_id(w))
		return;
	rc = step_remove(&F.o, wf_id(w), step_names[i], 2, who_of(a >> 3));
	note("step_remove(%s/%s) = %s", wf_names[w], step_names[i], fuzz_errname(rc));
	EXPECT("step_remove", rc, m->on && m->s[i].on ? 0 : -ENOENT);
	if (rc == 0) {
		row_gone(m->s[i].id);
		m->s[i].on = false;
	}
}

static void op_step_rename(void)
{
	unsigned a = take();
	int w = a % NWF, from = (a >> 1) % NSTEP, to = (a >> 3) % NSTEP;
	bool noreplace = (a >> 5) & 1;
	struct mwf *m = &F.W[w];
	int rc, want;

	if (!wf_id(w))
		return;
	rc = step_rename(&F.o, wf_id(w), step_names[from], 2, step_names[to], 2, noreplace, who_of(a >> 6));
	note("step_rename(%s/%s -> %s, noreplace %d) = %s", wf_names[w], step_names[from], step_names[to],
	     noreplace, fuzz_errname(rc));
	if (!m->on || !m->s[from].on)
		want = -ENOENT;
	else if (from == to)
		want = 0;
	else if (m->s[to].on && noreplace)
		want = -EEXIST;
	else
		want = 0;
	EXPECT("step_rename", rc, want);
	if (rc == 0 && from != to) {
		if (m->s[to].on)
			row_gone(m->s[to].id);
		m->s[to] = m->s[from];
		m->last_step_id[to] = m->s[to].id;
		m->s[from].on = false;
	}
}

/* The model's step of a row id in a workflow, or NULL. */
static struct mstep *m_step_by_id(struct mwf *m, int64_t id)
{
	for (int i = 0; m && i < NSTEP; i++)
		if (m->s[i].on && m->s[i].id == id)
			return &m->s[i];
	return NULL;
}

/* The visible step with this row id, in whichever workflow holds it. */
static struct mstep *m_step_anywhere(int64_t id, struct mwf **wf)
{
	for (int w = 0; w < NWF; w++) {
		struct mstep *s = F.W[w].on ? m_step_by_id(&F.W[w], id) : NULL;

		if (s) {
			*wf = &F.W[w];
			return s;
		}
	}
	return NULL;
}

static void op_writer_open(void)
{
	unsigned a = take();
	int w = a % NWF, i = (a >> 1) % NSTEP, slot = (a >> 3) & 1;
	bool truncate = (a >> 4) & 1;
	struct mwf *m = &F.W[w];
	struct mstep *s = &m->s[i];
	struct mwriter *x = &F.wr[slot];
	int64_t id = s->on ? s->id : m->last_step_id[i];
	struct step_writer *sw = NULL;
	int rc;

	if (!id || x->on)
		return;
	rc = step_writer_open(&F.o, &(struct step_row){ .id = id }, truncate, &sw);
	note("step_writer_open(%s/%s id %" PRId64 ", truncate %d) = %s", wf_names[w], step_names[i], id,
	     truncate, fuzz_errname(rc));
	s = m_step_anywhere(id, &m);	/* renames move rows between names */
	EXPECT("step_writer_open", rc, s ? 0 : -ESTALE);
	if (rc)
		return;
	x->on = true;
	x->w = sw;
	x->wf_id = m->id;
	x->step_id = id;
	x->epoch = m->epoch;
	x->len = truncate ? 0 : s->len;
	memcpy(x->c, s->c, x->len);
	EXPECT_EQ("step_writer_size", step_writer_size(sw), (int64_t)x->len);
}

/*
 * -ESTALE when the writer's fingerprint is no longer its workflow's.
 * Whether a reset that found no checkpoint moves the epoch is the core's
 * business: when the writer's own checkpoint was removed, 0 is as right
 * as -ESTALE (*either).
 */
static int m_writer_stale(const struct mwriter *x, bool *either)
{
	struct mwf *m = m_wf_by_id(x->wf_id);

	*either = false;
	if (!m)
		return -ESTALE;
	if (m->epoch != x->epoch) {
		*either = x->gone;
		return -ESTALE;
	}
	return 0;
}

static void expect_stale(const char *what, int rc, int want, bool either)
{
	if (either && (rc == 0 || rc == -ESTALE))
		return;
	EXPECT(what, rc, want);
}

static void op_writer_write(void)
{
	unsigned a = take(), b = take();
	struct mwriter *x = &F.wr[a & 1];
	int mode = (a >> 1) % 4;	/* 0: at 0, 1: append, 2: at the end + 3 (a hole), 3: at 5 */
	size_t n = b % 40;
	int64_t off = mode == 0 ? 0 : mode == 1 ? (int64_t)x->len : mode == 2 ? (int64_t)x->len + 3 : 5;
	char data[40];
	int rc, want;

	if (!x->on)
		return;
	for (size_t j = 0; j < n; j++)
		data[j] = (char)('a' + (b + j * 7 + (unsigned)F.ntrace) % 26);
	rc = step_writer_write(&F.o, x->w, mode == 1 ? 12345 : off, data, n, mode == 1);
	note("step_writer_write(writer %d, off %" PRId64 ", %zu bytes%s) = %s", a & 1, off, n,
	     mode == 1 ? ", append" : "", fuzz_errname(rc));
	bool either = false;

	want = off + (int64_t)n > MAX_CKPT ? -EFBIG : m_writer_stale(x, &either);
	expect_stale("step_writer_write", rc, want, either);
	if (rc)
		return;
	/* Writing nothing changes nothing: not the size (POSIX write(2)). */
	if (n > 0 && off > (int64_t)x->len)
		memset(x->c + x->len, 0, (size_t)off - x->len);
	if (n > 0)
		memcpy(x->c + off, data, n);
	if (n > 0 && (size_t)off + n > x->len)
		x->len = (size_t)off + n;
	EXPECT_EQ("step_writer_size", step_writer_size(x->w), (int64_t)x->len);
}

static void op_writer_truncate(void)
{
	unsigned a = take();
	struct mwriter *x = &F.wr[a & 1];
	int64_t size = (a >> 1) % 80;
	int rc, want;

	if (!x->on)
		return;
	rc = step_writer_truncate(&F.o, x->w, size);
	note("step_writer_truncate(writer %d, %" PRId64 ") = %s", a & 1, size, fuzz_errname(rc));
	bool either = false;

	want = size > MAX_CKPT ? -EFBIG : m_writer_stale(x, &either);
	expect_stale("step_writer_truncate", rc, want, either);
	if (rc)
		return;
	if ((size_t)size > x->len)
		memset(x->c + x->len, 0, (size_t)size - x->len);
	x->len = (size_t)size;
}

static void close_writer(struct mwriter *x)
{
	step_writer_close(x->w);
	memset(x, 0, sizeof(*x));
}

static void op_writer_commit(void)
{
	unsigned a = take();
	struct mwriter *x = &F.wr[a & 1];
	struct mwf *m;
	struct mstep *s;
	int rc;

	if (!x->on)
		return;
	m = m_wf_by_id(x->wf_id);
	s = m_step_by_id(m, x->step_id);
	rc = step_writer_commit(&F.o, x->w, who_of(a >> 1));
	note("step_writer_commit(writer %d, %zu bytes) = %s", a & 1, x->len, fuzz_errname(rc));
	if (m && m->epoch != x->epoch)		/* its fingerprint was replaced */
		expect_stale("step_writer_commit", rc, -ESTALE, x->gone);
	else	/* a removed checkpoint (or workflow) commits into nothing */
		EXPECT("step_writer_commit", rc, 0);
	if (rc == 0 && s && m->epoch == x->epoch) {
		memcpy(s->c, x->c, x->len);
		s->len = x->len;
	}
	if ((a >> 2) & 1)
		close_writer(x);
}

static void op_writer_close(void)
{
	unsigned a = take();

	if (F.wr[a & 1].on) {
		note("step_writer_close(writer %d)", a & 1);
		close_writer(&F.wr[a & 1]);
	}
}

static void op_step_truncate(void)
{
	unsigned a = take();
	int w = a % NWF, i = (a >> 1) % NSTEP;
	int64_t size = (a >> 3) % 70;
	struct mwf *m = &F.W[w];
	struct mstep *s = &m->s[i];
	int64_t id = s->on ? s->id : m->last_step_id[i];
	int rc, want;

	if (!id)
		return;
	rc = step_truncate(&F.o, id, size, &callers[0]);
	note("step_truncate(%s/%s, %" PRId64 ") = %s", wf_names[w], step_names[i], size, fuzz_errname(rc));
	s = m_step_anywhere(id, &m);
	want = !s ? -ESTALE : size > MAX_CKPT ? -EFBIG : 0;
	EXPECT("step_truncate", rc, want);
	if (rc)
		return;
	if ((size_t)size > s->len)
		memset(s->c + s->len, 0, (size_t)size - s->len);
	s->len = (size_t)size;
}

static void op_clock(void)
{
	static const int64_t steps[] = {
		1, 999, 1000, 20000, 40001, 60000, 3600 * 1000, 86400 * 1000, 86400 * 1000 + 1,
		(int64_t)30 * 86400 * 1000,
	};
	unsigned a = take();
	int64_t d = steps[a % (sizeof(steps) / sizeof(steps[0]))];

	F.now += d;
	note("clock + %" PRId64 " ms", d);
	/* The mount's background renews its pins as time goes by. */
	EXPECT("store_pins_renew", store_pins_renew(F.st, F.now), 0);
}

static void close_reader(struct mreader *x)
{
	store_unpin(F.st, x->row.content);
	memset(x, 0, sizeof(*x));
}

/* Open a reader the way the mount does: the step must be visible. */
static void op_reader_open(void)
{
	unsigned a = take();
	int w = a % NWF, i = (a >> 1) % NSTEP;
	struct mreader *x = &F.rd[(a >> 3) & 1];
	struct mwf *m = &F.W[w];
	int64_t id = m->s[i].on ? m->s[i].id : m->last_step_id[i];
	struct mstep *s;
	int rc;

	if (!id || x->on)
		return;
	rc = step_get_pinned(&F.o, id, &x->row);
	note("reader open(%s/%s id %" PRId64 ") = %s", wf_names[w], step_names[i], id, fuzz_errname(rc));
	s = m_step_anywhere(id, &m);
	EXPECT("step_get_pinned", rc, s ? 0 : -ESTALE);
	if (rc)
		return;
	EXPECT_EQ("reader size", x->row.size, (int64_t)s->len);
	x->on = true;
	x->len = s->len;
	memcpy(x->c, s->c, s->len);
}

/* Whatever happened since (rewrites, resets, purges, removals), a reader
 * reads the version it opened. */
static void op_reader_read(void)
{
	unsigned a = take();
	struct mreader *x = &F.rd[a & 1];
	char buf[MAX_CKPT + 8];
	size_t got = 0;
	int64_t off = (a >> 1) % 8;
	int rc;

	if (!x->on)
		return;
	if (off > (int64_t)x->len)
		off = (int64_t)x->len;
	rc = store_content_read(F.st, x->row.content, x->row.size, off, buf,
				sizeof(buf), &got);
	note("reader read(%d, off %" PRId64 ") = %s, %zu bytes", a & 1, off, fuzz_errname(rc), got);
	EXPECT("store_content_read", rc, 0);
	if (got != x->len - (size_t)off || memcmp(buf, x->c + off, got) != 0) {
		fprintf(stderr, "read:   ");
		fuzz_print_bytes(buf, got);
		fprintf(stderr, "\nopened: ");
		fuzz_print_bytes(x->c + off, x->len - (size_t)off);
		fail("\na reader saw another version than the one it opened");
	}
	if ((a >> 4) & 1)
		close_reader(x);
}

static void op_remount(void)
{
	unsigned a = take();

	for (int i = 0; i < NREADER; i++)
		if (F.rd[i].on)
			close_reader(&F.rd[i]);
	for (int i = 0; i < NWRITER; i++)
		if (F.wr[i].on)
			close_writer(&F.wr[i]);
	store_close(F.st);
	F.st = NULL;
	open_store(false);
	note("remount");
	/* A clean unmount drops its holds; a new mount renews from scratch. */
	memset(F.h, 0, sizeof(F.h));
	F.holds_renew_at = 0;
	if (a & 1) {
		int64_t n = -1;

		EXPECT("step_purge", step_purge(&F.o, 1000, &n), 0);
		note("step_purge = %" PRId64, n);
	}
}

static void op_content_of_gen(void)
{
	unsigned a = take();
	int64_t gen = pick_gen(a);
	struct key_row r;
	char *buf = NULL;
	size_t len = 0;
	struct mkey *k = m_key_of_gen(gen, NULL);
	int rc = key_content(&F.o, gen, &r, &buf, &len);

	note("key_content(gen %" PRId64 ") = %s", gen, fuzz_errname(rc));
	free(buf);
	EXPECT("key_content", rc, k ? 0 : -ESTALE);
	if (k)
		check_content("key_content(gen)", gen, k);
}

/* The holding file closes: its hold ends. */
static void op_hold_release(void)
{
	struct mhold *hd = &F.h[take() % NHOLD];

	if (!hd->id)
		return;
	EXPECT("step_release_input", step_release_input(&F.o, hd->id), 0);
	note("step_release_input(%" PRId64 ")", hd->id);
	memset(hd, 0, sizeof(*hd));
}

/* The renewer's round: this mount's holds get a new lease when due. */
static void op_holds_renew(void)
{
	EXPECT("step_renew_holds", step_renew_holds(&F.o), 0);
	note("step_renew_holds");
	if (F.now < F.holds_renew_at)
		return;
	F.holds_renew_at = F.now + LEASE_MS / 3;
	for (int i = 0; i < NHOLD; i++)
		if (F.h[i].id && F.h[i].expires > F.now)
			F.h[i].expires = F.now + LEASE_MS;
}

typedef void (*op_fn)(void);

static const op_fn ops[] = {
	op_wf_create, op_wf_create, op_wf_remove, op_wf_rename, op_claim, op_claim, op_claim,
	op_finalize, op_finalize, op_touch, op_renew, op_release, op_bad_names, op_policy,
	op_policy, op_fingerprint, op_fingerprint, op_step_create, op_step_create, op_step_remove,
	op_step_rename, op_writer_open, op_writer_write, op_writer_write, op_writer_truncate,
	op_writer_commit, op_writer_close, op_step_truncate, op_clock, op_clock, op_remount,
	op_content_of_gen, op_reader_open, op_reader_read, op_reader_read,
	op_fingerprint, op_hold_release, op_holds_renew,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int count = 0;

	in = data;
	in_left = size;
	remove_store();
	memset(F.W, 0, sizeof(F.W));
	memset(F.wr, 0, sizeof(F.wr));
	memset(F.rd, 0, sizeof(F.rd));
	F.now = T0;
	F.last_gen = 0;
	memset(F.h, 0, sizeof(F.h));
	F.holds_renew_at = 0;
	F.nhandles = 0;
	F.nwf_ids = 0;
	F.ntrace = 0;
	open_store(true);

	while (in_left && count++ < 150) {
		ops[take() % (sizeof(ops) / sizeof(ops[0]))]();
		check_all();
	}

	for (int i = 0; i < NWRITER; i++)
		if (F.wr[i].on)
			close_writer(&F.wr[i]);
	for (int i = 0; i < NREADER; i++)
		if (F.rd[i].on)
			close_reader(&F.rd[i]);
	store_close(F.st);
	F.st = NULL;
	return 0;
}
