/*
 * tree - the DSS instance as a tree of inodes: what exists, its attributes
 * and its content.  This is the engine under the FUSE operations; it walks
 * the rows of pathtab and never tests which kind of DSS object it holds.
 *
 * Inodes.  The root is inode 1.  Every other node is numbered from a 64-bit
 * hash of its path, so a path keeps its number for as long as the mount
 * lives (also after the kernel forgets it and looks it up again).  A node
 * exists from its first lookup until the kernel forgets it (nlookup 0).
 *
 * Resources.  Every document comes from the cache (one entry per REST
 * resource, e.g. "projects/SALES/datasets/orders"), fetched at most once
 * per TTL however many files and threads ask for it.  A file's bytes are the
 * deterministic rendering of its projection of the resource, so st_size is
 * exact and equal to what read() returns.  Renderings are kept with the
 * resource.
 *
 * Times.  A file takes the versionTag.lastModifiedOn of its own document
 * when the table says where it is; anything else takes the time of the DSS
 * object it belongs to, read from that object's item in its parent's
 * listing each time (so a refreshed listing moves it); the root and what
 * is above the projects, the mount time.  A file with no time from DSS
 * (an instance object) takes the mount time when first seen, and keeps it
 * in the next mounts while its content is the same (times_file).
 *
 * Saving.  A writable file (its row has a PUT endpoint) is saved whole:
 * tree_save() validates the bytes (JSON files must parse as an object with
 * the keys the endpoint needs; text must be UTF-8), re-reads the document
 * and checks that neither its versionNumber (where it has a versionTag) nor
 * the file's content changed on DSS since the file was read through the
 * mount (-ESTALE otherwise, unless last_writer_wins), and sends the whole
 * object
 * (for a projection, the freshly read document with that part replaced).
 * Content equal to what DSS holds sends nothing.  Afterwards the cached
 * resources it touched, and the listings above it, are dropped.
 *
 * Scratch files.  Names that no DSS object can have in a directory (vim's
 * .x.swp and 4913, x~, #x#, temp files of sed -i and rsync) are local files
 * kept in memory (scratch.h), listed with the directory, never sent to DSS.
 * rename(scratch -> DSS file) saves; rename(DSS file -> scratch name) copies;
 * DSS objects are never created or deleted through the mount (EPERM).
 *
 * Prefetch.  Listing a directory queues, for a pool of threads, the
 * resources its children will need (prefetch.h), so a walk by ls -l, tar or
 * rsync finds them fetched, in parallel, over reused connections.
 *
 * Errors.  Every function returns 0 or -errno.  A listing that cannot be
 * fetched is an error, never an empty directory.
 *
 * Thread-safe: any number of FUSE worker threads may call in at once.
 */
#ifndef DSSFS_TREE_H
#define DSSFS_TREE_H

#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "dssfs/buf.h"
#include "dssfs/prefetch.h"

struct http;
struct cache;
struct tree;

struct tree_options {
	int64_t mount_time_ms; /* epoch ms, the root's time */
	uid_t uid;
	gid_t gid;
	int read_only;	      /* shows every file without write permission */
	int last_writer_wins; /* save even if the object changed since read */
	size_t scratch_max;   /* bytes of scratch files held at most */
	int prefetch_threads; /* parallel fetches after a listing; 0: none */
	size_t spool_max;     /* largest stream spooled (bytes) */
	size_t spool_total;   /* bytes of all streams spooled at once */
	int64_t spool_ttl_ms; /* a spooled stream is dropped after this */
	size_t data_max;      /* a dataset's data.csv, at most (bytes; 0: the default) */
	int list_activity;    /* list the activity folders (pathtab.h `activity`) */
	/* where the times of files that DSS gives no time (the instance's
	 * objects) are remembered from one mount to the next; NULL: nowhere
	 * (they then take the mount time at each mount).  (instance_open
	 * takes -o times_file's value here and makes it the instance's
	 * path.) */
	const char *times_file;
	/* 0, or the high bits every inode number of this tree carries (its
	 * root is ino_base | TREE_ROOT_INO): several trees in one mount have
	 * disjoint numbers (mux.h).  Its low TREE_INO_BITS bits must be 0. */
	uint64_t ino_base;
};

#define TREE_INO_BITS 56
#define TREE_INO_LOW_MASK ((UINT64_C(1) << TREE_INO_BITS) - 1)

/* data.csv's bound when tree_options.data_max is 0 (-o data_max's default). */
#define TREE_DATA_MAX_DEFAULT ((size_t)100 << 20)

