/*
 * explaind_plugin.h — the explaind explainer-plugin ABI, version 1.5.
 *
 * History (each minor version only appends):
 *   1.0  the first version.
 *   1.1  ExdHostApi gains gradient, deeplift_multipliers and deep_shap (graph-compiled
 *        attribution); struct_size grows from 120 to 144 bytes.
 *   1.2  ExdHostApi gains layer_gradient (an intermediate tensor and its gradient, for
 *        Grad-CAM and other layer methods); struct_size grows from 144 to 152 bytes.
 *   1.3  Cost before work: ExdPluginInfo gains param_ranges (bounds the host checks before a
 *        call; 56 -> 64 bytes), ExdPluginApi gains estimate (what a request will cost, asked
 *        before `explain`; 40 -> 48 bytes), and ExdCost is new.
 *   1.4  The model's structure: ExdHostApi gains model_graph (a read-only view of the model's
 *        nodes, attributes and initializers, for explainers that read the model rather than
 *        run it, such as exact tree SHAP; 152 -> 160 bytes), ExdGraph, ExdNode,
 *        ExdAttribute, ExdBytes and ExdOpsetImport are new, and the flag
 *        EXD_NEEDS_TREE_ENSEMBLE.
 *   1.5  Inputs of every element type and attribution at a layer (token models): the flag
 *        EXD_CAP_TYPED_INPUTS (inputs in their declared DLPack dtypes, to the plugin and back
 *        through forward), ExdExplainRequest gains explained_inputs (inputs held at the
 *        request's values; 104 -> 112 bytes), and ExdHostApi gains layer_activation,
 *        layer_gradient_at and layer_deeplift_at (a layer's value, and the gradient and the
 *        DeepLIFT multipliers there at values the plugin gives: paths between two
 *        embeddings; 160 -> 184 bytes).
 *
 * This header is the single source of truth for the ABI. The Rust mirror in
 * crates/abi/src/lib.rs follows it field by field, and tests check both sides' layouts.
 *
 * A plugin is a shared library exporting ONE symbol:
 *
 *     ExdError* explaind_plugin_v1(const ExdHostApi* host, const ExdPluginApi** out_plugin);
 *
 * The major version is part of the symbol's name: a host that speaks major 2 looks for
 * explaind_plugin_v2 and never mistakes a v1 plugin for one of its own.
 *
 * Compatibility rules
 *  - Every versioned struct starts with ExdStructHeader. Structs grow only by appending fields,
 *    and each append bumps EXPLAIND_ABI_MINOR. A reader checks `struct_size` before touching any
 *    field past the v1.0 layout; a field beyond `struct_size` is absent.
 *  - A NULL function pointer means "not supported". Required entries are marked REQUIRED.
 *  - Status codes are int32_t constants, never C enums: an unknown value stays a plain number.
 *  - Any change of meaning bumps EXPLAIND_ABI_MAJOR (and the entry symbol's name).
 *
 * Ownership and lifetimes are stated on every pointer:
 *  BORROWED(x)  the callee may read it until x; it must not free it or keep it after x.
 *  OWNED        the receiver becomes the owner and must release it as stated.
 *  STATIC       lives as long as the library is loaded (plugins are never unloaded).
 *
 * Threads
 *  - Every host function is thread-safe, and may be called from threads the plugin starts
 *    during an `explain` call, but not after that call has returned.
 *  - `explain` on one instance is called by one thread at a time unless the plugin sets
 *    EXD_CAP_REENTRANT, in which case the host may call it concurrently.
 *
 * Tensors are DLPack DLTensors. In ABI 1.x every tensor the host hands out lives in CPU memory
 * (device_type kDLCPU), is dense and row-major (`strides` NULL) with byte_offset 0, and holds
 * float32 elements unless stated otherwise.
 */
#ifndef EXPLAIND_PLUGIN_H
#define EXPLAIND_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EXPLAIND_ABI_MAJOR 1
#define EXPLAIND_ABI_MINOR 5

#if defined(_WIN32)
#define EXD_EXPORT __declspec(dllexport)
#else
#define EXD_EXPORT __attribute__((visibility("default")))
#endif

/* ---------------------------------------------------------------------------------------------
 * DLPack (v1.0 layout). Define EXPLAIND_USE_SYSTEM_DLPACK to take these from <dlpack/dlpack.h>.
 * ------------------------------------------------------------------------------------------- */
