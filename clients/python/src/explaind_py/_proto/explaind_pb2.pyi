from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ElementType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ELEMENT_TYPE_UNSPECIFIED: _ClassVar[ElementType]
    ELEMENT_TYPE_FLOAT: _ClassVar[ElementType]
    ELEMENT_TYPE_UINT8: _ClassVar[ElementType]
    ELEMENT_TYPE_INT8: _ClassVar[ElementType]
    ELEMENT_TYPE_UINT16: _ClassVar[ElementType]
    ELEMENT_TYPE_INT16: _ClassVar[ElementType]
    ELEMENT_TYPE_INT32: _ClassVar[ElementType]
    ELEMENT_TYPE_INT64: _ClassVar[ElementType]
    ELEMENT_TYPE_STRING: _ClassVar[ElementType]
    ELEMENT_TYPE_BOOL: _ClassVar[ElementType]
    ELEMENT_TYPE_FLOAT16: _ClassVar[ElementType]
    ELEMENT_TYPE_DOUBLE: _ClassVar[ElementType]
    ELEMENT_TYPE_UINT32: _ClassVar[ElementType]
    ELEMENT_TYPE_UINT64: _ClassVar[ElementType]
    ELEMENT_TYPE_BFLOAT16: _ClassVar[ElementType]
ELEMENT_TYPE_UNSPECIFIED: ElementType
ELEMENT_TYPE_FLOAT: ElementType
ELEMENT_TYPE_UINT8: ElementType
ELEMENT_TYPE_INT8: ElementType
ELEMENT_TYPE_UINT16: ElementType
ELEMENT_TYPE_INT16: ElementType
ELEMENT_TYPE_INT32: ElementType
ELEMENT_TYPE_INT64: ElementType
ELEMENT_TYPE_STRING: ElementType
ELEMENT_TYPE_BOOL: ElementType
ELEMENT_TYPE_FLOAT16: ElementType
ELEMENT_TYPE_DOUBLE: ElementType
ELEMENT_TYPE_UINT32: ElementType
ELEMENT_TYPE_UINT64: ElementType
ELEMENT_TYPE_BFLOAT16: ElementType

