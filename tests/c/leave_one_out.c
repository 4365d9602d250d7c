/*
 * leave_one_out.c — an explaind explainer plugin written in plain C against
 * crates/abi/include/explaind_plugin.h (ABI 1.3; it also builds against the frozen 1.0, 1.1 and
 * 1.2 headers in tests/c/abi-1.*, without what 1.3 added, and needs only a 1.0 host).
 *
 * Method ("leave-one-out-c"): for every element i of model input 0,
 *     attribution[n, t, i] = f(x_n)[target] - f(x_n with element i set to `baseline`)[target].
 * For input n all D perturbed copies (D = elements per row of input 0) are built into one
 * batch and sent through host->forward, in chunks of at most request->max_batch_rows rows.
 * Other model inputs, if any, are held at input n's values.
 *
 * It keeps no state, so it has no create/destroy and sets EXD_CAP_REENTRANT.
 *
 * ABI 1.3 (cost before work): `param_ranges` bounds `baseline` (the host refuses values outside
 * before calling us), and `loo_estimate` tells the host what a request will cost before
 * `explain` runs: N x D model rows and one chunk's scratch tensors. The host refuses a request
 * over its budget without calling `explain`. Estimates are doubles, so a huge request gives a
 * huge number (or infinity), never an integer that wrapped around.
 *
 * Build:
 *   cc -std=c11 -Wall -Wextra -Werror -shared -fPIC -I crates/abi/include \
 *      tests/c/leave_one_out.c -o libexplaind_plugin_leave_one_out_c.so
 */
#include "explaind_plugin.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define HEADER(type) { (uint32_t)sizeof(type), EXPLAIND_ABI_MAJOR, EXPLAIND_ABI_MINOR }
#define MAX_NDIM 32

static const ExdHostApi* g_host; /* STATIC once the entry point has run */

static const ExdParamSpec k_params[] = {
    {
        "baseline",
        "Value an element is set to when it is left out.",
        EXD_PARAM_NUMBER,
        0,
        {EXD_PARAM_NUMBER, 0, 0.0, 0, NULL, NULL, NULL, 0},
    },
};

#if EXPLAIND_ABI_MINOR >= 3
/* Parallel to k_params. A baseline within +-1e30 keeps the perturbed inputs finite float32. */
static const ExdParamRange k_ranges[] = {
    {-1e30, 1e30, 0},
};
#endif

static const ExdPluginInfo k_info = {
    HEADER(ExdPluginInfo),
    "leave-one-out-c",
    "1.0.0",
    "Leave-one-out (C example plugin): the change of the target output when one input element "
    "at a time is set to a baseline value.",
    EXD_CAP_REENTRANT,
    sizeof(k_params) / sizeof(k_params[0]),
    k_params,
#if EXPLAIND_ABI_MINOR >= 3
    k_ranges,
#endif
};

static ExdError* loo_explain(ExdInstance* instance, ExdContext* context,
                             const ExdExplainRequest* request);
#if EXPLAIND_ABI_MINOR >= 3
static ExdError* loo_estimate(ExdInstance* instance, ExdContext* context,
                              const ExdExplainRequest* request, ExdCost* out_cost);
#endif

static const ExdPluginApi k_api = {
    HEADER(ExdPluginApi),
    &k_info,
    NULL, /* create: no state */
    NULL, /* destroy */
    loo_explain,
#if EXPLAIND_ABI_MINOR >= 3
    loo_estimate,
#endif
};

/* ------------------------------------------------------------------------------------------ */

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static ExdError* errorf(ExdCode code, const char* fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return g_host->error_new(code, msg);
}

static int is_f32_cpu_dense(const DLTensor* t) {
  return t->dtype.code == kDLFloat && t->dtype.bits == 32 && t->dtype.lanes == 1 &&
         t->device.device_type == kDLCPU && t->strides == NULL && t->data != NULL;
}

/* Elements per row (product of the axes after the batch axis); -1 on overflow or a bad axis. */
static int64_t row_elems(const DLTensor* t) {
  int64_t n = 1;
  for (int32_t k = 1; k < t->ndim; k++) {
    if (t->shape[k] < 0 || (t->shape[k] != 0 && n > INT64_MAX / t->shape[k])) return -1;
    n *= t->shape[k];
  }
  return n;
}

