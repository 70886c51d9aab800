/* qimg ls: list a directory of a filesystem inside an image (names, -l
 * long lines, -R recursive with full paths, --output=json). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"

#define LS_MAX_DEPTH 4096

enum { OPT_OUTPUT = 0x2000 };

struct ls_state {
    qimg_fs *fs;
    bool longfmt, recursive;
    enum output_format of;
    bool first_json;
    uint64_t *seen;          /* directories listed (node ids), for -R */
    size_t nseen, capseen;
};

static char type_char(uint32_t mode)
{
    switch (mode & S_IFMT) {
    case S_IFDIR: return 'd';
    case S_IFLNK: return 'l';
    case S_IFCHR: return 'c';
    case S_IFBLK: return 'b';
    case S_IFIFO: return 'p';
    case S_IFSOCK: return 's';
    default: return '-';
    }
}

static const char *type_name(uint32_t mode)
{
    switch (mode & S_IFMT) {
    case S_IFDIR: return "directory";
    case S_IFLNK: return "symlink";
    case S_IFCHR: return "char";
    case S_IFBLK: return "block";
    case S_IFIFO: return "fifo";
    case S_IFSOCK: return "socket";
    default: return "file";
    }
}

/* "drwxr-xr-x" with s/S and t/T as ls(1) shows them. */
static void mode_string(uint32_t mode, char out[11])
{
    static const char rwx[] = "rwxrwxrwx";
    out[0] = type_char(mode);
    for (int i = 0; i < 9; i++)
        out[1 + i] = (mode & (0400u >> i)) ? rwx[i] : '-';
    if (mode & S_ISUID)
        out[3] = (mode & S_IXUSR) ? 's' : 'S';
    if (mode & S_ISGID)
        out[6] = (mode & S_IXGRP) ? 's' : 'S';
    if (mode & S_ISVTX)
        out[9] = (mode & S_IXOTH) ? 't' : 'T';
    out[10] = '\0';
}

/* A JSON string: valid UTF-8 is kept, control characters and bytes that
 * are not UTF-8 become \u00XX escapes. */
static void json_string(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    putchar('"');
    while (*p) {
        unsigned c = *p;
        size_t n = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3
                 : (c & 0xf8) == 0xf0 ? 4 : 0;
        bool valid = n > 0;
        for (size_t i = 1; valid && i < n; i++)
            valid = (p[i] & 0xc0) == 0x80;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20 || !valid)
            printf("\\u%04x", c);
        else {
            fwrite(p, 1, n, stdout);
            p += n;
            continue;
        }
        p++;
    }
    putchar('"');
}

static void print_entry(struct ls_state *st, const struct qimg_fs_entry *e, const char *name)
{
    if (st->of == OUTPUT_JSON) {
        printf("%s{\"name\": ", st->first_json ? "[" : ",\n");
        st->first_json = false;
        json_string(name);
        printf(", \"type\": \"%s\", \"mode\": %" PRIu32 ", \"uid\": %" PRIu32
               ", \"gid\": %" PRIu32 ", \"size\": %" PRIu64 ", \"nlink\": %" PRIu32
               ", \"mtime\": %" PRId64, type_name(e->mode), e->mode, e->uid, e->gid, e->size,
               e->nlink, e->mtime);
        if (e->link_target) {
            printf(", \"target\": ");
            json_string(e->link_target);
        }
        printf("}");
        return;
    }
    if (!st->longfmt) {
        printf("%s\n", name);
        return;
    }
    char mode[11], date[32] = "?";
    struct tm tm;
    time_t t = (time_t)e->mtime;
    mode_string(e->mode, mode);
    if (localtime_r(&t, &tm))
        strftime(date, sizeof date, "%Y-%m-%d %H:%M", &tm);
    printf("%s %" PRIu32 " %" PRIu32 " %" PRIu32 " %" PRIu64 " %s %s", mode, e->nlink, e->uid,
           e->gid, e->size, date, name);
    if (e->link_target)
        printf(" -> %s", e->link_target);
    printf("\n");
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir);
    return xasprintf("%s%s%s", dir, n && dir[n - 1] == '/' ? "" : "/", name);
}

/* Remembers a directory's node id; true when it was listed before (a loop
 * or a directory with two names in a damaged filesystem).  A hash set. */
