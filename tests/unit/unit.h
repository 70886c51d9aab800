/* Minimal unit-test harness: each test-*.c defines tests with TEST(name)
 * and lists them in main via RUN(name).  Prints one line per test and a
 * summary "N passed, N failed" for the runner to add up. */
#ifndef QIMG_UNIT_H
#define QIMG_UNIT_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <inttypes.h>

static int unit_failed_checks;
static int unit_passed, unit_failed;

#define CHECK(cond) do { if (!(cond)) { \
    fprintf(stderr, "  %s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    unit_failed_checks++; } } while (0)
#define CHECK_EQ_INT(a, b) do { long long _a = (long long)(a), _b = (long long)(b); if (_a != _b) { \
    fprintf(stderr, "  %s:%d: %s == %lld, expected %lld\n", __FILE__, __LINE__, #a, _a, _b); \
    unit_failed_checks++; } } while (0)
#define CHECK_EQ_STR(a, b) do { const char *_a = (a), *_b = (b); \
    if (!_a || !_b || strcmp(_a, _b) != 0) { \
    fprintf(stderr, "  %s:%d: %s == \"%s\", expected \"%s\"\n", __FILE__, __LINE__, #a, \
            _a ? _a : "(null)", _b ? _b : "(null)"); unit_failed_checks++; } } while (0)

#define TEST(name) static void name(void)
#define RUN(name) do { int _before = unit_failed_checks; name(); \
    if (unit_failed_checks == _before) { unit_passed++; printf("PASS %s\n", #name); } \
    else { unit_failed++; printf("FAIL %s\n", #name); } } while (0)
#define UNIT_DONE() (printf("%d passed, %d failed\n", unit_passed, unit_failed), unit_failed ? 1 : 0)
#endif
