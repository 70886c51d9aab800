/* qimg - qemu-img info.
 *
 * Each image is opened on its own without its backing file (so info works
 * when the backing file is missing); --backing-chain then opens the
 * backing file named by each image, as qemu-img does, and stops with
 * qemu's message when a name comes back. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

enum { OPT_OUTPUT = CLI_OPT_COMMAND, OPT_BACKING_CHAIN };

struct seen {
    char **names;
    dev_t *dev;
    ino_t *ino;
    size_t n;
};

/* A name seen before, or the same file under another name. */
static bool seen_before(struct seen *s, const char *name)
{
    struct stat st;
    bool have_st = stat(name, &st) == 0;
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(s->names[i], name) == 0)
            return true;
        if (have_st && s->dev[i] == st.st_dev && s->ino[i] == st.st_ino)
            return true;
    }
    s->names = xrealloc(s->names, (s->n + 1) * sizeof *s->names);
    s->dev = xrealloc(s->dev, (s->n + 1) * sizeof *s->dev);
    s->ino = xrealloc(s->ino, (s->n + 1) * sizeof *s->ino);
    s->names[s->n] = xstrdup(name);
    s->dev[s->n] = have_st ? st.st_dev : 0;
    s->ino[s->n] = have_st ? st.st_ino : 0;
    s->n++;
    return false;
}

static void seen_free(struct seen *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->names[i]);
    free(s->names);
    free(s->dev);
    free(s->ino);
}

struct infos {
    struct qimg_json **json;   /* ImageInfo of each image */
    char **human;
    size_t n;
};

static void infos_free(struct infos *in)
{
    for (size_t i = 0; i < in->n; i++) {
        qimg_json_free(in->json[i]);
        free(in->human[i]);
    }
    free(in->json);
    free(in->human);
}

/* ImageInfo of one open image, in both forms. */
static int add_info(struct infos *in, qimg_image *img)
{
    struct qimg_json *json;
    char *human;
    if (qimg_info_build(img, &json) < 0)
        return -1;
    if (qimg_info_human(img, &human) < 0) {
        qimg_json_free(json);
        return -1;
    }
    in->json = xrealloc(in->json, (in->n + 1) * sizeof *in->json);
    in->human = xrealloc(in->human, (in->n + 1) * sizeof *in->human);
    in->json[in->n] = json;
    in->human[in->n] = human;
    in->n++;
    return 0;
}

/* One ImageInfo per image of the chain (one image without --backing-chain). */
static int collect(const char *filename, const char *fmt, bool image_opts, unsigned flags,
                   bool chain, struct infos *list)
{
    struct seen seen = { 0 };
    CLEANUP_FREE char *name = xstrdup(filename);
    CLEANUP_FREE char *cur_fmt = fmt ? xstrdup(fmt) : NULL;
    int ret = 0;
    while (name) {
        if (seen_before(&seen, name)) {
            error_report("Backing file '%s' creates an infinite loop.", name);
            ret = 1;
            break;
        }
        qimg_image *img = cli_open(name, cur_fmt, flags, image_opts);
        if (!img) {
            ret = 1;
            break;
        }
        if (add_info(list, img) < 0) {
            report_lib_error("%s", "");
            qimg_close(img);
            ret = 1;
            break;
        }
        free(name);
        free(cur_fmt);
        name = NULL;
        cur_fmt = NULL;
        if (chain && qimg_backing_filename(img) && !qimg_full_backing_filename(img)) {
            /* a relative name next to storage with no directory (quorum) */
            error_report("Could not determine absolute backing filename, but backing "
                         "filename '%s' present", qimg_backing_filename(img));
            ret = 1;
        } else if (chain && qimg_full_backing_filename(img) && qimg_backing_permitted(img) < 0) {
            report_lib_error("Could not open '%s'", qimg_full_backing_filename(img));
            ret = 1;
        } else if (chain && qimg_full_backing_filename(img)) {
            name = xstrdup(qimg_full_backing_filename(img));
            cur_fmt = qimg_backing_format(img) ? xstrdup(qimg_backing_format(img)) : NULL;
        }
        image_opts = false;
        qimg_close(img);
    }
    seen_free(&seen);
    return ret;
}

int cmd_info(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_LONGOPT_HELP,
        { "format", required_argument, NULL, 'f' },
        { "output", required_argument, NULL, OPT_OUTPUT },
        { "backing-chain", no_argument, NULL, OPT_BACKING_CHAIN },
        CLI_LONGOPT_OBJECT,
        CLI_LONGOPT_IMAGE_OPTS,
        CLI_LONGOPT_FORCE_SHARE,
        CLI_LONGOPT_END,
    };
    const char *fmt = NULL, *output = NULL;
    bool chain = false, image_opts = false, force_share = false;
    int c;
    while ((c = cli_getopt(argc, argv, ":f:hU", longopts)) != -1) {
        switch (c) {
        case 'f': fmt = optarg; break;
        case 'U': force_share = true; break;
        case OPT_OUTPUT: output = optarg; break;
        case OPT_BACKING_CHAIN: chain = true; break;
        default: cli_common_option(c, &image_opts); break;
        }
    }
    if (optind != argc - 1)
        error_exit("Expecting one image file name");
    const char *filename = argv[optind];
    enum output_format of = output ? parse_output_format(output) : OUTPUT_HUMAN;

    unsigned flags = QIMG_OPEN_NO_BACKING | QIMG_OPEN_NO_IO;
    if (force_share)
        flags |= QIMG_OPEN_FORCE_SHARE;
    struct infos list = { 0 };
    int ret = collect(filename, fmt, image_opts, flags, chain, &list);
    if (ret == 0 && of == OUTPUT_JSON && !chain) {
        CLEANUP_FREE char *text = qimg_json_to_string(list.json[0]);
        printf("%s\n", text);
    } else if (ret == 0 && of == OUTPUT_JSON) {
        struct qimg_json *arr = qimg_json_array();
        for (size_t i = 0; i < list.n; i++) {
            qimg_json_append(arr, list.json[i]);
            list.json[i] = NULL;
        }
        CLEANUP_FREE char *text = qimg_json_to_string(arr);
        printf("%s\n", text);
        qimg_json_free(arr);
    } else if (ret == 0) {
        /* images separated by one blank line */
        for (size_t i = 0; i < list.n; i++)
            printf("%s%s", i ? "\n" : "", list.human[i]);
    }
    infos_free(&list);
    return ret;
}