#ifdef EXPLAIND_USE_SYSTEM_DLPACK
#include <dlpack/dlpack.h>
#else
typedef enum { kDLCPU = 1, kDLCUDA = 2 } DLDeviceType;
typedef enum { kDLInt = 0, kDLUInt = 1, kDLFloat = 2, kDLBfloat = 4, kDLBool = 6 } DLDataTypeCode;
typedef struct {
  int32_t device_type; /* DLDeviceType; stored as int32_t as DLPack does */
  int32_t device_id;
} DLDevice;
typedef struct {
  uint8_t code;  /* DLDataTypeCode */
  uint8_t bits;  /* 32 for float32 */
  uint16_t lanes;/* 1 */
} DLDataType;
typedef struct {
  void* data;          /* see the owner's rules at each use */
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;      /* ndim entries; same owner and lifetime as the tensor */
  int64_t* strides;    /* NULL: dense row-major */
  uint64_t byte_offset;
} DLTensor;
#endif

/* ---------------------------------------------------------------------------------------------
 * Common pieces
 * ------------------------------------------------------------------------------------------- */

/* The frozen first member of every versioned struct. */
typedef struct ExdStructHeader {
  uint32_t struct_size; /* sizeof the struct as its writer compiled it */
  uint16_t abi_major;   /* EXPLAIND_ABI_MAJOR the writer was built with */
  uint16_t abi_minor;   /* EXPLAIND_ABI_MINOR the writer was built with */
} ExdStructHeader;

/* Status codes. Values match gRPC status codes where one fits. */
typedef int32_t ExdCode;
#define EXD_OK 0
#define EXD_CANCELLED 1          /* the request was cancelled or its deadline passed */
#define EXD_UNKNOWN 2
#define EXD_INVALID_ARGUMENT 3   /* bad parameter or input; the message names it */
#define EXD_DEADLINE_EXCEEDED 4
#define EXD_NOT_FOUND 5
#define EXD_RESOURCE_EXHAUSTED 8 /* a memory or budget limit */
#define EXD_FAILED_PRECONDITION 9/* e.g. the method needs a background and none was given */
#define EXD_UNIMPLEMENTED 12     /* e.g. the model has a shape the method does not handle */
#define EXD_INTERNAL 13
/* Not a gRPC code: the plugin caught a panic (or a C++ exception). The host discards the
 * instance and creates a fresh one before the next call. */
#define EXD_PLUGIN_PANICKED 1000

/* An error: opaque, created only by the host (ExdHostApi.error_new).
 * Whoever receives an ExdError* owns it and must either free it with ExdHostApi.error_free or
 * hand it on by returning it, which passes ownership along. NULL means success. */
typedef struct ExdError ExdError;

/* Log levels for ExdHostApi.log. */
typedef int32_t ExdLogLevel;
#define EXD_LOG_ERROR 1
#define EXD_LOG_WARN 2
#define EXD_LOG_INFO 3
#define EXD_LOG_DEBUG 4

/* An explain call's context: opaque, created by the host for one `explain` call and valid only
 * until that call returns. */
typedef struct ExdContext ExdContext;

/* A plugin instance: opaque to the host, created by ExdPluginApi.create. */
typedef struct ExdInstance ExdInstance;

/* ---------------------------------------------------------------------------------------------
 * Parameters
 * ------------------------------------------------------------------------------------------- */

typedef int32_t ExdParamKind;
#define EXD_PARAM_NUMBER 1   /* double   -> ExdParamValue.number */
#define EXD_PARAM_INTEGER 2  /* int64_t  -> ExdParamValue.integer */
#define EXD_PARAM_FLAG 3     /* 0 or 1   -> ExdParamValue.integer */
#define EXD_PARAM_TEXT 4     /* UTF-8    -> ExdParamValue.text (NUL-terminated) */
#define EXD_PARAM_NUMBERS 5  /* double[] -> ExdParamValue.numbers, .len */
#define EXD_PARAM_INTEGERS 6 /* int64_t[]-> ExdParamValue.integers, .len */

/* One value; only the members for `kind` are meaningful, the rest are 0/NULL.
 * Not versioned: it is embedded in versioned structs and never grows. */
typedef struct ExdParamValue {
  ExdParamKind kind;      /* 0: no value (an optional parameter without a default) */
  int32_t reserved;       /* 0 */
  double number;
  int64_t integer;
  const char* text;       /* BORROWED (see the struct that holds the value) */
  const double* numbers;  /* BORROWED, `len` entries */
  const int64_t* integers;/* BORROWED, `len` entries */
  size_t len;
} ExdParamValue;