class Tensor(_message.Message):
    __slots__ = ("element_type", "shape", "data", "values", "int_values", "bool_values")
    ELEMENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    INT_VALUES_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUES_FIELD_NUMBER: _ClassVar[int]
    element_type: ElementType
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    values: _containers.RepeatedScalarFieldContainer[float]
    int_values: _containers.RepeatedScalarFieldContainer[int]
    bool_values: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, element_type: _Optional[_Union[ElementType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ..., values: _Optional[_Iterable[float]] = ..., int_values: _Optional[_Iterable[int]] = ..., bool_values: _Optional[_Iterable[bool]] = ...) -> None: ...

class NamedTensor(_message.Message):
    __slots__ = ("name", "tensor")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    name: str
    tensor: Tensor
    def __init__(self, name: _Optional[str] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class ModelRef(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class Dimension(_message.Message):
    __slots__ = ("size", "symbol")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    size: int
    symbol: str
    def __init__(self, size: _Optional[int] = ..., symbol: _Optional[str] = ...) -> None: ...

class TensorInfo(_message.Message):
    __slots__ = ("name", "element_type", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ELEMENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    element_type: ElementType
    shape: _containers.RepeatedCompositeFieldContainer[Dimension]
    def __init__(self, name: _Optional[str] = ..., element_type: _Optional[_Union[ElementType, str]] = ..., shape: _Optional[_Iterable[_Union[Dimension, _Mapping]]] = ...) -> None: ...

class ModelMetadata(_message.Message):
    __slots__ = ("name", "version", "sha256", "execution_provider", "inputs", "outputs", "labels", "description", "has_default_background", "default_background_shape", "explainability")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    HAS_DEFAULT_BACKGROUND_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_BACKGROUND_SHAPE_FIELD_NUMBER: _ClassVar[int]
    EXPLAINABILITY_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    sha256: str
    execution_provider: str
    inputs: _containers.RepeatedCompositeFieldContainer[TensorInfo]
    outputs: _containers.RepeatedCompositeFieldContainer[TensorInfo]
    labels: _containers.RepeatedScalarFieldContainer[str]
    description: str
    has_default_background: bool
    default_background_shape: _containers.RepeatedScalarFieldContainer[int]
    explainability: Explainability
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., sha256: _Optional[str] = ..., execution_provider: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[TensorInfo, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[TensorInfo, _Mapping]]] = ..., labels: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ..., has_default_background: _Optional[bool] = ..., default_background_shape: _Optional[_Iterable[int]] = ..., explainability: _Optional[_Union[Explainability, _Mapping]] = ...) -> None: ...

class Explainability(_message.Message):
    __slots__ = ("gradients", "gradients_refusal", "deeplift", "deeplift_refusal", "explainers")
    GRADIENTS_FIELD_NUMBER: _ClassVar[int]
    GRADIENTS_REFUSAL_FIELD_NUMBER: _ClassVar[int]
    DEEPLIFT_FIELD_NUMBER: _ClassVar[int]
    DEEPLIFT_REFUSAL_FIELD_NUMBER: _ClassVar[int]
    EXPLAINERS_FIELD_NUMBER: _ClassVar[int]
    gradients: bool
    gradients_refusal: str
    deeplift: bool
    deeplift_refusal: str
    explainers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, gradients: _Optional[bool] = ..., gradients_refusal: _Optional[str] = ..., deeplift: _Optional[bool] = ..., deeplift_refusal: _Optional[str] = ..., explainers: _Optional[_Iterable[str]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelMetadata]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelMetadata, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("model", "inputs")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    inputs: _containers.RepeatedCompositeFieldContainer[NamedTensor]
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ..., inputs: _Optional[_Iterable[_Union[NamedTensor, _Mapping]]] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("outputs", "model_name", "model_version", "model_sha256", "timing")
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    outputs: _containers.RepeatedCompositeFieldContainer[NamedTensor]
    model_name: str
    model_version: str
    model_sha256: str
    timing: Timing
    def __init__(self, outputs: _Optional[_Iterable[_Union[NamedTensor, _Mapping]]] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., model_sha256: _Optional[str] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class LoadModelRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class LoadModelResponse(_message.Message):
    __slots__ = ("loaded",)
    LOADED_FIELD_NUMBER: _ClassVar[int]
    loaded: _containers.RepeatedCompositeFieldContainer[ModelMetadata]
    def __init__(self, loaded: _Optional[_Iterable[_Union[ModelMetadata, _Mapping]]] = ...) -> None: ...

class UnloadModelRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class UnloadModelResponse(_message.Message):
    __slots__ = ("unloaded_versions",)
    UNLOADED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    unloaded_versions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, unloaded_versions: _Optional[_Iterable[str]] = ...) -> None: ...

class ParamValue(_message.Message):
    __slots__ = ("number", "integer", "flag", "text", "numbers", "integers")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    INTEGER_FIELD_NUMBER: _ClassVar[int]
    FLAG_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    NUMBERS_FIELD_NUMBER: _ClassVar[int]
    INTEGERS_FIELD_NUMBER: _ClassVar[int]
    number: float
    integer: int
    flag: bool
    text: str
    numbers: NumberList
    integers: IntegerList
    def __init__(self, number: _Optional[float] = ..., integer: _Optional[int] = ..., flag: _Optional[bool] = ..., text: _Optional[str] = ..., numbers: _Optional[_Union[NumberList, _Mapping]] = ..., integers: _Optional[_Union[IntegerList, _Mapping]] = ...) -> None: ...

class NumberList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class IntegerList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, values: _Optional[_Iterable[int]] = ...) -> None: ...

class ParameterSpec(_message.Message):
    __slots__ = ("name", "kind", "description", "required", "default_value", "minimum", "maximum", "max_length")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VALUE_FIELD_NUMBER: _ClassVar[int]
    MINIMUM_FIELD_NUMBER: _ClassVar[int]
    MAXIMUM_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    description: str
    required: bool
    default_value: ParamValue
    minimum: float
    maximum: float
    max_length: int
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., description: _Optional[str] = ..., required: _Optional[bool] = ..., default_value: _Optional[_Union[ParamValue, _Mapping]] = ..., minimum: _Optional[float] = ..., maximum: _Optional[float] = ..., max_length: _Optional[int] = ...) -> None: ...

