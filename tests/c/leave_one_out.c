/*
 * leave_one_out.c — an explaind explainer plugin written in plain C against
 * crates/abi/include/explaind_plugin.h (ABI 1.0).
 *
 * Method ("leave-one-out-c"): for every element i of model input 0,
 *     attribution[n, t, i] = f(x_n)[target] - f(x_n with element i set to `baseline`)[target].
 * For input n all D perturbed copies (D = elements per row of input 0) are built into one
 * batch and sent through host->forward, in chunks of at most request->max_batch_rows rows.
 * Other model inputs, if any, are held at input n's values.
 *
 * It keeps no state, so it has no create/destroy and sets EXD_CAP_REENTRANT.
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

static const ExdPluginInfo k_info = {
    HEADER(ExdPluginInfo),
    "leave-one-out-c",
    "1.0.0",
    "Leave-one-out (C example plugin): the change of the target output when one input element "
    "at a time is set to a baseline value.",
    EXD_CAP_REENTRANT,
    sizeof(k_params) / sizeof(k_params[0]),
    k_params,
};

static ExdError* loo_explain(ExdInstance* instance, ExdContext* context,
                             const ExdExplainRequest* request);

static const ExdPluginApi k_api = {
    HEADER(ExdPluginApi),
    &k_info,
    NULL, /* create: no state */
    NULL, /* destroy */
    loo_explain,
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

static ExdError* loo_explain(ExdInstance* instance, ExdContext* context,
                             const ExdExplainRequest* request) {
  (void)instance;
  ExdError* err = NULL;
  Batch batches[MAX_INPUTS];
  DLTensor views[MAX_INPUTS];
  size_t num_batches = 0;
  int64_t rows_run = 0;
  memset(batches, 0, sizeof batches);

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
  double baseline = 0.0;
  if ((err = get_baseline(request, &baseline)) != NULL) return err;

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
  int64_t cap = D;
  if (request->max_batch_rows > 0 && request->max_batch_rows < cap) cap = request->max_batch_rows;

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
  /* A host of another major looks for another symbol; the size check guards the table. */
  if (host->header.abi_major != EXPLAIND_ABI_MAJOR ||
      host->header.struct_size < sizeof(ExdHostApi)) {
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