/* A parameter the plugin declares. Not versioned (held in an array whose element size is fixed
 * for ABI 1.x; new facts about a parameter would go into a new, parallel array). */
typedef struct ExdParamSpec {
  const char* name;             /* STATIC, [a-z0-9_]+ */
  const char* description;      /* STATIC, may be NULL */
  ExdParamKind kind;
  int32_t required;             /* 1: the request must set it; 0: `default_value` is used */
  ExdParamValue default_value;  /* STATIC pointers; kind 0 when there is no default */
} ExdParamSpec;

/* A parameter as the host passes it to `explain`: every declared parameter, in declaration
 * order, with the request's value (converted to the declared kind) or the default. */
typedef struct ExdParam {
  const char* name;     /* BORROWED until `explain` returns */
  ExdParamValue value;  /* pointers BORROWED until `explain` returns */
} ExdParam;

/* ABI 1.3. The bounds of one declared parameter, in an array parallel to ExdPluginInfo.params
 * (entry i bounds parameter i). Not versioned: its element size is fixed for ABI 1.x.
 * The host refuses a request whose value lies outside with EXD_INVALID_ARGUMENT naming
 * `parameters.<name>` and the bounds, before `estimate` or `explain` is called, and reports the
 * bounds to clients. Defaults are not checked against them.
 *  - NUMBER, INTEGER: min <= value <= max. Use -INFINITY and INFINITY for no bound (integers
 *    are compared as doubles, exact below 2^53).
 *  - NUMBERS, INTEGERS: every element within [min, max], and at most max_len elements.
 *  - TEXT: at most max_len bytes.
 *  - FLAG: nothing to bound.
 * max_len 0 means no limit on the length. */
typedef struct ExdParamRange {
  double min;
  double max;
  uint64_t max_len;
} ExdParamRange;

/* ---------------------------------------------------------------------------------------------
 * What the host tells a plugin about the model
 * ------------------------------------------------------------------------------------------- */

typedef struct ExdTensorInfo {
  const char* name;     /* BORROWED until `explain` returns */
  int32_t element_type; /* ONNX TensorProto.DataType: 1 = float32 */
  int32_t ndim;
  const int64_t* shape; /* BORROWED until `explain` returns; -1 for a symbolic or unknown axis */
} ExdTensorInfo;

typedef struct ExdModelInfo {
  ExdStructHeader header;
  const char* name;               /* BORROWED until `explain` returns */
  const char* version;            /* BORROWED until `explain` returns */
  const char* sha256;             /* BORROWED until `explain` returns; lower-case hex */
  size_t num_inputs;
  const ExdTensorInfo* inputs;    /* BORROWED until `explain` returns */
  size_t num_outputs;
  const ExdTensorInfo* outputs;   /* BORROWED until `explain` returns */
} ExdModelInfo;

/* ---------------------------------------------------------------------------------------------
 * The explain request
 * ------------------------------------------------------------------------------------------- */

typedef struct ExdExplainRequest {
  ExdStructHeader header;
  /* The model being explained. BORROWED until `explain` returns. */
  const ExdModelInfo* model;
  /* The inputs: one per model input, in the model's input order, batch first, each in the
   * element type the model declares for it (`dtype`; see ExdTensorInfo.element_type). A plugin
   * without EXD_CAP_TYPED_INPUTS is only ever given models whose inputs are all float32.
   * Every input has the same batch size N. BORROWED until `explain` returns, read-only. */
  size_t num_inputs;
  const DLTensor* inputs;
  /* The model output that targets index into (index into model->outputs). */
  size_t output_index;
  /* Row size of that output: the product of its axes after the batch axis. */
  int64_t output_row_size;
  /* Targets: N x T int64, row-major; targets[n * T + t] is a flat index into input n's
   * output row. BORROWED until `explain` returns. */
  size_t num_targets; /* T */
  const int64_t* targets;
  /* The model's output for the inputs: float32 [N, output_row_size].
   * BORROWED until `explain` returns, read-only. */
  const DLTensor* outputs;
  /* Parameters: every declared parameter, in declaration order. BORROWED until `explain`
   * returns. */
  size_t num_params;
  const ExdParam* params;
  /* Background: one tensor per model input, rows first (K rows), float32; or NULL when the
   * request has none. For an input of another type the rows hold its values as float32,
   * exactly (the host refuses ids beyond 2^24). BORROWED until `explain` returns, read-only. */
  const DLTensor* background;
  /* The most rows the plugin should put into one `forward` call. The host splits larger
   * calls itself; this number only lets plugins bound the memory of what they build. */
  int64_t max_batch_rows;

  /* ---- ABI 1.5; read only when header.struct_size covers it ---- */
  /* Which inputs the request explains: num_inputs entries, 1 = explained, 0 = held at the
   * request's values for every perturbation, path point and background row (an attention
   * mask, token type ids). At least one entry is 1; the host gives no attributions for the
   * others. BORROWED until `explain` returns. An older host sends no such field: every input
   * is explained. */
  const uint8_t* explained_inputs;
} ExdExplainRequest;

