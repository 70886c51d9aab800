/* qimg copy-out: copy files or directory trees out of a filesystem inside
 * an image into an existing local directory. */
#include <stdio.h>
#include <sys/stat.h>

#include "cli.h"

int cmd_copy_out(int argc, char **argv)
{
    struct cli_fs_opts o = { 0 };
    cli_fs_parse(argc, argv, &o);
    if (argc - optind < 3)
        error_exit("Expecting an image file name, paths and a local directory");
    const char *localdir = argv[argc - 1];
    struct stat st;
    if (stat(localdir, &st) < 0 || !S_ISDIR(st.st_mode)) {
        error_report("'%s' is not a directory", localdir);
        return 1;
    }
    qimg_image *img = NULL;
    qimg_fs *fs = cli_fs_open(argv[optind], &o, false, &img);
    if (!fs)
        return 1;
    int ret = 0;
    for (int i = optind + 1; i < argc - 1 && ret == 0; i++) {
        if (qimg_fs_copy_out(fs, argv[i], localdir) < 0) {
            report_lib_error("%s", "");
            ret = -1;
        }
    }
    if (cli_fs_close(fs, img) < 0)
        ret = -1;
    return ret < 0 ? 1 : 0;
}