class ExplainerInfo(_message.Message):
    __slots__ = ("name", "version", "abi_version", "description", "parameters", "requires", "file_sha256", "typed_inputs")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ABI_VERSION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    REQUIRES_FIELD_NUMBER: _ClassVar[int]
    FILE_SHA256_FIELD_NUMBER: _ClassVar[int]
    TYPED_INPUTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    abi_version: str
    description: str
    parameters: _containers.RepeatedCompositeFieldContainer[ParameterSpec]
    requires: _containers.RepeatedScalarFieldContainer[str]
    file_sha256: str
    typed_inputs: bool
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., abi_version: _Optional[str] = ..., description: _Optional[str] = ..., parameters: _Optional[_Iterable[_Union[ParameterSpec, _Mapping]]] = ..., requires: _Optional[_Iterable[str]] = ..., file_sha256: _Optional[str] = ..., typed_inputs: _Optional[bool] = ...) -> None: ...

class ListExplainersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListExplainersResponse(_message.Message):
    __slots__ = ("explainers",)
    EXPLAINERS_FIELD_NUMBER: _ClassVar[int]
    explainers: _containers.RepeatedCompositeFieldContainer[ExplainerInfo]
    def __init__(self, explainers: _Optional[_Iterable[_Union[ExplainerInfo, _Mapping]]] = ...) -> None: ...

class Targets(_message.Message):
    __slots__ = ("indices", "predicted", "all", "top_k")
    INDICES_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    indices: IndexList
    predicted: PredictedClass
    all: AllOutputs
    top_k: int
    def __init__(self, indices: _Optional[_Union[IndexList, _Mapping]] = ..., predicted: _Optional[_Union[PredictedClass, _Mapping]] = ..., all: _Optional[_Union[AllOutputs, _Mapping]] = ..., top_k: _Optional[int] = ...) -> None: ...

class IndexList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, values: _Optional[_Iterable[int]] = ...) -> None: ...

class PredictedClass(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AllOutputs(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("model", "explainer", "inputs", "targets", "output", "parameters", "background", "background_id", "plot", "explained_inputs", "evaluate", "evaluation_seed")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ParamValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ParamValue, _Mapping]] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EXPLAINER_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    BACKGROUND_FIELD_NUMBER: _ClassVar[int]
    BACKGROUND_ID_FIELD_NUMBER: _ClassVar[int]
    PLOT_FIELD_NUMBER: _ClassVar[int]
    EXPLAINED_INPUTS_FIELD_NUMBER: _ClassVar[int]
    EVALUATE_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_SEED_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    explainer: str
    inputs: _containers.RepeatedCompositeFieldContainer[NamedTensor]
    targets: Targets
    output: str
    parameters: _containers.MessageMap[str, ParamValue]
    background: _containers.RepeatedCompositeFieldContainer[NamedTensor]
    background_id: str
    plot: PlotOptions
    explained_inputs: _containers.RepeatedScalarFieldContainer[str]
    evaluate: _containers.RepeatedCompositeFieldContainer[MetricRequest]
    evaluation_seed: int
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ..., explainer: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[NamedTensor, _Mapping]]] = ..., targets: _Optional[_Union[Targets, _Mapping]] = ..., output: _Optional[str] = ..., parameters: _Optional[_Mapping[str, ParamValue]] = ..., background: _Optional[_Iterable[_Union[NamedTensor, _Mapping]]] = ..., background_id: _Optional[str] = ..., plot: _Optional[_Union[PlotOptions, _Mapping]] = ..., explained_inputs: _Optional[_Iterable[str]] = ..., evaluate: _Optional[_Iterable[_Union[MetricRequest, _Mapping]]] = ..., evaluation_seed: _Optional[int] = ...) -> None: ...

class PlotOptions(_message.Message):
    __slots__ = ("png", "kind", "top_k", "tokens", "merge_wordpieces")
    PNG_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    MERGE_WORDPIECES_FIELD_NUMBER: _ClassVar[int]
    png: bool
    kind: str
    top_k: int
    tokens: _containers.RepeatedCompositeFieldContainer[TokenStrings]
    merge_wordpieces: bool
    def __init__(self, png: _Optional[bool] = ..., kind: _Optional[str] = ..., top_k: _Optional[int] = ..., tokens: _Optional[_Iterable[_Union[TokenStrings, _Mapping]]] = ..., merge_wordpieces: _Optional[bool] = ...) -> None: ...

class TokenStrings(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tokens: _Optional[_Iterable[str]] = ...) -> None: ...

class RegisterBackgroundRequest(_message.Message):
    __slots__ = ("model", "rows")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    rows: _containers.RepeatedCompositeFieldContainer[NamedTensor]
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ..., rows: _Optional[_Iterable[_Union[NamedTensor, _Mapping]]] = ...) -> None: ...