/* ---------------------------------------------------------------------------------------------
 * ABI 1.4: the model's structure, read-only (ExdHostApi.model_graph)
 *
 * A view of the model's main graph as its ONNX file states it: the nodes in graph order, their
 * attributes, the initializers, and the operator sets imported. Every pointer in it, and in
 * what it points to, is OWNED by the host and valid until the `explain` (or `estimate`) call
 * that obtained it returns; the plugin must not write through any of them. Subgraphs
 * (attributes of kind GRAPH) are not part of the view.
 * ------------------------------------------------------------------------------------------- */

/* Attribute kinds: ONNX AttributeProto.AttributeType values, as int32_t constants. */
#define EXD_ATTR_OTHER 0   /* a kind this ABI does not expose (a subgraph, a sparse tensor) */
#define EXD_ATTR_FLOAT 1
#define EXD_ATTR_INT 2
#define EXD_ATTR_STRING 3
#define EXD_ATTR_TENSOR 4
#define EXD_ATTR_FLOATS 6
#define EXD_ATTR_INTS 7
#define EXD_ATTR_STRINGS 8

/* A byte string (not NUL-terminated: ONNX strings may hold any byte). */
typedef struct ExdBytes {
  const uint8_t* data;
  size_t len;
} ExdBytes;

/* One attribute, or (in ExdGraph.initializers) one initializer as a TENSOR attribute named
 * after it. Only the members for `kind` are meaningful; the rest are 0/NULL. */
typedef struct ExdAttribute {
  const char* name;     /* NUL-terminated */
  int32_t kind;         /* EXD_ATTR_* */
  int32_t element_type; /* TENSOR: ONNX TensorProto.DataType of `data` (1 float32, 2 uint8,
                         * 3 int8, 5 int16, 6 int32, 7 int64, 9 bool, 10 float16, 11 double,
                         * 4 uint16, 12 uint32, 13 uint64); 8 (string) tensors have
                         * `data` NULL and `length` 0. Otherwise 0. */
  int64_t int_value;    /* INT */
  double float_value;   /* FLOAT (the float32 value, widened exactly) */
  size_t length;        /* FLOATS, INTS, STRINGS, TENSOR: the element count; STRING: bytes */
  /* FLOATS: float[length]; INTS: int64_t[length]; STRING: uint8_t[length];
   * STRINGS: ExdBytes[length]; TENSOR: `length` elements of `element_type`, row-major, each
   * naturally aligned (bool as one byte 0/1, float16 as its uint16_t bits). */
  const void* data;
  int32_t ndim;         /* TENSOR: the rank; otherwise 0 */
  int32_t reserved;     /* 0 */
  const int64_t* shape; /* TENSOR: `ndim` sizes; otherwise NULL */
} ExdAttribute;

typedef struct ExdNode {
  const char* op_type;  /* NUL-terminated */
  const char* domain;   /* "" for the default ONNX domain ("ai.onnx" is reported as "") */
  const char* name;     /* "" when the file gives none */
  size_t num_inputs;
  const char* const* inputs;   /* value names; "" for an omitted optional input */
  size_t num_outputs;
  const char* const* outputs;  /* value names */
  size_t num_attributes;
  const ExdAttribute* attributes;
} ExdNode;

typedef struct ExdOpsetImport {
  const char* domain; /* "" for the default ONNX domain */
  int64_t version;
} ExdOpsetImport;

typedef struct ExdGraph {
  ExdStructHeader header;
  size_t num_nodes;
  const ExdNode* nodes;              /* graph (topological) order */
  size_t num_initializers;
  const ExdAttribute* initializers;  /* each of kind EXD_ATTR_TENSOR */
  size_t num_opsets;
  const ExdOpsetImport* opsets;
} ExdGraph;

