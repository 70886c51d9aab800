/* qimg - what the commands on files inside images share (ls, cat,
 * copy-out, copy-in): their common options and opening the filesystem. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

bool cli_fs_option(int c, const char *arg, struct cli_fs_opts *o)
{
    switch (c) {
    case 'f': o->fmt = arg; return true;
    case 'U': o->force_share = true; return true;
    case CLI_FS_OPT_IMAGE_OPTS: o->image_opts = true; return true;
    case CLI_FS_OPT_OBJECT: cli_object_add(arg); return true;
    case CLI_FS_OPT_PARTITION: {
        char *end;
        errno = 0;
        unsigned long v = strtoul(arg, &end, 10);
        if (errno || end == arg || *end || arg[0] == '-' || v > 1000000) {
            error_report("Invalid partition number '%s'", arg);
            exit(1);
        }
        o->partition = (unsigned)v;
        return true;
    }
    }
    return false;
}

void cli_fs_parse(int argc, char **argv, struct cli_fs_opts *o)
{
    static const struct option longopts[] = {
        CLI_FS_LONGOPTS,
        { NULL, 0, NULL, 0 },
    };
    int c;
    while ((c = cli_getopt(argc, argv, ":f:hU", longopts)) != -1)
        if (!cli_fs_option(c, optarg, o) && c == 'h')
            help();
}

qimg_fs *cli_fs_open(const char *filename, const struct cli_fs_opts *o, bool writable,
                     qimg_image **imgp)
{
    unsigned flags = writable ? QIMG_OPEN_RDWR : 0;
    if (o->force_share) {
        if (writable) {
            error_report("--force-share/-U is not allowed when writing");
            return NULL;
        }
        flags |= QIMG_OPEN_FORCE_SHARE;
    }
    qimg_image *img = cli_open(filename, o->fmt, flags, o->image_opts);
    if (!img)
        return NULL;
    qimg_fs *fs = NULL;
    if (qimg_fs_open(&fs, img, o->partition, writable) < 0) {
        report_lib_error("%s", filename);
        qimg_close(img);
        return NULL;
    }
    *imgp = img;
    return fs;
}

int cli_fs_close(qimg_fs *fs, qimg_image *img)
{
    int ret = 0;
    if (qimg_fs_close(fs) < 0) {
        report_lib_error("%s", "");
        ret = -1;
    }
    if (qimg_close(img) < 0) {
        report_lib_error("%s", "");
        ret = -1;
    }
    return ret;
}
