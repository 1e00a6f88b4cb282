/*
 * dssfs - mount a Dataiku DSS instance as a directory tree.
 *
 * main only parses options, resolves credentials, checks that DSS answers,
 * and runs the FUSE session.
 */
#include "dssfs/cache.h"
#include "dssfs/config.h"
#include "dssfs/fuseio.h"
#include "dssfs/http.h"
#include "dssfs/instances.h"
#include "dssfs/log.h"
#include "dssfs/mux.h"
#include "dssfs/ops.h"
#include "dssfs/service.h"
#include "dssfs/stats.h"
#include "dssfs/tree.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

struct options {
	char *instance;
	char *instances;    /* -o instances=: the names, joined by ',' */
	int instances_open; /* bare words that follow are more names */
	char *api_key_file;
	char *url;
	char *config;
	char *cafile;
	char *client_cert;
	char *client_key;
	int no_check_certificate;
	int cache_ttl;	  /* seconds */
	int cache_max_mb; /* MiB */
	double attr_timeout;
	double negative_timeout;
	int timeout;	     /* seconds */
	int connect_timeout; /* seconds */
	int retries;
	int max_response_mb;
	int stream_timeout; /* seconds */
	int max_inflight_mb;
	int read_only;
	int last_writer_wins;
	int scratch_max_mb;
	int dirty_max_mb;
	int spool_total_mb;
	int data_max_mb;
	int activity;
	int prefetch;
	int secret_on_cmdline;
	char *log_level;
	char *times_file;
	char *source;	  /* [SOURCE] MOUNTPOINT: what mount(8) gives first */
	char *mountpoint; /* the last one */
};

enum { KEY_SECRET, KEY_RO, KEY_INSTANCES };

#define OPT(t, field, v)                              \
	{                                             \
		t, offsetof(struct options, field), v \
	}

static const struct fuse_opt option_spec[] = {
    OPT("instance=%s", instance, 0),
    FUSE_OPT_KEY("instances=", KEY_INSTANCES),
    OPT("api_key_file=%s", api_key_file, 0),
    OPT("url=%s", url, 0),
    OPT("config=%s", config, 0),
    OPT("cafile=%s", cafile, 0),
    OPT("client_cert=%s", client_cert, 0),
    OPT("client_key=%s", client_key, 0),
    OPT("no_check_certificate", no_check_certificate, 1),
    OPT("cache_ttl=%d", cache_ttl, 0),
    OPT("cache_max=%d", cache_max_mb, 0),
    OPT("attr_timeout=%lf", attr_timeout, 0),
    OPT("negative_timeout=%lf", negative_timeout, 0),
    OPT("timeout=%d", timeout, 0),
    OPT("connect_timeout=%d", connect_timeout, 0),
    OPT("retries=%d", retries, 0),
    OPT("max_response=%d", max_response_mb, 0),
    OPT("stream_timeout=%d", stream_timeout, 0),
    OPT("max_inflight=%d", max_inflight_mb, 0),
    OPT("last_writer_wins", last_writer_wins, 1),
    OPT("scratch_max=%d", scratch_max_mb, 0),
    OPT("dirty_max=%d", dirty_max_mb, 0),
    OPT("spool_total=%d", spool_total_mb, 0),
    OPT("data_max=%d", data_max_mb, 0),
    OPT("activity", activity, 1),
    OPT("prefetch=%d", prefetch, 0),
    OPT("log_level=%s", log_level, 0),
    OPT("times_file=%s", times_file, 0),
    FUSE_OPT_KEY("api_key=", KEY_SECRET),
    FUSE_OPT_KEY("apikey=", KEY_SECRET),
    FUSE_OPT_KEY("key=", KEY_SECRET),
    FUSE_OPT_KEY("--api-key", KEY_SECRET),
    FUSE_OPT_KEY("--api-key=", KEY_SECRET),
    FUSE_OPT_KEY("--api-key ", KEY_SECRET),
    FUSE_OPT_KEY("--api_key=", KEY_SECRET),
    FUSE_OPT_KEY("ro", KEY_RO),
    FUSE_OPT_END,
};