static const float* f32_data(const DLTensor* t) {
  return (const float*)((const char*)t->data + t->byte_offset);
}

static ExdError* get_baseline(const ExdExplainRequest* request, double* out) {
  *out = 0.0;
  for (size_t k = 0; k < request->num_params; k++) {
    const ExdParam* p = &request->params[k];
    if (p->name == NULL || strcmp(p->name, "baseline") != 0) continue;
    switch (p->value.kind) {
      case 0: return NULL; /* no value: keep 0 */
      case EXD_PARAM_NUMBER: *out = p->value.number; return NULL;
      case EXD_PARAM_INTEGER: *out = (double)p->value.integer; return NULL;
      default:
        return errorf(EXD_INVALID_ARGUMENT, "parameters.baseline: expected a number, got kind %d",
                      (int)p->value.kind);
    }
  }
  return NULL;
}

/* Perturbed inputs for one chunk: our own DLTensor views over host scratch buffers. */
typedef struct {
  DLTensor* scratch; /* from tensor_alloc, `cap` rows */
  DLTensor view;     /* what goes to forward: `rows` rows */
  int64_t shape[MAX_NDIM];
  int64_t row;       /* elements per row */
} Batch;

static void release_batches(ExdContext* context, Batch* b, size_t n) {
  for (size_t k = 0; k < n; k++) {
    if (b[k].scratch != NULL) g_host->tensor_release(context, b[k].scratch);
    b[k].scratch = NULL;
  }
}

#define MAX_INPUTS 16

/* What `estimate` and `explain` both check: the request's layout, its inputs and `baseline`. */
static ExdError* check_request(const ExdExplainRequest* request, double* baseline) {
  if (request == NULL || request->header.abi_major != EXPLAIND_ABI_MAJOR ||
      request->header.struct_size < sizeof(ExdExplainRequest)) {
    return g_host->error_new(EXD_INTERNAL, "leave-one-out-c: unexpected ExdExplainRequest layout");
  }
  const size_t num_inputs = request->num_inputs;
  if (num_inputs == 0 || request->inputs == NULL) {
    return g_host->error_new(EXD_INVALID_ARGUMENT, "inputs: the model has no input to explain");
  }
  if (num_inputs > MAX_INPUTS) {
    return errorf(EXD_UNIMPLEMENTED, "inputs: at most %d model inputs are supported, got %zu",
                  MAX_INPUTS, num_inputs);
  }
  ExdError* err = get_baseline(request, baseline);
  if (err != NULL) return err;
  if (!(*baseline >= -1e30 && *baseline <= 1e30)) {
    return errorf(EXD_INVALID_ARGUMENT, "parameters.baseline: must be within +-1e30, got %g",
                  *baseline);
  }
  const DLTensor* x0 = &request->inputs[0];
  for (size_t k = 0; k < num_inputs; k++) {
    const DLTensor* t = &request->inputs[k];
    if (!is_f32_cpu_dense(t) || t->ndim < 1 || t->ndim > MAX_NDIM || row_elems(t) < 0) {
      return errorf(EXD_INVALID_ARGUMENT,
                    "inputs[%zu]: expected a dense float32 CPU tensor with 1 to %d axes", k,
                    MAX_NDIM);
    }
    if (t->shape[0] != x0->shape[0]) {
      return errorf(EXD_INVALID_ARGUMENT, "inputs[%zu]: batch size %lld differs from %lld", k,
                    (long long)t->shape[0], (long long)x0->shape[0]);
    }
  }
  return NULL;
}

/* Rows per forward call: a row per element of input 0, at most max_batch_rows at a time. */
static int64_t chunk_rows(const ExdExplainRequest* request, int64_t D) {
  int64_t cap = D;
  if (request->max_batch_rows > 0 && request->max_batch_rows < cap) cap = request->max_batch_rows;
  return cap;
}

