/*
 * layout_check.c — prints the C layout of every struct in explaind_plugin.h, for the Rust
 * mirror (crates/abi) to compare against. One line per field, then one per struct:
 *
 *     Struct.field OFFSET SIZE
 *     Struct size N
 *
 * (decimal bytes, in declaration order).
 *
 *   cc -std=c11 -Wall -Wextra -Werror -I crates/abi/include tests/c/layout_check.c \
 *      -o layout_check && ./layout_check
 */
#include "explaind_plugin.h"

#include <stddef.h>
#include <stdio.h>

#define FIELD(S, f) \
  printf("%s.%s %zu %zu\n", #S, #f, (size_t)offsetof(S, f), sizeof(((S*)0)->f))
#define SIZE(S) printf("%s size %zu\n", #S, sizeof(S))

int main(void) {
  FIELD(DLDevice, device_type);
  FIELD(DLDevice, device_id);
  SIZE(DLDevice);

  FIELD(DLDataType, code);
  FIELD(DLDataType, bits);
  FIELD(DLDataType, lanes);
  SIZE(DLDataType);

  FIELD(DLTensor, data);
  FIELD(DLTensor, device);
  FIELD(DLTensor, ndim);
  FIELD(DLTensor, dtype);
  FIELD(DLTensor, shape);
  FIELD(DLTensor, strides);
  FIELD(DLTensor, byte_offset);
  SIZE(DLTensor);

  FIELD(ExdStructHeader, struct_size);
  FIELD(ExdStructHeader, abi_major);
  FIELD(ExdStructHeader, abi_minor);
  SIZE(ExdStructHeader);

  FIELD(ExdParamValue, kind);
  FIELD(ExdParamValue, reserved);
  FIELD(ExdParamValue, number);
  FIELD(ExdParamValue, integer);
  FIELD(ExdParamValue, text);
  FIELD(ExdParamValue, numbers);
  FIELD(ExdParamValue, integers);
  FIELD(ExdParamValue, len);
  SIZE(ExdParamValue);

  FIELD(ExdParamSpec, name);
  FIELD(ExdParamSpec, description);
  FIELD(ExdParamSpec, kind);
  FIELD(ExdParamSpec, required);
  FIELD(ExdParamSpec, default_value);
  SIZE(ExdParamSpec);

  FIELD(ExdParam, name);
  FIELD(ExdParam, value);
  SIZE(ExdParam);

  FIELD(ExdTensorInfo, name);
  FIELD(ExdTensorInfo, element_type);
  FIELD(ExdTensorInfo, ndim);
  FIELD(ExdTensorInfo, shape);
  SIZE(ExdTensorInfo);

  FIELD(ExdModelInfo, header);
  FIELD(ExdModelInfo, name);
  FIELD(ExdModelInfo, version);
  FIELD(ExdModelInfo, sha256);
  FIELD(ExdModelInfo, num_inputs);
  FIELD(ExdModelInfo, inputs);
  FIELD(ExdModelInfo, num_outputs);
  FIELD(ExdModelInfo, outputs);
  SIZE(ExdModelInfo);

  FIELD(ExdExplainRequest, header);
  FIELD(ExdExplainRequest, model);
  FIELD(ExdExplainRequest, num_inputs);
  FIELD(ExdExplainRequest, inputs);
  FIELD(ExdExplainRequest, output_index);
  FIELD(ExdExplainRequest, output_row_size);
  FIELD(ExdExplainRequest, num_targets);
  FIELD(ExdExplainRequest, targets);
  FIELD(ExdExplainRequest, outputs);
  FIELD(ExdExplainRequest, num_params);
  FIELD(ExdExplainRequest, params);
  FIELD(ExdExplainRequest, background);
  FIELD(ExdExplainRequest, max_batch_rows);
  FIELD(ExdExplainRequest, explained_inputs);
  SIZE(ExdExplainRequest);

  FIELD(ExdHostApi, header);
  FIELD(ExdHostApi, error_new);
  FIELD(ExdHostApi, error_free);
  FIELD(ExdHostApi, error_code);
  FIELD(ExdHostApi, error_message);
  FIELD(ExdHostApi, log);
  FIELD(ExdHostApi, is_cancelled);
  FIELD(ExdHostApi, model_info);
  FIELD(ExdHostApi, forward);
  FIELD(ExdHostApi, tensor_alloc);
  FIELD(ExdHostApi, tensor_release);
  FIELD(ExdHostApi, result_attributions);
  FIELD(ExdHostApi, result_base_values);
  FIELD(ExdHostApi, result_extra);
  FIELD(ExdHostApi, result_info);
  FIELD(ExdHostApi, gradient);
  FIELD(ExdHostApi, deeplift_multipliers);
  FIELD(ExdHostApi, deep_shap);
  FIELD(ExdHostApi, layer_gradient);
  FIELD(ExdHostApi, model_graph);
  FIELD(ExdHostApi, layer_activation);
  FIELD(ExdHostApi, layer_gradient_at);
  FIELD(ExdHostApi, layer_deeplift_at);
  SIZE(ExdHostApi);

  FIELD(ExdBytes, data);
  FIELD(ExdBytes, len);
  SIZE(ExdBytes);

  FIELD(ExdAttribute, name);
  FIELD(ExdAttribute, kind);
  FIELD(ExdAttribute, element_type);
  FIELD(ExdAttribute, int_value);
  FIELD(ExdAttribute, float_value);
  FIELD(ExdAttribute, length);
  FIELD(ExdAttribute, data);
  FIELD(ExdAttribute, ndim);
  FIELD(ExdAttribute, reserved);
  FIELD(ExdAttribute, shape);
  SIZE(ExdAttribute);

  FIELD(ExdNode, op_type);
  FIELD(ExdNode, domain);
  FIELD(ExdNode, name);
  FIELD(ExdNode, num_inputs);
  FIELD(ExdNode, inputs);
  FIELD(ExdNode, num_outputs);
  FIELD(ExdNode, outputs);
  FIELD(ExdNode, num_attributes);
  FIELD(ExdNode, attributes);
  SIZE(ExdNode);

  FIELD(ExdOpsetImport, domain);
  FIELD(ExdOpsetImport, version);
  SIZE(ExdOpsetImport);

  FIELD(ExdGraph, header);
  FIELD(ExdGraph, num_nodes);
  FIELD(ExdGraph, nodes);
  FIELD(ExdGraph, num_initializers);
  FIELD(ExdGraph, initializers);
  FIELD(ExdGraph, num_opsets);
  FIELD(ExdGraph, opsets);
  SIZE(ExdGraph);

  FIELD(ExdPluginInfo, header);
  FIELD(ExdPluginInfo, name);
  FIELD(ExdPluginInfo, version);
  FIELD(ExdPluginInfo, description);
  FIELD(ExdPluginInfo, flags);
  FIELD(ExdPluginInfo, num_params);
  FIELD(ExdPluginInfo, params);
  FIELD(ExdPluginInfo, param_ranges);
  SIZE(ExdPluginInfo);

  FIELD(ExdParamRange, min);
  FIELD(ExdParamRange, max);
  FIELD(ExdParamRange, max_len);
  SIZE(ExdParamRange);

  FIELD(ExdCost, header);
  FIELD(ExdCost, model_rows);
  FIELD(ExdCost, scratch_bytes);
  FIELD(ExdCost, driver);
  FIELD(ExdCost, reserved);
  SIZE(ExdCost);

  FIELD(ExdPluginApi, header);
  FIELD(ExdPluginApi, info);
  FIELD(ExdPluginApi, create);
  FIELD(ExdPluginApi, destroy);
  FIELD(ExdPluginApi, explain);
  FIELD(ExdPluginApi, estimate);
  SIZE(ExdPluginApi);
  return 0;
}