/* Options of an fstab line that mean something to mount(8), mount.fuse3 or
 * systemd, and nothing to dssfs or the kernel.  mount.fuse3 drops some of
 * them, not all; systemd's mount units pass them all. */
static int ignored_mount_option(const char *opt)
{
	static const char *const names[] = {"_netdev", "nofail", "noauto", "auto",
					    "user",    "users",	 "nouser", "defaults"};
	static const char *const prefixes[] = {"x-", "comment="};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcmp(opt, names[i]))
			return 1;
	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
		if (!strncmp(opt, prefixes[i], strlen(prefixes[i])))
			return 1;
	return 0;
}

/* Whether a bare word of -o after `instances=' is one more instance name:
 * `-o instances=design,prod' reaches us split at the comma.  A word with
 * '=', or that libfuse, the kernel or mount(8) take as an option, is not. */
static int instance_word(const char *opt)
{
	static const char *const flags[] = {
	    "allow_other", "allow_root",  "auto_unmount", "default_permissions",
	    "clone_fd",	   "debug",	  "rw",		  "suid",
	    "nosuid",	   "dev",	  "nodev",	  "exec",
	    "noexec",	   "async",	  "sync",	  "dirsync",
	    "atime",	   "noatime",	  "nodiratime",	  "relatime",
	    "norelatime",  "strictatime", "lazytime",	  "nolazytime",
	    "blkdev"};

	if (strchr(opt, '=') || ignored_mount_option(opt))
		return 0;
	for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
		if (!strcmp(opt, flags[i]))
			return 0;
	return 1;
}

static int option_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct options *o = data;

	(void)outargs;
	switch (key) {
	case FUSE_OPT_KEY_NONOPT:
		/* mount(8) runs "dssfs SOURCE MOUNTPOINT -o ...": keep both,
		 * the mount point is handed back to libfuse after parsing. */
		if (o->source) {
			fprintf(stderr,
				"dssfs: too many arguments: `%s' (usage: dssfs [options] "
				"[SOURCE] MOUNTPOINT)\n",
				arg);
			return -1;
		}
		o->source = o->mountpoint;
		o->mountpoint = xstrdup(arg);
		return 0;
	case FUSE_OPT_KEY_OPT:
		if (o->instances_open && instance_word(arg)) {
			char *more = xasprintf("%s,%s", o->instances, arg);
			free(o->instances);
			o->instances = more;
			return 0;
		}
		return !ignored_mount_option(arg);
	case KEY_INSTANCES:
		free(o->instances);
		o->instances = xstrdup(arg + strlen("instances="));
		o->instances_open = 1;
		return 0;
	case KEY_SECRET:
		/* Do not echo arg: it is the secret. */
		o->secret_on_cmdline = 1;
		return 0;
	case KEY_RO:
		o->read_only = 1;
		return 1; /* keep: the kernel mounts read-only too */
	default:
		return 1;
	}
}