/* ---------------------------------------------------------------------------------------------
 * The host's function table, handed to the plugin's entry point.
 * STATIC for the plugin: valid for as long as the library stays loaded.
 * ------------------------------------------------------------------------------------------- */

typedef struct ExdHostApi {
  ExdStructHeader header;

  /* Errors. `message` is copied (UTF-8; invalid bytes are replaced). Returns OWNED. */
  ExdError* (*error_new)(ExdCode code, const char* message);
  void (*error_free)(ExdError* error);
  ExdCode (*error_code)(const ExdError* error);
  /* BORROWED until the error is freed or handed on. */
  const char* (*error_message)(const ExdError* error);

  /* Logging into the daemon's log, tagged with the plugin's name. `context` may be NULL
   * (outside an explain call). `message` is copied. */
  void (*log)(ExdContext* context, ExdLogLevel level, const char* message);

  /* 1 when the request was cancelled or its deadline passed: stop and return EXD_CANCELLED. */
  int32_t (*is_cancelled)(ExdContext* context);

  /* The model being explained (the same as request->model). BORROWED until `explain` returns. */
  const ExdModelInfo* (*model_info)(ExdContext* context);

  /* Runs the model forward on `num_inputs` tensors (one per model input, in order, batch
   * first, same batch size B, each in the element type the model declares for that input). On success *out_output is the explained output
   * (request->output_index) as float32 [B, output_row_size]: OWNED by the host, valid until
   * released with `tensor_release` or until `explain` returns. Inputs are BORROWED for the
   * call. Any B is accepted: the host chunks large batches itself. */
  ExdError* (*forward)(ExdContext* context, const DLTensor* inputs, size_t num_inputs,
                       DLTensor** out_output);

  /* Allocates a zero-filled scratch tensor owned by the host (dtype float32, CPU).
   * *out is valid until `tensor_release` or until `explain` returns. */
  ExdError* (*tensor_alloc)(ExdContext* context, const int64_t* shape, int32_t ndim,
                            DLTensor** out);
  /* Releases a tensor from `forward` or `tensor_alloc` early (optional: all are released when
   * `explain` returns). Releasing a result tensor (below) is an error that is ignored. */
  void (*tensor_release)(ExdContext* context, DLTensor* tensor);

  /* Result tensors, allocated zero-filled by the host and OWNED by it; the plugin writes into
   * them. Valid until `explain` returns, after which the host reads them.
   *  - attributions for model input `input_index`: float32 [N, T, *input_shape_without_batch];
   *  - base values: float32 [N, T] (only for methods that have them);
   *  - extras: a named float32 tensor of any shape, returned to the client as is. */
  ExdError* (*result_attributions)(ExdContext* context, size_t input_index, DLTensor** out);
  ExdError* (*result_base_values)(ExdContext* context, DLTensor** out);
  ExdError* (*result_extra)(ExdContext* context, const char* name, const int64_t* shape,
                            int32_t ndim, DLTensor** out);
  /* A fact to report in the response (key and value are copied). */
  ExdError* (*result_info)(ExdContext* context, const char* key, const char* value);

  /* ---- ABI 1.1 -------------------------------------------------------------------------------
   * Attribution computed from the model's graph, compiled by the host into a backward graph
   * that ONNX Runtime runs (on the model's execution provider). A plugin checks
   * host->header.struct_size (or abi_minor >= 1) before calling these. A model with an
   * operator the compiler has no rule for gives EXD_UNIMPLEMENTED naming the operator and node.
   * Every out_* tensor is OWNED by the host, float32, valid until released with tensor_release
   * or until `explain` returns; the out arrays themselves are BORROWED from the plugin (it
   * provides room for num_inputs pointers). */

  /* Plain gradients of seeds · (the explained output) with respect to every model input.
   * inputs: as for forward, [B, ...] each; seeds: float32 [B, output_row_size].
   * out_gradients[i] is shaped like inputs[i]. */
  ExdError* (*gradient)(ExdContext* context, const DLTensor* inputs, size_t num_inputs,
                        const DLTensor* seeds, DLTensor** out_gradients);
  /* DeepLIFT multipliers (rescale rule) of paired rows: inputs[i] row b against references[i]
   * row b, seeded by seeds row b ([B, output_row_size]). For every b,
   *   sum over i and elements of out_multipliers[i] * (inputs[i] - references[i])
   *     = seeds[b] . (f(inputs row b) - f(references row b)).
   * out_multipliers[i] is shaped like inputs[i]. */
  ExdError* (*deeplift_multipliers)(ExdContext* context, const DLTensor* inputs,
                                    const DLTensor* references, size_t num_inputs,
                                    const DLTensor* seeds, DLTensor** out_multipliers);
  /* Deep SHAP against the request's background (EXD_FAILED_PRECONDITION if it has none):
   *   out_attributions[i][n, s, ...] = mean over background rows r of
   *       m(x_n, r; seeds[n, s]) * (x_n - r)
   * with seeds float32 [N, S, output_row_size] (S seed rows per input row), and
   * out_expected [N, S] = seeds[n, s] . (mean model output over the background).
   * out_attributions[i] is [N, S, *input_i_shape_without_batch]. The host caches the
   * background's activations per model and background digest, and chunks the work under its
   * memory bound. out_expected may be NULL. */
  ExdError* (*deep_shap)(ExdContext* context, const DLTensor* inputs, size_t num_inputs,
                         const DLTensor* seeds, DLTensor** out_attributions,
                         DLTensor** out_expected);

  /* ---- ABI 1.2 -------------------------------------------------------------------------------
   * A plugin checks host->header.struct_size (or abi_minor >= 2) before calling this. */

  /* An intermediate tensor of the model (a "layer") and the gradient of
   * seeds · (the explained output) with respect to it, for the same rows:
   * inputs: as for forward, [B, ...] each; seeds: float32 [B, output_row_size].
   * layer: NUL-terminated ONNX tensor name, BORROWED for the call; NULL or "" picks the output
   *   of the last 2-D convolution (a Conv node with a 4-D weight) in graph order.
   * *out_layer: the tensor's name (the chosen one when `layer` was empty), NUL-terminated,
   *   OWNED by the host, valid until `explain` returns. May be NULL when not wanted.
   * *out_activation and *out_gradient: float32 [B, *layer_shape_without_batch], OWNED by the
   *   host as for gradient.
   * An unknown name, or a model without a 2-D convolution when `layer` is empty, gives
   * EXD_INVALID_ARGUMENT with a message that starts with "layer:" and lists the model's 4-D
   * tensors. */
  ExdError* (*layer_gradient)(ExdContext* context, const DLTensor* inputs, size_t num_inputs,
                              const DLTensor* seeds, const char* layer, const char** out_layer,
                              DLTensor** out_activation, DLTensor** out_gradient);

  /* ---- ABI 1.4 -------------------------------------------------------------------------------
   * A plugin checks host->header.struct_size (or abi_minor >= 4) before calling this. */

  /* The model's structure (see ExdGraph): *out_graph is OWNED by the host, valid until the
   * `explain` or `estimate` call it was obtained in returns. It runs nothing and costs no
   * model rows; the host builds the view once per model file and shares it between calls.
   * May be called from `estimate`. A model whose file cannot be read gives EXD_INTERNAL. */
  ExdError* (*model_graph)(ExdContext* context, const ExdGraph** out_graph);

  /* ---- ABI 1.5 -------------------------------------------------------------------------------
   * A plugin checks host->header.struct_size (or abi_minor >= 5) before calling these.
   *
   * `layer` names any float32 tensor of the model (a node output, by its ONNX name); NULL or
   * "" picks the default: the output of the Gather that embeds the first explained integer
   * input (a text model's word embedding of its token ids), else the output of the last 2-D
   * convolution. *out_layer (may be NULL when not wanted) receives the tensor's name,
   * NUL-terminated, OWNED by the host, valid until `explain` returns. An unknown name, or no
   * default, gives EXD_INVALID_ARGUMENT with a message that starts with "layer:". */

  /* The layer's value for the rows of `inputs` (one per model input, in their declared
   * types, batch first, same batch size B). *out_activation: float32 [B, *layer_shape],
   * OWNED by the host, valid until released with `tensor_release` or until `explain`
   * returns. Counts B model rows. */
  ExdError* (*layer_activation)(ExdContext* context, const DLTensor* inputs, size_t num_inputs,
                                const char* layer, const char** out_layer,
                                DLTensor** out_activation);
  /* The gradient of seeds . (explained output) with respect to the layer, with the layer's
   * value replaced by `layer_values` (float32 [B, *layer_shape]): the model is cut at the
   * layer, so the value need not be one that any input produces (a point on the straight
   * path between the embeddings of two token sequences, as captum's
   * LayerIntegratedGradients integrates). The rest of the model reads `inputs` (B rows each;
   * what only computed the layer is ignored). `seeds`: float32 [B, output_row_size].
   * *out_gradient: float32 shaped like `layer_values`, OWNED by the host as above. Counts B
   * model rows. */
  ExdError* (*layer_gradient_at)(ExdContext* context, const DLTensor* inputs, size_t num_inputs,
                                 const char* layer, const DLTensor* layer_values,
                                 const DLTensor* seeds, const char** out_layer,
                                 DLTensor** out_gradient);
  /* DeepLIFT multipliers at the layer for paired rows: the layer's value is `layer_values` on
   * one side and `layer_references` on the other (both float32 [B, *layer_shape]), and the
   * rest of the model reads `inputs` on both (held, not attributed). With them
   * sum(m * (layer_values - layer_references)) = seeds . (f(values) - f(references)) for each
   * row, as deeplift_multipliers for model inputs; Deep SHAP at an embedding averages
   * m * (E(x) - E(b_k)) over background rows b_k. *out_multipliers: float32 shaped like
   * `layer_values`, OWNED by the host as above. Counts B model rows. */
  ExdError* (*layer_deeplift_at)(ExdContext* context, const DLTensor* inputs, size_t num_inputs,
                                 const char* layer, const DLTensor* layer_values,
                                 const DLTensor* layer_references, const DLTensor* seeds,
                                 const char** out_layer, DLTensor** out_multipliers);
} ExdHostApi;

