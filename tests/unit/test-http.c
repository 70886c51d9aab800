/* The text the curl backends read (src/io/http-parse.c): URLs users give
 * and header lines servers send, hostile ones included. */
#include <errno.h>
#include "internal.h"
#include "unit.h"

static int range(const char *line, uint64_t *first, uint64_t *last)
{
    return qimg_http_content_range(line, strlen(line), first, last);
}

TEST(url_must_start_with_its_protocol)
{
    CHECK_EQ_INT(qimg_http_url_check("http", "http://h/x"), 0);
    CHECK_EQ_INT(qimg_http_url_check("https", "https://h/x"), 0);
    CHECK_EQ_INT(qimg_http_url_check("ftp", "ftp://"), 0);
    CHECK_EQ_INT(qimg_http_url_check("https", "http://h/x"), -EINVAL);
    CHECK_EQ_STR(qimg_last_error(), "https curl driver cannot handle the URL 'http://h/x' "
                 "(does not start with 'https://')");
    CHECK_EQ_INT(qimg_http_url_check("http", "https://h/x"), -EINVAL);   /* "https:" != "http:" */
    CHECK_EQ_INT(qimg_http_url_check("http", "HTTP://h/x"), -EINVAL);    /* case matters, as qemu */
    CHECK_EQ_INT(qimg_http_url_check("http", "http:"), -EINVAL);
    CHECK_EQ_INT(qimg_http_url_check("http", "http:/x"), -EINVAL);
    CHECK_EQ_INT(qimg_http_url_check("http", ""), -EINVAL);
    CHECK_EQ_INT(qimg_http_url_check("http", " http://h"), -EINVAL);
    CHECK_EQ_INT(qimg_http_url_check("ftps", "ftp://h"), -EINVAL);
    /* what follows the scheme is curl's to judge: the check neither
     * crashes nor truncates on odd bytes or great lengths */
    char *big = malloc(1 << 20);
    memset(big, 'a', (1 << 20) - 1);
    big[(1 << 20) - 1] = 0;
    memcpy(big, "http://", 7);
    CHECK_EQ_INT(qimg_http_url_check("http", big), 0);
    CHECK_EQ_INT(qimg_http_url_check("https", big), -EINVAL);
    free(big);
    CHECK_EQ_INT(qimg_http_url_check("http", "http://h/\r\nHost: evil"), 0);
    CHECK_EQ_INT(qimg_http_url_check("http", "http://%00@h/%s%n"), 0);
}

TEST(accept_ranges_header)
{
    const char *yes[] = {
        "Accept-Ranges: bytes\r\n", "accept-ranges:bytes", "ACCEPT-RANGES:   BYTES \t\r\n",
        "Accept-Ranges: bytes",
    };
    const char *no[] = {
        "Accept-Ranges: none\r\n", "Accept-Ranges: bytesX\r\n", "Accept-Ranges:\r\n",
        "Accept-Ranges\r\n", "Accept-Range: bytes\r\n", "X-Accept-Ranges: bytes\r\n",
        "Accept-Ranges : bytes\r\n", "", "\r\n", "Accept-Ranges: by tes",
        "Content-Length: 5\r\n",
    };
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
        CHECK(qimg_http_accepts_ranges(yes[i], strlen(yes[i])));
    for (size_t i = 0; i < sizeof no / sizeof *no; i++)
        CHECK(!qimg_http_accepts_ranges(no[i], strlen(no[i])));
    /* the length is the line's: bytes after it are never looked at */
    CHECK(!qimg_http_accepts_ranges("Accept-Ranges: bytes", 18));
    CHECK(!qimg_http_accepts_ranges("Accept-Ranges: bytes", 0));
    /* a line with NUL bytes inside (not a C string) */
    static const char nul[] = "Accept-Ranges: by\0es\r\n";
    CHECK(!qimg_http_accepts_ranges(nul, sizeof nul - 1));
}

TEST(content_range_header)
{
    uint64_t a = 1, b = 1;
    CHECK_EQ_INT(range("Content-Range: bytes 0-511/1024\r\n", &a, &b), 1);
    CHECK_EQ_INT(a, 0);
    CHECK_EQ_INT(b, 511);
    CHECK_EQ_INT(range("content-range:bytes 512-1023/*", &a, &b), 1);
    CHECK_EQ_INT(a, 512);
    CHECK_EQ_INT(b, 1023);
    CHECK_EQ_INT(range("Content-Range: bytes 9223372036854775806-9223372036854775807/"
                       "18446744073709551615\r\n", &a, &b), 1);
    CHECK(a == 9223372036854775806ull && b == 9223372036854775807ull);
    /* other headers are not its business */
    CHECK_EQ_INT(range("Content-Length: 512\r\n", &a, &b), 0);
    CHECK_EQ_INT(range("X-Content-Range: bytes 0-1/2\r\n", &a, &b), 0);
    CHECK_EQ_INT(range("HTTP/1.1 206 Partial Content\r\n", &a, &b), 0);
    CHECK_EQ_INT(range("", &a, &b), 0);
    /* malformed: refused, never half-read */
    const char *bad[] = {
        "Content-Range: bytes 5-4/10\r\n",                 /* backwards */
        "Content-Range: bytes 0-10/10\r\n",                /* past the total */
        "Content-Range: bytes 0-1/0\r\n",
        "Content-Range: bytes -1-5/10\r\n",
        "Content-Range: bytes 0--5/10\r\n",
        "Content-Range: bytes 0-5\r\n",
        "Content-Range: bytes 0-5/\r\n",
        "Content-Range: bytes 0-5/10x\r\n",
        "Content-Range: bytes 0-5/*x\r\n",
        "Content-Range: bytes */10\r\n",                   /* a 416's: no range */
        "Content-Range: items 0-5/10\r\n",
        "Content-Range: bytes0-5/10\r\n",
        "Content-Range: bytes\r\n",
        "Content-Range:\r\n",
        "Content-Range: bytes 18446744073709551616-18446744073709551617/*\r\n", /* 2^64 */
        "Content-Range: bytes 0-99999999999999999999999999/*\r\n",
        "Content-Range: bytes 0-5/100000000000000000000000\r\n",
        "Content-Range: bytes 0x0-0x5/10\r\n",
        "Content-Range: bytes +0-5/10\r\n",
        "Content-Range: bytes 0 - 5/10\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int r = range(bad[i], &a, &b);
        if (r != -EINVAL)
            fprintf(stderr, "  accepted: %s", bad[i]);
        CHECK_EQ_INT(r, -EINVAL);
    }
    /* the length bounds the parse: a number cut by it */
    static const char cut[] = "Content-Range: bytes 0-5/1024";
    CHECK_EQ_INT(qimg_http_content_range(cut, sizeof cut - 3, &a, &b), 1);   /* .../10 */
    CHECK_EQ_INT(b, 5);
    CHECK_EQ_INT(qimg_http_content_range(cut, sizeof cut - 5, &a, &b), -EINVAL);   /* .../ */
    /* a very long header of digits */
    size_t n = 1 << 20;
    char *big = malloc(n);
    memcpy(big, "Content-Range: bytes 0-", 23);
    memset(big + 23, '9', n - 23);
    CHECK_EQ_INT(qimg_http_content_range(big, n, &a, &b), -EINVAL);
    free(big);
}

int main(void)
{
    RUN(url_must_start_with_its_protocol);
    RUN(accept_ranges_header);
    RUN(content_range_header);
    return UNIT_DONE();
}
