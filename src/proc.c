/*
 * proc - what /proc tells about the processes behind FUSE requests.
 */
#include "dssfs/proc.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>

void proc_caller(int64_t tid, uint32_t uid, struct tree_caller *who)
{
	char path[64], line[256];
	FILE *f;

	who->tgid = tid;
	who->sid = 0;
	who->uid = uid;
	if (tid <= 0) {
		who->tgid = 0;
		return;
	}
	snprintf(path, sizeof(path), "/proc/%lld/status", (long long)tid);
	f = fopen(path, "re");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		long long v;
		if (sscanf(line, "Tgid: %lld", &v) == 1)
			who->tgid = v;
		else if (sscanf(line, "NSsid: %lld", &v) == 1)
			who->sid = v;
	}
	fclose(f);
}

int proc_mount_id(const char *mountpoint)
{
	char line[4096];
	int id = -1;
	FILE *f;

	if (!mountpoint || !(f = fopen("/proc/self/mountinfo", "re")))
		return -1;
	while (fgets(line, sizeof(line), f)) {
		int mid;
		char mp[2048], rest[1024];
		/* id parent major:minor root mountpoint ... - fstype source */
		if (sscanf(line, "%d %*d %*s %*s %2047s", &mid, mp) != 2)
			continue;
		const char *dash = strstr(line, " - ");
		if (!dash || sscanf(dash, " - %1023s", rest) != 1 || strncmp(rest, "fuse", 4))
			continue;
		/* mountinfo escapes spaces and the like as \ooo */
		char un[2048];
		size_t k = 0;
		for (const char *q = mp; *q && k + 1 < sizeof(un); q++) {
			unsigned o;
			if (q[0] == '\\' && sscanf(q + 1, "%3o", &o) == 1) {
				un[k++] = (char)o;
				q += 3;
			} else {
				un[k++] = *q;
			}
		}
		un[k] = '\0';
		if (!strcmp(un, mountpoint))
			id = mid; /* the last one is on top */
	}
	fclose(f);
	return id;
}

int proc_holds_file(int64_t tgid, int mnt, uint64_t ino)
{
	char path[64];
	struct dirent *de;
	DIR *d;
	int found = 0;

	if (mnt < 0 || tgid <= 0)
		return 0;
	snprintf(path, sizeof(path), "/proc/%lld/fdinfo", (long long)tgid);
	if (!(d = opendir(path)))
		return 0;
	while (!found && (de = readdir(d))) {
		char info[384], line[128];
		if (de->d_name[0] == '.')
			continue;
		snprintf(info, sizeof(info), "%s/%s", path, de->d_name);
		FILE *f = fopen(info, "re");
		if (!f)
			continue;
		int m = -1;
		unsigned long long i = 0;
		while (fgets(line, sizeof(line), f)) {
			if (sscanf(line, "mnt_id: %d", &m) == 1)
				continue;
			sscanf(line, "ino: %llu", &i);
		}
		fclose(f);
		found = m == mnt && i == ino;
	}
	closedir(d);
	return found;
}