/* ---------------------------------------------------------------------------------------------
 * The plugin's description and function table, returned by the entry point.
 * ------------------------------------------------------------------------------------------- */

/* Capability and requirement flags for ExdPluginInfo.flags. */
#define EXD_CAP_REENTRANT ((uint64_t)1 << 0)      /* explain may run concurrently */
#define EXD_NEEDS_BACKGROUND ((uint64_t)1 << 1)   /* refuse requests without a background */
#define EXD_NEEDS_GRADIENTS ((uint64_t)1 << 2)    /* uses the ABI 1.1 attribution host functions */
/* ABI 1.4: explains only models that hold an ONNX-ML tree ensemble (read with model_graph); the
 * host lists the plugin for those models only. */
#define EXD_NEEDS_TREE_ENSEMBLE ((uint64_t)1 << 3)
/* ABI 1.5: reads every input in its declared element type (DLTensor.dtype: int64, int32, int8,
 * uint8, bool, float16, float64 or float32) and passes such tensors to `forward`. A plugin
 * without it is offered only models whose inputs are all float32. */
#define EXD_CAP_TYPED_INPUTS ((uint64_t)1 << 4)

typedef struct ExdPluginInfo {
  ExdStructHeader header;
  const char* name;        /* STATIC, [a-z0-9_-]+, unique among loaded plugins */
  const char* version;     /* STATIC, the plugin's own version */
  const char* description; /* STATIC, may be NULL */
  uint64_t flags;          /* EXD_CAP_* | EXD_NEEDS_* */
  size_t num_params;
  const ExdParamSpec* params; /* STATIC, num_params entries */
  /* ---- ABI 1.3 ---- */
  const ExdParamRange* param_ranges; /* STATIC, num_params entries; NULL: no bounds */
} ExdPluginInfo;