/* Uses (does not own) h and c; c must be made with tree_cache_new().  Call
 * it before starting threads: it limits glibc's malloc arenas (to 2, unless
 * MALLOC_ARENA_MAX or GLIBC_TUNABLES sets arena_max), which keeps memory
 * one thread frees usable by the others (README, "Memory"). */
struct tree *tree_new(struct http *h, struct cache *c, const struct tree_options *o);
void tree_free(struct tree *t); /* NULL-safe */

/* Starts the prefetch threads: call after daemonising (fork keeps no
 * threads). */
void tree_start(struct tree *t);

/* A cache suitable for tree_new (its values are the tree's resources). */
struct cache *tree_cache_new(size_t max_bytes, int64_t ttl_ms);

#define TREE_ROOT_INO 1

/* The inode number of the tree's root: ino_base | TREE_ROOT_INO. */
uint64_t tree_root_ino(const struct tree *t);

/* Resolves `name` in directory `parent`.  On success takes one lookup
 * reference on the child and fills *ino and *st.  On -ENOENT, *permanent
 * says whether the name can never exist there (no table row can match it),
 * so a negative entry may be cached longer. */
int tree_lookup(struct tree *t, uint64_t parent, const char *name, uint64_t *ino, struct stat *st,
		int *permanent);

/* Drops n lookup references. */
void tree_forget(struct tree *t, uint64_t ino, uint64_t n);

int tree_getattr(struct tree *t, uint64_t ino, struct stat *st);

struct tree_dirent {
	char *name;
	uint64_t ino;
	mode_t mode; /* S_IFDIR, S_IFREG or S_IFLNK */
};

struct tree_dir {
	size_t n;
	struct tree_dirent *ents; /* ".", ".." first */
};

/* Lists a directory completely, or fails. */
int tree_readdir(struct tree *t, uint64_t ino, struct tree_dir *out);
void tree_dir_release(struct tree_dir *d);

/* The target of symbolic link ino, appended to out (relative to the link's
 * folder); -EINVAL if ino is not a link. */
int tree_readlink(struct tree *t, uint64_t ino, struct buf *out);

enum { TREE_OPEN_WRITE = 1, TREE_OPEN_TRUNC = 2 };

/* What a save is checked against: the versionNumber of the file's document
 * (-1: unknown or none) and a hash of the bytes the user read (0: unknown). */
struct tree_base {
	int64_t version;
	uint64_t hash;
};

/* Who asks: the process (thread group) behind a FUSE request, its session
 * and user.  What a process reads is what its own saves are checked
 * against; a process that never read the file is checked against the last
 * read of its session (a shell's `jq . f > t && mv t f`), and without either
 * the save is not checked. */
struct tree_caller {
	int64_t tgid; /* 0: unknown (then nothing is recorded or found) */
	int64_t sid;
	uint32_t uid;
};

/* fn is called with every inode whose content or attributes a save may
 * have changed (the kernel's cache of it must be dropped).  Called from the
 * saving thread, without tree locks held. */
void tree_set_changed_cb(struct tree *t, void (*fn)(uint64_t ino, void *ctx), void *ctx);

/* Opens a file: copies its bytes into *content (reset first; left empty with
 * TREE_OPEN_TRUNC) and sets *base to the version a save will be checked
 * against (-1 if none).  Opening a read-only file for writing fails with
 * -EACCES (-EROFS on a read-only mount).  *size_changed is set when the
 * bytes have another length than the st_size last reported for ino: the
 * kernel's cached size must then be dropped, or it would cut reads at the
 * old size. */
int tree_open(struct tree *t, uint64_t ino, int flags, const struct tree_caller *who,
	      struct buf *content, struct tree_base *base, int *size_changed);

/* TREE_SPOOLED: a file of a managed folder, of any size: read as a stream;
 * written through a temporary file (tree_open_spooled), never in memory. */
enum { TREE_API_RO, TREE_API_RW, TREE_SCRATCH, TREE_STREAM, TREE_SPOOLED };
/* What kind of file ino is (or -errno). */
int tree_file_kind(struct tree *t, uint64_t ino);

/* Saves a file's whole content; see above.  *base: in, what the handle
 * read (version -1 and hash 0 for a handle opened with O_TRUNC: then the
 * caller's own last read is used); out, what DSS now holds. */
int tree_save(struct tree *t, uint64_t ino, const char *data, size_t len,
	      const struct tree_caller *who, struct tree_base *base);

/* Creates a scratch file and takes a lookup reference on it.  -EPERM for a
 * name a DSS object could have there. */
int tree_create(struct tree *t, uint64_t parent, const char *name, mode_t mode, uint64_t *ino,
		struct stat *st);
/* Removes a scratch file; -EPERM for a DSS object.  In a file tree (the
 * project library, a managed folder's files) creating and removing make
 * and delete the real file on DSS. */