#if EXPLAIND_ABI_MINOR >= 3
/* What `explain` will cost, from shapes alone:
 *   model rows    N x D (every element of every input row left out once);
 *   scratch bytes one chunk: the tensor_alloc batch of every model input (cap rows each) and
 *                 the forward output we hold while reading it (cap x R floats).
 * Doubles throughout, so nothing wraps around however large the request. */
static ExdError* loo_estimate(ExdInstance* instance, ExdContext* context,
                              const ExdExplainRequest* request, ExdCost* out_cost) {
  (void)instance;
  (void)context;
  if (out_cost == NULL) return g_host->error_new(EXD_INTERNAL, "leave-one-out-c: no ExdCost");
  double baseline = 0.0;
  ExdError* err = check_request(request, &baseline);
  if (err != NULL) return err;
  const DLTensor* x0 = &request->inputs[0];
  const int64_t D = row_elems(x0);
  const double cap = (double)chunk_rows(request, D);
  double scratch = cap * (double)request->output_row_size * 4.0;
  for (size_t k = 0; k < request->num_inputs; k++) {
    scratch += cap * (double)row_elems(&request->inputs[k]) * 4.0;
  }
  const double rows = (double)x0->shape[0] * (double)D;
  /* The host's ExdCost may be older (smaller) than ours: write only the fields it has. */
  const size_t size = out_cost->header.struct_size;
  if (size >= offsetof(ExdCost, model_rows) + sizeof out_cost->model_rows) out_cost->model_rows = rows;
  if (size >= offsetof(ExdCost, scratch_bytes) + sizeof out_cost->scratch_bytes) {
    out_cost->scratch_bytes = scratch;
  }
  /* The inputs drive the cost, not a parameter. */
  if (size >= offsetof(ExdCost, driver) + sizeof out_cost->driver) out_cost->driver = -1;
  return NULL;
}
#endif

