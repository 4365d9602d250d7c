/*
 * graph_census.c — a plain-C plugin that reads the model's structure through ABI 1.4's
 * `model_graph`, for the ABI tests. Method ("graph-census-c"): no attributions of interest
 * (zeros, base values zero); it reports, as result info,
 *     nodes         the number of nodes
 *     ops           the op types in graph order, comma-separated
 *     initializers  the number of initializers
 *     weights       the sum of every float32 initializer element, "%.6e"
 *     opset         the default domain's opset version
 * so that a test can hold them against its own reading of the ONNX file.
 *
 * Build:
 *   cc -std=c11 -Wall -Wextra -Werror -shared -fPIC -I crates/abi/include \
 *      tests/c/graph_census.c -o libexplaind_plugin_graph_census_c.so
 */
#include "explaind_plugin.h"

#include <stdio.h>
#include <string.h>

#if EXPLAIND_ABI_MINOR < 4
#error "graph_census.c needs the ABI 1.4 header (model_graph)"
#endif

#define HEADER(type) { (uint32_t)sizeof(type), EXPLAIND_ABI_MAJOR, EXPLAIND_ABI_MINOR }

static const ExdHostApi* g_host; /* STATIC once the entry point has run */

static const ExdPluginInfo k_info = {
    HEADER(ExdPluginInfo), "graph-census-c", "1.0.0",
    "Reports the model's node count, op types, initializers and opset (C test plugin, ABI 1.4).",
    EXD_CAP_REENTRANT, 0, NULL, NULL,
};

static ExdError* info(ExdContext* ctx, const char* key, const char* value) {
  return g_host->result_info(ctx, key, value);
}

static ExdError* census_explain(ExdInstance* instance, ExdContext* ctx, const ExdExplainRequest* request) {
  (void)instance;
  (void)request;
  if (g_host->header.struct_size < offsetof(ExdHostApi, model_graph) + sizeof(g_host->model_graph) ||
      g_host->model_graph == NULL) {
    return g_host->error_new(EXD_UNIMPLEMENTED, "graph-census-c: the host has no model_graph (ABI < 1.4)");
  }
  const ExdGraph* graph = NULL;
  ExdError* err = g_host->model_graph(ctx, &graph);
  if (err != NULL) return err;

  char text[4096];
  size_t used = 0;
  text[0] = '\0';
  for (size_t i = 0; i < graph->num_nodes; ++i) {
    int written = snprintf(text + used, sizeof(text) - used, "%s%s", i ? "," : "", graph->nodes[i].op_type);
    if (written < 0 || (size_t)written >= sizeof(text) - used) break;
    used += (size_t)written;
  }
  if ((err = info(ctx, "ops", text)) != NULL) return err;
  snprintf(text, sizeof(text), "%zu", graph->num_nodes);
  if ((err = info(ctx, "nodes", text)) != NULL) return err;
  snprintf(text, sizeof(text), "%zu", graph->num_initializers);
  if ((err = info(ctx, "initializers", text)) != NULL) return err;

  double sum = 0.0;
  for (size_t i = 0; i < graph->num_initializers; ++i) {
    const ExdAttribute* t = &graph->initializers[i];
    if (t->kind != EXD_ATTR_TENSOR || t->element_type != 1) continue;
    const float* values = (const float*)t->data;
    for (size_t e = 0; e < t->length; ++e) sum += values[e];
  }
  snprintf(text, sizeof(text), "%.6e", sum);
  if ((err = info(ctx, "weights", text)) != NULL) return err;

  for (size_t i = 0; i < graph->num_opsets; ++i) {
    if (graph->opsets[i].domain[0] == '\0') {
      snprintf(text, sizeof(text), "%lld", (long long)graph->opsets[i].version);
      if ((err = info(ctx, "opset", text)) != NULL) return err;
    }
  }
  /* Zero attributions and base values: the host hands them out zeroed. */
  DLTensor* out = NULL;
  if ((err = g_host->result_attributions(ctx, 0, &out)) != NULL) return err;
  return g_host->result_base_values(ctx, &out);
}

static const ExdPluginApi k_api = {
    HEADER(ExdPluginApi), &k_info, NULL, NULL, census_explain, NULL,
};

EXD_EXPORT ExdError* explaind_plugin_v1(const ExdHostApi* host, const ExdPluginApi** out_plugin) {
  if (host == NULL || out_plugin == NULL) return NULL;
  *out_plugin = NULL;
  if (host->header.abi_major != EXPLAIND_ABI_MAJOR || host->header.struct_size < offsetof(ExdHostApi, gradient)) {
    return NULL;
  }
  g_host = host;
  *out_plugin = &k_api;
  return NULL;
}