int tree_unlink(struct tree *t, uint64_t parent, const char *name);
/* Folders of a file tree (elsewhere -EPERM: DSS objects are made in DSS).
 * tree_mkdir takes a lookup reference on the new folder. */
int tree_mkdir(struct tree *t, uint64_t parent, const char *name, uint64_t *ino, struct stat *st);
int tree_rmdir(struct tree *t, uint64_t parent, const char *name);
/* See "Scratch files" above.  flags: 0 or RENAME_NOREPLACE.  When the rename
 * saved a DSS file, *saved_ino is its inode (else 0). */
int tree_rename(struct tree *t, uint64_t parent, const char *name, uint64_t newparent,
		const char *newname, unsigned flags, const struct tree_caller *who,
		uint64_t *saved_ino);

enum { TREE_SET_MODE = 1, TREE_SET_SIZE = 2, TREE_SET_MTIME = 4 };
/* chmod/truncate/utimens.  A size change of a DSS file without an open
 * handle saves at once; modes, owners and times of DSS files are accepted
 * and not stored.  Fills *out with the attributes after the change. */
int tree_setattr(struct tree *t, uint64_t ino, const struct stat *attr, int to_set,
		 const struct tree_caller *who, struct stat *out);

/* Streams (TREE_STREAM files, e.g. a project's export.zip): spooled to an
 * anonymous temporary file when first looked up, so their st_size is exact,
 * and read from there, never held in memory.  A stream stays readable
 * through an open handle after the cache dropped it. */
struct tree_stream;
int tree_stream_open(struct tree *t, uint64_t ino, struct tree_stream **out);
/* Returns bytes read (0 at the end) or -errno. */
ssize_t tree_stream_read(struct tree_stream *s, char *buf, size_t size, off_t off);
void tree_stream_close(struct tree_stream *s); /* NULL-safe */

/* A TREE_SPOOLED file opened for writing: a temporary file holding its
 * bytes (none with `trunc`), counted against the spool_total disk bound
 * (-ENOSPC), *len its size; *base what the saves are checked against.
 * tree_save_spooled uploads it, checked against *base (-ESTALE if the file
 * changed on DSS since), and makes *base what DSS then holds.
 * tree_spool_account moves the bytes counted for such a file. */
int tree_open_spooled(struct tree *t, uint64_t ino, int trunc, int *fd, size_t *len,
		      struct tree_base *base);
int tree_save_spooled(struct tree *t, uint64_t ino, int fd, size_t len,
		      const struct tree_caller *who, struct tree_base *base);
int tree_spool_account(struct tree *t, size_t from, size_t to);

/* Calls fn for every inode the kernel holds (without the tree lock held). */
void tree_for_each_ino(struct tree *t, void (*fn)(uint64_t ino, void *ctx), void *ctx);

/* Until called again with NULL, an HTTP request made by the calling thread
 * ends with -EINTR as soon as cancelled(arg) returns nonzero (a FUSE
 * interrupt).  Thread-local. */
void tree_thread_cancel(int (*cancelled)(void *arg), void *arg);

/* The path of ino in the tree (for messages): 0, or -ESTALE. */
int tree_path_of(struct tree *t, uint64_t ino, struct buf *out);

/* Forgets every cached resource (SIGHUP). */
void tree_drop_caches(struct tree *t);

/* Whether the key is an instance admin (GET admin/variables/ answers): the
 * `admin` rows (pathtab.h) then exist.  Once, before the session starts.
 * 1, 0 (DSS refuses it: 401, 403, or 404 from a DSS without it), or
 * -errno when DSS did not answer (nothing decided). */
int tree_probe_admin(struct tree *t);
/* The probe could not be made at mount (an instance of several that did
 * not answer): it is made when a folder with admin rows is first needed,
 * which fails with DSS's error until DSS answers, so that a transient
 * failure never shows an admin's instance/ as a non-admin's. */
void tree_probe_admin_later(struct tree *t);

struct tree_stats {
	size_t inodes;		/* inodes the kernel holds, the root included */
	size_t nodes;		/* their bindings, and those in use (all trees) */
	uint64_t saves;		/* documents and files sent to DSS */
	uint64_t conflicts;	/* saves refused: changed on DSS since read */
	uint64_t save_failures; /* saves refused or failed otherwise */
	size_t scratch_bytes;	/* editors' temporary files */
	size_t spool_bytes;	/* spooled streams on disk */
	int prefetching;	/* 0: prefetch is off (and `prefetch` is zero) */
	struct prefetch_stats prefetch;
};
void tree_get_stats(struct tree *t, struct tree_stats *st);

#endif