static ExdError* loo_explain(ExdInstance* instance, ExdContext* context,
                             const ExdExplainRequest* request) {
  (void)instance;
  ExdError* err = NULL;
  Batch batches[MAX_INPUTS];
  DLTensor views[MAX_INPUTS];
  size_t num_batches = 0;
  int64_t rows_run = 0;
  memset(batches, 0, sizeof batches);

  double baseline = 0.0;
  if ((err = check_request(request, &baseline)) != NULL) return err;
  const size_t num_inputs = request->num_inputs;
  const DLTensor* x0 = &request->inputs[0];
  const int64_t N = x0->shape[0];
  const int64_t D = row_elems(x0);
  const int64_t T = (int64_t)request->num_targets;
  const int64_t R = request->output_row_size;
  if (R <= 0 || request->outputs == NULL || !is_f32_cpu_dense(request->outputs) ||
      request->outputs->ndim != 2 || request->outputs->shape[0] != N ||
      request->outputs->shape[1] != R) {
    return g_host->error_new(EXD_INTERNAL, "leave-one-out-c: request outputs are not [N, R]");
  }
  if (T > 0 && request->targets == NULL) {
    return g_host->error_new(EXD_INTERNAL, "leave-one-out-c: targets missing");
  }
  for (int64_t k = 0; k < N * T; k++) {
    if (request->targets[k] < 0 || request->targets[k] >= R) {
      return errorf(EXD_INVALID_ARGUMENT, "targets: index %lld is outside the output row of %lld",
                    (long long)request->targets[k], (long long)R);
    }
  }

  DLTensor* attr = NULL;
  if ((err = g_host->result_attributions(context, 0, &attr)) != NULL) return err;
  if (attr == NULL || !is_f32_cpu_dense(attr) || attr->ndim != x0->ndim + 1 ||
      attr->shape[0] != N || attr->shape[1] != T) {
    return g_host->error_new(EXD_INTERNAL, "leave-one-out-c: attributions tensor is not [N, T, ...]");
  }
  float* out_attr = (float*)((char*)attr->data + attr->byte_offset);
  const float* base = f32_data(request->outputs);
  if (N == 0 || T == 0 || D == 0) return NULL;

  /* Rows per forward call. */
  const int64_t cap = chunk_rows(request, D);

  /* One scratch batch per model input: [cap, *row_shape]. */
  for (size_t k = 0; k < num_inputs; k++) {
    const DLTensor* t = &request->inputs[k];
    Batch* b = &batches[k];
    b->row = row_elems(t);
    b->shape[0] = cap;
    for (int32_t a = 1; a < t->ndim; a++) b->shape[a] = t->shape[a];
    if ((err = g_host->tensor_alloc(context, b->shape, t->ndim, &b->scratch)) != NULL) goto done;
    num_batches = k + 1;
    if (b->scratch == NULL || !is_f32_cpu_dense(b->scratch)) {
      err = g_host->error_new(EXD_INTERNAL, "leave-one-out-c: tensor_alloc gave no float32 tensor");
      goto done;
    }
    b->view = *b->scratch;
    b->view.shape = b->shape;
    b->view.strides = NULL;
  }

  for (int64_t n = 0; n < N; n++) {
    if (g_host->is_cancelled(context)) {
      err = g_host->error_new(EXD_CANCELLED, "leave-one-out-c: request cancelled");
      goto done;
    }
    const int64_t* tgt = request->targets + n * T;
    for (int64_t start = 0; start < D; start += cap) {
      const int64_t rows = (D - start < cap) ? D - start : cap;
      for (size_t k = 0; k < num_inputs; k++) {
        Batch* b = &batches[k];
        const float* src = f32_data(&request->inputs[k]) + n * b->row;
        float* dst = (float*)((char*)b->scratch->data + b->scratch->byte_offset);
        for (int64_t j = 0; j < rows; j++) {
          memcpy(dst + j * b->row, src, (size_t)b->row * sizeof(float));
          if (k == 0) dst[j * b->row + start + j] = (float)baseline;
        }
        b->shape[0] = rows;
        views[k] = b->view;
      }
      DLTensor* out = NULL;
      if ((err = g_host->forward(context, views, num_inputs, &out)) != NULL) goto done;
      rows_run += rows;
      if (out == NULL || !is_f32_cpu_dense(out) || out->ndim != 2 || out->shape[0] != rows ||
          out->shape[1] != R) {
        err = g_host->error_new(EXD_INTERNAL, "leave-one-out-c: forward output is not [B, R]");
        goto done;
      }
      const float* y = f32_data(out);
      for (int64_t t = 0; t < T; t++) {
        const double fx = base[n * R + tgt[t]];
        float* a = out_attr + (n * T + t) * D + start;
        for (int64_t j = 0; j < rows; j++) a[j] = (float)(fx - (double)y[j * R + tgt[t]]);
      }
      g_host->tensor_release(context, out);
    }
  }

  {
    char buf[64];
    snprintf(buf, sizeof buf, "%lld", (long long)rows_run);
    err = g_host->result_info(context, "perturbed_rows", buf);
  }

done:
  release_batches(context, batches, num_batches);
  return err;
}

/* ------------------------------------------------------------------------------------------ */

EXD_EXPORT ExdError* explaind_plugin_v1(const ExdHostApi* host, const ExdPluginApi** out_plugin) {
  if (host == NULL || out_plugin == NULL) return NULL; /* nothing to report an error with */
  *out_plugin = NULL;
  /* A host of another major looks for another symbol; the size check guards the table. Only
   * the ABI 1.0 functions are called, so any 1.x host will do. */
#if EXPLAIND_ABI_MINOR >= 1
  const size_t needed = offsetof(ExdHostApi, gradient); /* where 1.0's table ended */
#else
  const size_t needed = sizeof(ExdHostApi);
#endif
  if (host->header.abi_major != EXPLAIND_ABI_MAJOR || host->header.struct_size < needed) {
    if (host->header.struct_size >= offsetof(ExdHostApi, error_new) + sizeof(host->error_new) &&
        host->error_new != NULL) {
      return host->error_new(EXD_FAILED_PRECONDITION,
                             "leave-one-out-c: host function table older than ABI 1.0");
    }
    return NULL;
  }
  g_host = host;
  *out_plugin = &k_api;
  return NULL;
}
