/* qimg cat: write a file of a filesystem inside an image to stdout. */
#include <errno.h>
#include <stdio.h>
#include <unistd.h>

#include "cli.h"

int cmd_cat(int argc, char **argv)
{
    struct cli_fs_opts o = { 0 };
    cli_fs_parse(argc, argv, &o);
    if (argc - optind != 2)
        error_exit("Expecting an image file name and a path");
    qimg_image *img = NULL;
    qimg_fs *fs = cli_fs_open(argv[optind], &o, false, &img);
    if (!fs)
        return 1;
    int ret = 0;
    fflush(stdout);
    if (qimg_fs_cat(fs, argv[optind + 1], STDOUT_FILENO) < 0) {
        /* a reader that went away (cat ... | head) is no error to report */
        if (qimg_last_errno() != EPIPE)
            report_lib_error("%s", "");
        ret = -1;
    }
    if (cli_fs_close(fs, img) < 0)
        ret = -1;
    return ret < 0 ? 1 : 0;
}
