/* qimg copy-in: copy local files or directory trees into a directory of a
 * filesystem inside an image.  The image is opened read-write; with a
 * backing chain, the writes land in the top image only. */
#include <stdio.h>

#include "cli.h"

int cmd_copy_in(int argc, char **argv)
{
    struct cli_fs_opts o = { 0 };
    cli_fs_parse(argc, argv, &o);
    if (argc - optind < 3)
        error_exit("Expecting an image file name, local paths and a directory");
    qimg_image *img = NULL;
    qimg_fs *fs = cli_fs_open(argv[optind], &o, true, &img);
    if (!fs)
        return 1;
    int ret = 0;
    const char *dir = argv[argc - 1];
    for (int i = optind + 1; i < argc - 1 && ret == 0; i++) {
        if (qimg_fs_copy_in(fs, argv[i], dir) < 0) {
            report_lib_error("%s", "");
            ret = -1;
        }
    }
    /* closed even after an error: what was copied is written back whole */
    if (cli_fs_close(fs, img) < 0)
        ret = -1;
    return ret < 0 ? 1 : 0;
}