class RegisterBackgroundResponse(_message.Message):
    __slots__ = ("background_id", "rows")
    BACKGROUND_ID_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    background_id: str
    rows: int
    def __init__(self, background_id: _Optional[str] = ..., rows: _Optional[int] = ...) -> None: ...

class Attribution(_message.Message):
    __slots__ = ("input_name", "values")
    INPUT_NAME_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    input_name: str
    values: Tensor
    def __init__(self, input_name: _Optional[str] = ..., values: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("attributions", "target_indices", "outputs", "base_values", "extras", "info", "model_name", "model_version", "model_sha256", "explainer_name", "explainer_version", "explainer_file_sha256", "timing", "plot_png", "evaluation", "evaluation_seed")
    class InfoEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ATTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    TARGET_INDICES_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    BASE_VALUES_FIELD_NUMBER: _ClassVar[int]
    EXTRAS_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    EXPLAINER_NAME_FIELD_NUMBER: _ClassVar[int]
    EXPLAINER_VERSION_FIELD_NUMBER: _ClassVar[int]
    EXPLAINER_FILE_SHA256_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    PLOT_PNG_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_SEED_FIELD_NUMBER: _ClassVar[int]
    attributions: _containers.RepeatedCompositeFieldContainer[Attribution]
    target_indices: Tensor
    outputs: _containers.RepeatedCompositeFieldContainer[NamedTensor]
    base_values: Tensor
    extras: _containers.RepeatedCompositeFieldContainer[NamedTensor]
    info: _containers.ScalarMap[str, str]
    model_name: str
    model_version: str
    model_sha256: str
    explainer_name: str
    explainer_version: str
    explainer_file_sha256: str
    timing: Timing
    plot_png: bytes
    evaluation: _containers.RepeatedCompositeFieldContainer[MetricResult]
    evaluation_seed: int
    def __init__(self, attributions: _Optional[_Iterable[_Union[Attribution, _Mapping]]] = ..., target_indices: _Optional[_Union[Tensor, _Mapping]] = ..., outputs: _Optional[_Iterable[_Union[NamedTensor, _Mapping]]] = ..., base_values: _Optional[_Union[Tensor, _Mapping]] = ..., extras: _Optional[_Iterable[_Union[NamedTensor, _Mapping]]] = ..., info: _Optional[_Mapping[str, str]] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., model_sha256: _Optional[str] = ..., explainer_name: _Optional[str] = ..., explainer_version: _Optional[str] = ..., explainer_file_sha256: _Optional[str] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ..., plot_png: _Optional[bytes] = ..., evaluation: _Optional[_Iterable[_Union[MetricResult, _Mapping]]] = ..., evaluation_seed: _Optional[int] = ...) -> None: ...

class MetricRequest(_message.Message):
    __slots__ = ("name", "parameters")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ParamValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ParamValue, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    parameters: _containers.MessageMap[str, ParamValue]
    def __init__(self, name: _Optional[str] = ..., parameters: _Optional[_Mapping[str, ParamValue]] = ...) -> None: ...

class MetricResult(_message.Message):
    __slots__ = ("name", "values", "parameters", "extras", "figure_png")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ParamValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ParamValue, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    EXTRAS_FIELD_NUMBER: _ClassVar[int]
    FIGURE_PNG_FIELD_NUMBER: _ClassVar[int]
    name: str
    values: Tensor
    parameters: _containers.MessageMap[str, ParamValue]
    extras: _containers.RepeatedCompositeFieldContainer[NamedTensor]
    figure_png: bytes
    def __init__(self, name: _Optional[str] = ..., values: _Optional[_Union[Tensor, _Mapping]] = ..., parameters: _Optional[_Mapping[str, ParamValue]] = ..., extras: _Optional[_Iterable[_Union[NamedTensor, _Mapping]]] = ..., figure_png: _Optional[bytes] = ...) -> None: ...

class Timing(_message.Message):
    __slots__ = ("total_ms", "model_ms", "model_calls", "model_rows")
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    MODEL_MS_FIELD_NUMBER: _ClassVar[int]
    MODEL_CALLS_FIELD_NUMBER: _ClassVar[int]
    MODEL_ROWS_FIELD_NUMBER: _ClassVar[int]
    total_ms: float
    model_ms: float
    model_calls: int
    model_rows: int
    def __init__(self, total_ms: _Optional[float] = ..., model_ms: _Optional[float] = ..., model_calls: _Optional[int] = ..., model_rows: _Optional[int] = ...) -> None: ...