static void usage(const char *prog)
{
	printf("usage: %s [options] [SOURCE] MOUNTPOINT\n"
	       "       %s stats MOUNTPOINT\n\n"
	       "Mounts a Dataiku DSS instance as a directory tree.  `stats' prints what\n"
	       "the dssfs mounted at MOUNTPOINT has done (requests, cache, errors, saves,\n"
	       "memory) as JSON.\n\n"
	       "SOURCE (the first field of an fstab line): an instance of config.json,\n"
	       "as -o instance=NAME; `dssfs' or `none': no instance named.\n\n"
	       "Credentials (first source that has them wins):\n"
	       "    -o instance=NAME        an instance of ~/.dataiku/config.json\n"
	       "    -o instances=A,B        several instances of config.json (`all': every\n"
	       "                            one), a folder each; alone, not with the\n"
	       "                            other credential options\n"
	       "    -o api_key_file=PATH    read the API key from PATH (chmod 600)\n"
	       "    -o url=URL              the DSS URL (e.g. https://dss:11200)\n"
	       "    -o config=PATH          config file instead of ~/.dataiku/config.json\n"
	       "    environment             DKU_DSS_URL, DKU_API_KEY, DKU_NO_CHECK_CERTIFICATE\n"
	       "    An API key is never accepted on the command line.\n\n"
	       "TLS:\n"
	       "    -o no_check_certificate do not verify the server certificate\n"
	       "    -o cafile=PATH          CA bundle to verify the server with\n"
	       "    -o client_cert=PATH     client certificate (PEM)\n"
	       "    -o client_key=PATH      client certificate's key (PEM)\n\n"
	       "Caching and timeouts:\n"
	       "    -o cache_ttl=SECONDS    keep fetched objects this long (default 30)\n"
	       "    -o cache_max=MIB        memory for cached objects (default 32)\n"
	       "    -o attr_timeout=SECONDS kernel attribute/entry cache (default 1)\n"
	       "    -o negative_timeout=SECONDS  kernel cache of names that cannot\n"
	       "                            exist (default 30)\n"
	       "    -o timeout=SECONDS      limit for one attempt of an HTTP request,\n"
	       "                            connection included (default 30)\n"
	       "    -o stream_timeout=SECONDS  limit for a whole stream (export.zip),\n"
	       "                            which must also never stall for `timeout`\n"
	       "                            (default 600)\n"
	       "    -o connect_timeout=SECONDS  limit for connecting (default 10)\n"
	       "    -o retries=N            retries of failed reads, 0 to 10 (default 2);\n"
	       "                            a read takes at most (N+1)*timeout + N*10 s\n"
	       "    -o prefetch=N           parallel fetches after a listing (default 16,\n"
	       "                            0: none)\n"
	       "    -o max_response=MIB     largest response accepted, and largest file\n"
	       "                            saved (default 256)\n"
	       "    -o max_inflight=MIB     memory for responses being received, all\n"
	       "                            together (default max(2*max_response, 64))\n\n"
	       "Saving:\n"
	       "    -o last_writer_wins     save even if the object changed on DSS since\n"
	       "                            it was read (default: refuse with ESTALE)\n"
	       "    -o scratch_max=MIB      memory for editors' temporary files (default 64)\n"
	       "    -o dirty_max=MIB        memory for files open for writing, in all\n"
	       "                            (default 256)\n"
	       "    -o spool_total=MIB      disk for exports and managed folders' files\n"
	       "                            (default 4096)\n"
	       "    -o data_max=MIB         a dataset's data.csv, at most (default 100)\n"
	       "    -o activity             list scenario runs, jobs and history (always\n"
	       "                            reachable by name)\n"
	       "    -o times_file=PATH|none where the times of files DSS gives none are\n"
	       "                            kept across mounts (default: a file per URL\n"
	       "                            in ~/.cache/dssfs)\n\n"
	       "Logging:\n"
	       "    -o log_level=LEVEL      error, warning, info or debug (default info;\n"
	       "                            -d: debug); on stderr with -f, else syslog\n\n"
	       "Signals: SIGHUP drops every cached object; SIGUSR1 logs the figures\n"
	       "of `stats'; SIGTERM unmounts.  Under systemd (Type=notify) dssfs\n"
	       "reports READY=1 once mounted, and its figures in STATUS=.\n\n"
	       "See dssfs(1).\n\n",
	       prog, prog);
}

/* The SIGHUP handler only raises hup_pending and posts hup_sem; the hup
 * thread does the work.  The flags are read and written by several threads
 * (and the handler), so they are atomics, and lock-free ones, which C11
 * (7.14.1.1) lets a signal handler use. */
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "the signal flags must be lock-free");
static sem_t hup_sem;
static atomic_int hup_pending, usr1_pending, stopping;

static void on_sighup(int sig)
{
	int saved_errno = errno; /* sem_post may set it under the interrupted code */

	atomic_store(sig == SIGUSR1 ? &usr1_pending : &hup_pending, 1);
	sem_post(&hup_sem);
	errno = saved_errno;
}

/* SIGTERM and SIGINT end the session.  libfuse's handler only marks the
 * session as exiting; the loop then joins its workers, each once the
 * request it handles is answered.  A read waiting on a hung DSS would hold
 * the exit for its whole worst case (timeout and retries), so on_stop
 * first ends every read in flight (http_cancel_reads), then hands over to
 * libfuse's handler.  A save in flight goes on to its end: cancelling it
 * would lose an edit. */