static bool seen_before(struct ls_state *st, uint64_t ino)
{
    uint64_t key = ino + 1;             /* 0 marks a free slot */
    if ((st->nseen + 1) * 2 > st->capseen) {
        size_t ocap = st->capseen;
        uint64_t *old = st->seen;
        st->capseen = ocap ? ocap * 2 : 256;
        st->seen = xcalloc(st->capseen, sizeof *st->seen);
        st->nseen = 0;
        for (size_t i = 0; i < ocap; i++)
            if (old[i])
                seen_before(st, old[i] - 1);
        free(old);
    }
    size_t mask = st->capseen - 1;
    for (size_t i = (size_t)(key * 0x9e3779b97f4a7c15ull >> 20) & mask;; i = (i + 1) & mask) {
        if (st->seen[i] == key)
            return true;
        if (!st->seen[i]) {
            st->seen[i] = key;
            st->nseen++;
            return false;
        }
    }
}

/* Does path name a non-directory?  (A listing of one entry may also be a
 * directory holding one name: "path/." tells them apart.) */
static bool names_non_directory(qimg_fs *fs, const char *path)
{
    struct qimg_fs_entry *list = NULL;
    size_t n = 0;
    char *dot = join(path, ".");
    int r = qimg_fs_list(fs, dot, &list, &n);
    free(dot);
    qimg_fs_list_free(list, n);
    return r == -ENOTDIR;
}

/* Lists path; with -R, the directories below it too (full paths). */
static int ls_path(struct ls_state *st, const char *path, unsigned depth)
{
    struct qimg_fs_entry *list = NULL;
    size_t n = 0;
    if (depth > LS_MAX_DEPTH) {
        error_report("'%s': directories nested too deep", path);
        return -1;
    }
    if (qimg_fs_list(st->fs, path, &list, &n) < 0) {
        report_lib_error("%s", "");
        return -1;
    }
    /* one entry that is not in a directory listing: the path itself */
    bool single = n == 1 && !S_ISDIR(list[0].mode) && names_non_directory(st->fs, path);
    int ret = 0;
    for (size_t i = 0; i < n && ret == 0; i++) {
        char *full = st->recursive && !single ? join(path, list[i].name) : NULL;
        print_entry(st, &list[i], single ? path : full ? full : list[i].name);
        if (full && S_ISDIR(list[i].mode)) {
            if (seen_before(st, list[i].ino)) {
                error_report("'%s': directory loop (a directory appears twice)", full);
                ret = -1;
            } else {
                ret = ls_path(st, full, depth + 1);
            }
        }
        free(full);
    }
    qimg_fs_list_free(list, n);
    return ret;
}

int cmd_ls(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_FS_LONGOPTS,
        { "output", required_argument, NULL, OPT_OUTPUT },
        { NULL, 0, NULL, 0 },
    };
    struct cli_fs_opts o = { 0 };
    struct ls_state st = { .of = OUTPUT_HUMAN, .first_json = true };
    int c;
    while ((c = cli_getopt(argc, argv, ":f:hUlR", longopts)) != -1) {
        if (cli_fs_option(c, optarg, &o))
            continue;
        switch (c) {
        case 'h': help();
        case 'l': st.longfmt = true; break;
        case 'R': st.recursive = true; break;
        case OPT_OUTPUT: st.of = parse_output_format(optarg); break;
        }
    }
    if (optind >= argc)
        error_exit("Expecting an image file name");
    if (argc - optind > 2)
        error_exit("Expecting an image file name and at most one path");
    const char *filename = argv[optind];
    const char *path = optind + 1 < argc ? argv[optind + 1] : "/";

    qimg_image *img = NULL;
    st.fs = cli_fs_open(filename, &o, false, &img);
    if (!st.fs)
        return 1;
    int ret = ls_path(&st, path, 0);
    /* JSON: a whole array, or nothing when the listing failed at once */
    if (st.of == OUTPUT_JSON && (ret == 0 || !st.first_json))
        printf("%s]\n", st.first_json ? "[" : "");
    free(st.seen);
    if (cli_fs_close(st.fs, img) < 0)
        ret = -1;
    return ret < 0 ? 1 : 0;
}
