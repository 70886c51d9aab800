/* Unit tests for opening optional libraries on first use (src/lib/dl.c). */
#include <errno.h>
#include <math.h>

#include "internal.h"
#include "dl.h"
#include "unit.h"

static struct { __typeof__(cos) *cos; __typeof__(sqrt) *sqrt; } mathlib;

static const struct qimg_dl_symbol math_symbols[] = {
    { "cos", (void **)&mathlib.cos },
    { "sqrt", (void **)&mathlib.sqrt },
    { NULL, NULL },
};

/* the first soname is missing: the next one is tried */
static const char *const math_sonames[] = { "libqimg-test-missing.so.7", "libm.so.6", NULL };

TEST(loads_and_fills_the_table)
{
    static struct qimg_dl lib = { .library = "libm", .needed_for = "The test",
                                  .sonames = math_sonames, .symbols = math_symbols };
    CHECK_EQ_INT(qimg_dl_load(&lib), 0);
    CHECK(mathlib.cos != NULL && mathlib.sqrt != NULL);
    if (mathlib.sqrt)
        CHECK(mathlib.sqrt(49.0) == 7.0);
    /* a second call is answered from the state */
    CHECK_EQ_INT(qimg_dl_load(&lib), 0);
    CHECK_EQ_INT(lib.state, 1);
}

TEST(a_missing_library_is_an_error_that_names_it)
{
    static const char *const sonames[] = { "libqimg-test-missing.so.7", NULL };
    static void *slot;
    static const struct qimg_dl_symbol symbols[] = { { "f", &slot }, { NULL, NULL } };
    static struct qimg_dl lib = { .library = "libmissing", .needed_for = "The frob driver",
                                  .sonames = sonames, .symbols = symbols };
    CHECK_EQ_INT(qimg_dl_load(&lib), -ENOTSUP);
    const char *msg = qimg_last_error();
    CHECK(msg && strncmp(msg, "The frob driver needs libmissing: ", 34) == 0);
    CHECK(msg && strstr(msg, "libqimg-test-missing.so.7"));
    /* remembered, not tried again */
    CHECK_EQ_INT(qimg_dl_load(&lib), -ENOTSUP);
    CHECK(slot == NULL);
}

TEST(a_missing_function_is_an_error_that_names_it)
{
    static const char *const sonames[] = { "libm.so.6", NULL };
    static void *a, *b;
    static const struct qimg_dl_symbol symbols[] = {
        { "cos", &a }, { "qimg_no_such_function", &b }, { NULL, NULL } };
    static struct qimg_dl lib = { .library = "libm", .needed_for = "The test",
                                  .sonames = sonames, .symbols = symbols };
    CHECK_EQ_INT(qimg_dl_load(&lib), -ENOTSUP);
    CHECK_EQ_STR(qimg_last_error(), "The test needs libm: libm has no qimg_no_such_function");
}

int main(void)
{
    RUN(loads_and_fills_the_table);
    RUN(a_missing_library_is_an_error_that_names_it);
    RUN(a_missing_function_is_an_error_that_names_it);
    return UNIT_DONE();
}