_Static_assert(ATOMIC_POINTER_LOCK_FREE == 2, "stop_http must be lock-free");
static _Atomic(struct http *) stop_http[MUX_MAX]; /* each instance's */
static struct sigaction fuse_term_sa, fuse_int_sa;

static void cancel_reads(void)
{
	for (int i = 0; i < MUX_MAX; i++)
		http_cancel_reads(atomic_load(&stop_http[i]));
}

static void on_stop(int sig)
{
	int saved_errno = errno;
	const struct sigaction *fuse_sa = sig == SIGTERM ? &fuse_term_sa : &fuse_int_sa;

	cancel_reads();
	fuse_sa->sa_handler(sig);
	errno = saved_errno;
}

/* The kernel ended the session (unmount, or an abort through
 * /sys/fs/fuse/connections): as for SIGTERM, reads in flight end now, so
 * that the loop's join of its workers does not wait for DSS. */
static void on_session_end(void *arg)
{
	(void)arg;
	cancel_reads();
}

/* The mount's instances (one, or with -o instances= several) */
static struct instance inst[MUX_MAX];
static int ninst;

/* Puts on_stop in front of the handler libfuse installed for sig, if it
 * installed one (it leaves a signal the user ignores, e.g. SIGINT under
 * nohup, alone). */