/* ABI 1.3. What one `explain` call will cost, as the plugin's `estimate` predicts it.
 * The host allocates it and fills `header` with its own struct_size; the plugin writes only
 * the fields that lie within that size. Doubles, so that a product of huge parameters becomes
 * a huge number or infinity and never wraps around to a small one. */
typedef struct ExdCost {
  ExdStructHeader header;
  /* Rows the call will run through the model and the compiled graphs, in total: rows of
   * `forward`, `gradient`, `deeplift_multipliers` and `layer_gradient`, and for `deep_shap`
   * N x S x (background rows). The same count the host's row budget charges. */
  double model_rows;
  /* The most bytes the call holds at once besides the request and its result tensors: the
   * plugin's own allocations, tensors from tensor_alloc and result_extra, and the tensors the
   * host hands back from the functions above while the plugin keeps them. */
  double scratch_bytes;
  /* The parameter that drives the cost most: an index into request->params, or -1 when it is
   * the request's inputs and targets. The host names it when it refuses the request. */
  int32_t driver;
  int32_t reserved; /* 0 */
} ExdCost;

typedef struct ExdPluginApi {
  ExdStructHeader header;
  /* REQUIRED. STATIC. */
  const ExdPluginInfo* info;
  /* Creates an instance. Optional: when NULL, `explain` receives a NULL instance.
   * *out_instance is OWNED by the host, which releases it with `destroy`. */
  ExdError* (*create)(ExdInstance** out_instance);
  /* Optional. Releases an instance; the host calls it once per created instance. */
  void (*destroy)(ExdInstance* instance);
  /* REQUIRED. Explains request->inputs; writes results through the result_* host functions.
   * `context` and `request` are BORROWED until it returns. Returns NULL on success or an
   * error made with host->error_new (ownership passes to the host). */
  ExdError* (*explain)(ExdInstance* instance, ExdContext* context,
                       const ExdExplainRequest* request);
  /* ---- ABI 1.3 ----
   * Optional. Predicts what `explain` will cost on `request`, before anything is allocated.
   * The host calls it once per request, just before `explain`, with the same instance, context
   * and request (all BORROWED until it returns); `out_cost` is BORROWED too. It may call
   * `log`, `is_cancelled`, `model_info` and (ABI 1.4) `model_graph`, and nothing else of the
   * host. It must be cheap:
   * arithmetic on shapes and parameters. It returns an error (EXD_INVALID_ARGUMENT naming the
   * parameter) for requests that make no sense. The host refuses a request whose cost is over
   * its per-request budget with EXD_RESOURCE_EXHAUSTED naming `cost.driver`, without calling
   * `explain`. During `explain` the host holds every plugin to the same budget whether or not
   * it has an estimate: a host function that would pass it fails with EXD_RESOURCE_EXHAUSTED. */
  ExdError* (*estimate)(ExdInstance* instance, ExdContext* context,
                        const ExdExplainRequest* request, ExdCost* out_cost);
} ExdPluginApi;

