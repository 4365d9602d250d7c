/*
 * bad_plugin.c — deliberately broken explaind plugins, for the host's loader tests.
 *
 * Compile with exactly one of these defined; each gives a plugin named "bad-<case>" that is
 * otherwise valid (its explain writes zero attributions and succeeds):
 *
 *   -DBAD_MISSING_ENTRY  exports `explaind_plugin_entry` instead of `explaind_plugin_v1`
 *   -DBAD_WRONG_MAJOR    ExdPluginApi.header.abi_major is 2
 *   -DBAD_NULL_EXPLAIN   ExdPluginApi.explain is NULL (a REQUIRED entry)
 *   -DBAD_SHORT_STRUCT   ExdPluginApi.header.struct_size is 8 (only the header)
 *   -DBAD_ENTRY_ERROR    the entry point returns host->error_new(EXD_INTERNAL,
 *                        "refusing to load: test")
 *
 *   cc -std=c11 -Wall -Wextra -Werror -shared -fPIC -I crates/abi/include -DBAD_WRONG_MAJOR \
 *      tests/c/bad_plugin.c -o libexplaind_plugin_bad_wrong_major.so
 */
#include "explaind_plugin.h"

#include <stddef.h>

#if (defined(BAD_MISSING_ENTRY) + defined(BAD_WRONG_MAJOR) + defined(BAD_NULL_EXPLAIN) + \
     defined(BAD_SHORT_STRUCT) + defined(BAD_ENTRY_ERROR)) != 1
#error "define exactly one of BAD_MISSING_ENTRY, BAD_WRONG_MAJOR, BAD_NULL_EXPLAIN, BAD_SHORT_STRUCT, BAD_ENTRY_ERROR"
#endif

#if defined(BAD_MISSING_ENTRY)
#define BAD_NAME "bad-missing-entry"
#elif defined(BAD_WRONG_MAJOR)
#define BAD_NAME "bad-wrong-major"
#elif defined(BAD_NULL_EXPLAIN)
#define BAD_NAME "bad-null-explain"
#elif defined(BAD_SHORT_STRUCT)
#define BAD_NAME "bad-short-struct"
#else
#define BAD_NAME "bad-entry-error"
#endif

#define HEADER(type) { (uint32_t)sizeof(type), EXPLAIND_ABI_MAJOR, EXPLAIND_ABI_MINOR }

static const ExdPluginInfo k_info = {
    HEADER(ExdPluginInfo),
    BAD_NAME,
    "0.0.1",
    "A deliberately broken plugin for explaind's loader tests.",
    EXD_CAP_REENTRANT,
    0,
    NULL,
    NULL, /* param_ranges */
};

#if !defined(BAD_NULL_EXPLAIN)
/* Valid behaviour: asks for the attribution tensor (zero-filled by the host) and succeeds. */
static ExdError* bad_explain(ExdInstance* instance, ExdContext* context,
                             const ExdExplainRequest* request);
#endif

static const ExdPluginApi k_api = {
#if defined(BAD_WRONG_MAJOR)
    {(uint32_t)sizeof(ExdPluginApi), 2, 0},
#elif defined(BAD_SHORT_STRUCT)
    {8, EXPLAIND_ABI_MAJOR, EXPLAIND_ABI_MINOR},
#else
    HEADER(ExdPluginApi),
#endif
    &k_info,
    NULL,
    NULL,
#if defined(BAD_NULL_EXPLAIN)
    NULL,
#else
    bad_explain,
#endif
    NULL, /* estimate: optional */
};

static const ExdHostApi* g_host;

#if !defined(BAD_NULL_EXPLAIN)
static ExdError* bad_explain(ExdInstance* instance, ExdContext* context,
                             const ExdExplainRequest* request) {
  (void)instance;
  (void)request;
  DLTensor* attr = NULL;
  return g_host->result_attributions(context, 0, &attr);
}
#endif

static ExdError* entry(const ExdHostApi* host, const ExdPluginApi** out_plugin) {
  if (host == NULL || out_plugin == NULL) return NULL;
  g_host = host;
#if defined(BAD_ENTRY_ERROR)
  (void)&k_api; /* otherwise valid, but never handed out */
  *out_plugin = NULL;
  return host->error_new(EXD_INTERNAL, "refusing to load: test");
#else
  *out_plugin = &k_api;
  return NULL;
#endif
}

#if defined(BAD_MISSING_ENTRY)
/* The right signature under the wrong name: a host must not find `explaind_plugin_v1`. */
EXD_EXPORT ExdError* explaind_plugin_entry(const ExdHostApi* host,
                                           const ExdPluginApi** out_plugin) {
  return entry(host, out_plugin);
}
#else
EXD_EXPORT ExdError* explaind_plugin_v1(const ExdHostApi* host, const ExdPluginApi** out_plugin) {
  return entry(host, out_plugin);
}
#endif
