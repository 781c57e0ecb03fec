/* tests/harness/criterion/hooks.h — the harness defines ReportHook in
 * criterion.h; this stands in for criterion's own hooks.h in TSan builds. */
#include "criterion/criterion.h"