static void chain_stop(int sig, struct sigaction *fuse_sa)
{
	struct sigaction sa;

	if (sigaction(sig, NULL, fuse_sa) || fuse_sa->sa_handler == SIG_IGN ||
	    fuse_sa->sa_handler == SIG_DFL) {
		fuse_sa->sa_handler = SIG_DFL;
		return;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop;
	sigemptyset(&sa.sa_mask);
	sigaction(sig, &sa, NULL);
}

/* Gives libfuse its handler back, so that fuse_remove_signal_handlers
 * recognises and removes it. */
static void unchain_stop(int sig, const struct sigaction *fuse_sa)
{
	if (fuse_sa->sa_handler != SIG_DFL)
		sigaction(sig, fuse_sa, NULL);
}

static void inval_kernel(uint64_t ino, void *se)
{
	/* Stopping: no more, the session's descriptor is about to close. */
	if (!atomic_load(&stopping))
		fuse_lowlevel_notify_inval_inode(se, ino, 0, 0);
}

/* The service manager's STATUS= (READY=1 too with ready): the figures of
 * `dssfs stats' and the last error, in one line. */
static void notify_status(const struct ops_ctx *c, int ready)
{
	struct buf fig = BUF_INIT, line = BUF_INIT;
	char last[512];

	if (!service_listening() || !c->stats)
		return;
	c->stats(c->stats_arg, c, &fig);
	log_last_error(last, sizeof(last));
	service_status_line(fig.data, last, &line);
	if (ready)
		service_ready(line.data);
	else
		service_status(line.data);
	buf_release(&line);
	buf_release(&fig);
}

/* Waits for a signal's post; under a service manager, also wakes every
 * SERVICE_STATUS_PERIOD_S to report the figures.  Returns 1 on a post. */
static int wait_signal_or_period(const struct ops_ctx *c)
{
	struct timespec until;

	if (!service_listening()) {
		while (sem_wait(&hup_sem))
			if (errno != EINTR)
				return 0;
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += SERVICE_STATUS_PERIOD_S;
	while (sem_clockwait(&hup_sem, CLOCK_MONOTONIC, &until)) {
		if (errno == ETIMEDOUT) {
			notify_status(c, 0);
			return 0;
		}
		if (errno != EINTR)
			return 0;
	}
	return 1;
}

static void *hup_thread(void *arg)
{
	struct ops_ctx *c = arg;

	for (;;) {
		if (!wait_signal_or_period(c))
			continue;
		if (atomic_load(&stopping))
			return NULL;
		if (atomic_exchange(&hup_pending, 0)) {
			for (int i = 0; i < ninst; i++) {
				tree_drop_caches(inst[i].tree);
				/* and what the kernel keeps of them: sizes,
				 * times, pages */
				tree_for_each_ino(inst[i].tree, inval_kernel, c->se);
			}
			log_info("SIGHUP: dropped all cached objects");
		}
		if (atomic_exchange(&usr1_pending, 0) && c->stats) {
			struct buf fig = BUF_INIT;
			c->stats(c->stats_arg, c, &fig);
			cJSON_Minify(fig.data);
			log_info("stats: %s", fig.data);
			buf_release(&fig);
			notify_status(c, 0);
		}
	}
}

#define HUP_STOP_S 2

/* Like notifier_stop: not waited for beyond HUP_STOP_S if the kernel holds
 * it in an invalidation (then left to the process's exit). */
static int stop_hup_thread(pthread_t tid)
{
	struct timespec until;

	atomic_store(&stopping, 1);
	sem_post(&hup_sem);
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += HUP_STOP_S;
	if (pthread_timedjoin_np(tid, NULL, &until)) {
		log_warn("the kernel does not take a cache invalidation; not waiting for it");
		return -ETIMEDOUT;
	}
	return 0;
}

/* The API key is about to be in this process's memory: no core dump, and
 * no other process of the same user may read it (ptrace, /proc/PID/mem or
 * environ).  Both are inherited by the child fuse_daemonize() forks. */
static void keep_memory_private(void)
{
	const struct rlimit no_core = {0, 0};

	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 || setrlimit(RLIMIT_CORE, &no_core) != 0)
		log_warn("cannot keep the API key out of core dumps: %s", strerror(errno));
}

/* The instance SOURCE names, if any, in *instance (default: -o instance=).
 * Returns 0, or -EINVAL if the two name different instances. */
static int source_instance(const struct options *o, const char **instance)
{
	const char *s = o->source;

	*instance = o->instance;
	if (!s || !*s || !strcmp(s, "dssfs") || !strcmp(s, "none"))
		return 0;
	if (o->instance && strcmp(o->instance, s)) {
		fprintf(stderr,
			"dssfs: the source `%s' and -o instance=%s name different instances\n", s,
			o->instance);
		return -EINVAL;
	}
	*instance = s;
	return 0;
}

/* subtype, fsname (SOURCE, as mount(8) and df show it), and
 * default_permissions: the kernel checks the modes dssfs shows.  Without
 * it, with allow_other, every local user could write DSS with the
 * mounter's key and open the mounter's 0600 scratch files. */
static void add_mount_options(struct fuse_args *args, const char *source)
{
	char *opts = NULL, *fsname = xasprintf("fsname=%s", source && *source ? source : "dssfs");

	fuse_opt_add_opt(&opts, "subtype=dssfs,default_permissions");
	fuse_opt_add_opt_escaped(&opts, fsname);
	fuse_opt_add_arg(args, "-o");
	fuse_opt_add_arg(args, opts);
	free(opts);
	free(fsname);
}

static int64_t now_epoch_ms(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* -o instances= takes each instance's URL, key and no_check_certificate
 * from config.json: no other source of credentials may be named with it.
 * (The environment's DKU_DSS_URL and DKU_API_KEY are not used, as with
 * -o instance=.) */
static int instances_alone(const struct options *o, const char *instance)
{
	if (!instance && !o->url && !o->api_key_file)
		return 0;
	fprintf(stderr, "dssfs: -o instances= takes each instance's URL and key from "
			"config.json; it cannot be combined with -o instance=, -o url=, "
			"-o api_key_file= or an instance as SOURCE\n");
	return -EINVAL;
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct options o = {.cache_ttl = 30,
			    .cache_max_mb = 32,
			    .attr_timeout = 1.0,
			    .negative_timeout = 30.0,
			    .timeout = 30,
			    .connect_timeout = 10,
			    .retries = 2,
			    .max_response_mb = 256,
			    .stream_timeout = 600,
			    .scratch_max_mb = 64,
			    .dirty_max_mb = 256,
			    .spool_total_mb = 4096,
			    .data_max_mb = 100,
			    .prefetch = 16};
	struct fuse_cmdline_opts cmd = {0};
	struct buf err = BUF_INIT;
	struct fuse_session *se = NULL;
	struct ops_ctx ctx = {.open_lock = PTHREAD_MUTEX_INITIALIZER, .mnt_id = -2};
	struct stats_src stats_src;
	struct stats_multi stats_multi;
	char *mountpoint_abs = NULL;
	struct fuse_loop_config *loop = NULL;
	pthread_t hup_tid;
	int hup_started = 0, mounted = 0, handlers = 0, ready = 0;
	int stuck = 0; /* a thread left blocked in the kernel still uses se, tree */
	int ret = 1;

	/* `dssfs stats MOUNTPOINT` (an instance called "stats" is mounted
	 * with -o instance=stats, or with any option after the mountpoint) */
	if (argc == 3 && !strcmp(argv[1], "stats"))
		return stats_command(argv[2]);
	log_detect_journal();
	if (fuse_opt_parse(&args, &o, option_spec, option_proc) == -1)
		goto out;
	if (o.secret_on_cmdline) {
		fprintf(stderr, "dssfs: refusing an API key on the command line: every user could "
				"read it in ps and it would stay in your shell history.\n"
				"Put it in DKU_API_KEY, in ~/.dataiku/config.json (dss_instances), "
				"or in a file (chmod 600) named with -o api_key_file=PATH.\n");
		goto out;
	}
	if (o.mountpoint)
		fuse_opt_add_arg(&args, o.mountpoint);
	if (fuse_parse_cmdline(&args, &cmd) != 0)
		goto out;
	if (cmd.show_help) {
		usage(argv[0]);
		fuse_cmdline_help();
		fuse_lowlevel_help();
		ret = 0;
		goto out;
	}
	if (cmd.show_version) {
		printf("dssfs version %s\n", DSSFS_VERSION);
		fflush(stdout);
		fuse_lowlevel_version();
		ret = 0;
		goto out;
	}
	if (!cmd.mountpoint) {
		fprintf(stderr, "usage: %s [options] [SOURCE] MOUNTPOINT (see --help)\n", argv[0]);
		goto out;
	}
	if (o.cache_ttl < 0 || o.cache_max_mb < 1 || o.attr_timeout <= 0 ||
	    o.negative_timeout <= 0 || o.timeout < 1 || o.connect_timeout < 1 || o.retries < 0 ||
	    o.max_response_mb < 1 || o.scratch_max_mb < 1 || o.dirty_max_mb < 1 ||
	    o.spool_total_mb < 1 || o.data_max_mb < 1 || o.prefetch < 0 || o.prefetch > 256) {
		fprintf(stderr, "dssfs: invalid option value (see --help for the ranges)\n");
		goto out;
	}
	if (o.retries < 0 || o.retries > HTTP_RETRIES_MAX) {
		fprintf(stderr, "dssfs: invalid option value: retries=%d (0 to %d)\n", o.retries,
			HTTP_RETRIES_MAX);
		goto out;
	}
	if (o.stream_timeout < 1 ||
	    (o.max_inflight_mb && o.max_inflight_mb / 2 < o.max_response_mb)) {
		fprintf(stderr, "dssfs: invalid option value: stream_timeout must be at least 1, "
				"max_inflight at least twice max_response\n");
		goto out;
	}
	if (o.log_level) {
		enum log_level lvl;
		if (log_parse_level(o.log_level, &lvl)) {
			fprintf(stderr,
				"dssfs: invalid option value: log_level=%s (error, "
				"warning, info or debug)\n",
				o.log_level);
			goto out;
		}
		log_set_level(lvl);
	}
	if (cmd.debug)
		log_set_level(LOG_LVL_DEBUG);

	const char *instance;
	if (source_instance(&o, &instance))
		goto out;
	if (o.instances && instances_alone(&o, instance))
		goto out;
	keep_memory_private();
	int resolved;
	if (o.instances) {
		struct config_sources common = {
		    .config_path = o.config,
		    .no_check_certificate = o.no_check_certificate,
		};
		resolved = instances_resolve(o.instances, &common, inst, &ninst, &err);
	} else {
		struct config_sources src = {
		    .instance = instance,
		    .api_key_file = o.api_key_file,
		    .url = o.url,
		    .config_path = o.config,
		    .no_check_certificate = o.no_check_certificate,
		};
		ninst = 1;
		resolved = config_resolve(&src, &inst[0].cfg, &err);
	}
	config_scrub_environment();
	if (resolved) {
		fprintf(stderr, "dssfs: %s\n", err.data);
		goto out;
	}

	struct http_config hc = {
	    .ca_file = o.cafile,
	    .client_cert = o.client_cert,
	    .client_key = o.client_key,
	    .connect_timeout_ms = o.connect_timeout * 1000L,
	    .timeout_ms = o.timeout * 1000L,
	    .stream_timeout_ms = o.stream_timeout * 1000L,
	    .max_body = (size_t)o.max_response_mb << 20,
	    .max_inflight = (size_t)o.max_inflight_mb << 20,
	    .retries = o.retries,
	};
	struct tree_options to = {
	    .mount_time_ms = now_epoch_ms(),
	    .uid = getuid(),
	    .gid = getgid(),
	    .read_only = o.read_only,
	    .last_writer_wins = o.last_writer_wins,
	    .scratch_max = (size_t)o.scratch_max_mb << 20,
	    .prefetch_threads = o.prefetch,
	    .spool_max = (size_t)o.max_response_mb << 20,
	    .spool_total = (size_t)o.spool_total_mb << 20,
	    .spool_ttl_ms = (int64_t)o.cache_ttl * 1000,
	    .data_max = (size_t)o.data_max_mb << 20,
	    .list_activity = o.activity,
	    .times_file = o.times_file, /* (instance_open makes it each instance's) */
	};
	/* cache_max is the mount's: shared evenly by its instances */
	size_t cache_max = ((size_t)o.cache_max_mb << 20) / (size_t)ninst;
	if (cache_max < ((size_t)1 << 20))
		cache_max = (size_t)1 << 20;
	for (int i = 0; i < ninst; i++)
		if (instance_open(&inst[i], i, &hc, &to, cache_max, (int64_t)o.cache_ttl * 1000))
			goto out;
	for (int i = 0; i < ninst; i++)
		if (instance_probe(&inst[i]))
			goto out;

	if (o.instances) {
		ctx.mux = instances_mux(inst, ninst, to.mount_time_ms, cache_max, &stats_multi);
		if (!ctx.mux)
			goto out;
		ctx.stats = stats_render_multi;
		ctx.stats_arg = &stats_multi;
	} else {
		ctx.tree = inst[0].tree;
		stats_src = (struct stats_src){inst[0].http, inst[0].cache, inst[0].tree, cache_max,
					       cache_monotonic_ms()};
		ctx.stats = stats_render;
		ctx.stats_arg = &stats_src;
	}
	ctx.attr_timeout = o.attr_timeout;
	ctx.negative_timeout_permanent = o.negative_timeout;
	ctx.read_only = o.read_only;
	ctx.max_file = (size_t)o.max_response_mb << 20;
	ctx.buffered_max = (size_t)o.dirty_max_mb << 20;
	mountpoint_abs = realpath(cmd.mountpoint, NULL);
	ctx.mountpoint = mountpoint_abs;

	add_mount_options(&args, o.source);
	se = fuse_session_new(&args, &dssfs_ops, sizeof(dssfs_ops), &ctx);
	if (!se)
		goto out;
	ctx.se = se;
	for (int i = 0; i < ninst; i++)
		atomic_store(&stop_http[i], inst[i].http);
	if (fuse_set_signal_handlers(se) != 0)
		goto out;
	handlers = 1;
	chain_stop(SIGTERM, &fuse_term_sa);
	chain_stop(SIGINT, &fuse_int_sa);
	sem_init(&hup_sem, 0, 0);
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_sighup;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);

	if (fuse_session_mount(se, cmd.mountpoint) != 0)
		goto out;
	mounted = 1;
	if (fuseio_attach(se, on_session_end, NULL) != 0)
		goto out;
	if (fuse_daemonize(cmd.foreground) != 0)
		goto out;
	if (!cmd.foreground)
		log_use_syslog(1);
	for (int i = 0; i < ninst; i++)
		tree_start(inst[i].tree);
	if (ops_start(&ctx))
		goto out;
	if (pthread_create(&hup_tid, NULL, hup_thread, &ctx) == 0)
		hup_started = 1;
	if (!o.instances) {
		log_info("mounted %s at %s (key from %s)", inst[0].cfg.url, cmd.mountpoint,
			 inst[0].cfg.origin);
	} else {
		struct buf list = BUF_INIT;
		for (int i = 0; i < ninst; i++)
			buf_addf(&list, "%s%s (%s, key from %s)", i ? ", " : "", inst[i].name,
				 inst[i].cfg.url, inst[i].cfg.origin);
		log_info("mounted %d instances at %s: %s", ninst, cmd.mountpoint, list.data);
		buf_release(&list);
	}
	/* Mounted, and DSS listed the projects: ready (the kernel's requests
	 * wait for the loop, which starts now). */
	notify_status(&ctx, 1);
	ready = 1;

	if (cmd.singlethread) {
		ret = fuse_session_loop(se);
	} else {
		loop = fuse_loop_cfg_create();
		fuse_loop_cfg_set_clone_fd(loop, (unsigned)cmd.clone_fd);
		/* -1 (unset) means libfuse's defaults; passing it on only
		 * makes libfuse print a warning. */
		if (cmd.max_idle_threads != UINT_MAX)
			fuse_loop_cfg_set_idle_threads(loop, cmd.max_idle_threads);
		if (cmd.max_threads > 0 && cmd.max_threads <= 100000)
			fuse_loop_cfg_set_max_threads(loop, cmd.max_threads);
		ret = fuse_session_loop_mt(se, loop);
	}
	/* The loop returns the number of the signal that stopped it (SIGTERM,
	 * SIGINT: a clean stop) or -errno. */
	ret = ret < 0 ? 1 : 0;
out:
	/* The order of the shutdown:
	 * 1. Reads end at once (SIGTERM/SIGINT did it already, see on_stop;
	 *    after an unmount, prefetch threads may still wait on DSS).  Saves
	 *    go on: http_cancel_reads spares them.
	 * 2. The threads that send the kernel invalidations (SIGHUP thread,
	 *    notifier) stop, before the unmount closes the descriptor they
	 *    write to.  One blocked in the kernel (on a lock held by a request
	 *    no worker will answer now) is not waited for beyond a bound: only
	 *    closing /dev/fuse ends that, and the process's exit does.
	 * 3. The unmount.
	 * 4. Unsaved buffers of files still open: saved within a bound, or
	 *    logged by path (their requests are saves: not cancelled).
	 * 5. Everything else ends (http_cancel_all) and the prefetch threads
	 *    are joined (tree_free). */
	if (ready)
		service_stopping();
	for (int i = 0; i < ninst; i++)
		http_cancel_reads(inst[i].http);
	if (hup_started && stop_hup_thread(hup_tid))
		stuck = 1;
	if (ops_stop(&ctx))
		stuck = 1;
	if (loop)
		fuse_loop_cfg_destroy(loop);
	if (se && mounted)
		fuse_session_unmount(se);
	if (ctx.tree || ctx.mux)
		ops_save_all(&ctx, cache_monotonic_ms() + 30000);
	ops_release_all(&ctx);
	if (se && handlers) {
		unchain_stop(SIGTERM, &fuse_term_sa);
		unchain_stop(SIGINT, &fuse_int_sa);
		fuse_remove_signal_handlers(se);
	}
	for (int i = 0; i < ninst; i++)
		http_cancel_all(inst[i].http);
	/* A thread left in the kernel (step 2) may still use these: the exit
	 * frees them. */
	if (!stuck) {
		if (se)
			fuse_session_destroy(se);
		mux_free(ctx.mux);
		for (int i = 0; i < ninst; i++)
			instance_close(&inst[i]);
		http_global_cleanup();
	}
	for (int i = 0; i < ninst; i++)
		instance_release(&inst[i]);
	buf_release(&err);
	free(cmd.mountpoint);
	free(mountpoint_abs);
	free(o.instance);
	free(o.instances);
	free(o.api_key_file);
	free(o.url);
	free(o.config);
	free(o.cafile);
	free(o.client_cert);
	free(o.client_key);
	free(o.source);
	free(o.mountpoint);
	free(o.log_level);
	free(o.times_file);
	fuse_opt_free_args(&args);
	return ret;
}