/* The entry point's type. On success it sets *out_plugin (STATIC) and returns NULL.
 * `host` is STATIC: the plugin may keep the pointer. */
typedef ExdError* (*ExdPluginEntryV1)(const ExdHostApi* host, const ExdPluginApi** out_plugin);
#define EXPLAIND_PLUGIN_ENTRY_V1 "explaind_plugin_v1"

#ifdef __cplusplus
#define EXD_STATIC_ASSERT static_assert
#else
#define EXD_STATIC_ASSERT _Static_assert
#endif

/* Layout checks for the common 64-bit targets (LP64 / LLP64): a change here is an ABI break. */
#if UINTPTR_MAX == 0xffffffffffffffffu
EXD_STATIC_ASSERT(sizeof(ExdStructHeader) == 8, "ExdStructHeader");
EXD_STATIC_ASSERT(sizeof(DLTensor) == 48, "DLTensor");
EXD_STATIC_ASSERT(sizeof(ExdParamValue) == 56, "ExdParamValue");
EXD_STATIC_ASSERT(sizeof(ExdParamSpec) == 80, "ExdParamSpec");
EXD_STATIC_ASSERT(sizeof(ExdParam) == 64, "ExdParam");
EXD_STATIC_ASSERT(sizeof(ExdTensorInfo) == 24, "ExdTensorInfo");
EXD_STATIC_ASSERT(sizeof(ExdModelInfo) == 64, "ExdModelInfo");
EXD_STATIC_ASSERT(sizeof(ExdExplainRequest) == 112, "ExdExplainRequest");
EXD_STATIC_ASSERT(sizeof(ExdHostApi) == 184, "ExdHostApi");
EXD_STATIC_ASSERT(sizeof(ExdBytes) == 16, "ExdBytes");
EXD_STATIC_ASSERT(sizeof(ExdAttribute) == 64, "ExdAttribute");
EXD_STATIC_ASSERT(sizeof(ExdNode) == 72, "ExdNode");
EXD_STATIC_ASSERT(sizeof(ExdOpsetImport) == 16, "ExdOpsetImport");
EXD_STATIC_ASSERT(sizeof(ExdGraph) == 56, "ExdGraph");
EXD_STATIC_ASSERT(sizeof(ExdParamRange) == 24, "ExdParamRange");
EXD_STATIC_ASSERT(sizeof(ExdCost) == 32, "ExdCost");
EXD_STATIC_ASSERT(sizeof(ExdPluginInfo) == 64, "ExdPluginInfo");
EXD_STATIC_ASSERT(sizeof(ExdPluginApi) == 48, "ExdPluginApi");
#endif

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* EXPLAIND_PLUGIN_H */
