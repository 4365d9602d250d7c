"""The explaind client: one gRPC channel, numpy arrays in and out."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import grpc
import numpy as np

from . import _convert
from ._convert import ParamLike, TargetsLike
from ._proto import explaind_pb2 as pb
from ._proto import explaind_pb2_grpc as pb_grpc

Inputs = Union[np.ndarray, Sequence[Any], Mapping[str, Any]]
PemLike = Union[bytes, str, os.PathLike, None]


class ExplaindError(Exception):
    """A request the daemon (or gRPC) answered with an error status.

    `code` is the status code's name ("NOT_FOUND", "INVALID_ARGUMENT", "UNAUTHENTICATED", ...),
    `status` the grpc.StatusCode, `message` the daemon's message (it names the offending field).
    """

    def __init__(self, code: str, message: str, status: grpc.StatusCode | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output as the model declares it."""

    name: str
    element_type: str  # "float32", "int64", ... ("string", "bfloat16": no numpy dtype)
    dtype: np.dtype | None  # None when numpy has no dtype for it
    shape: tuple[int | str | None, ...]  # a size, a symbol ("batch"), or None when unknown


@dataclass(frozen=True)
class ModelInfo:
    """A loaded model's metadata (ModelService/GetModel)."""

    name: str
    version: str
    sha256: str
    execution_provider: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    labels: tuple[str, ...]
    description: str
    default_background_shape: tuple[int, ...] | None  # None: no default background
    explainers: tuple[str, ...]  # loaded explainers that can run on it


@dataclass(frozen=True)
class ParameterInfo:
    name: str
    kind: str  # "number", "integer", "flag", "text", "numbers" or "integers"
    description: str
    required: bool
    default: Any  # the default as a Python value; None when there is none
    minimum: float | None
    maximum: float | None
    max_length: int | None


@dataclass(frozen=True)
class ExplainerInfo:
    """A loaded explainer (ExplainService/ListExplainers)."""

    name: str
    version: str
    description: str
    parameters: tuple[ParameterInfo, ...]
    requires: tuple[str, ...]  # "background", "gradients", "tree ensemble"
    typed_inputs: bool  # takes inputs of every element type (token ids), not float32 only
    file_sha256: str


@dataclass(frozen=True)
class Timing:
    total_ms: float
    model_ms: float
    model_calls: int
    model_rows: int


@dataclass(frozen=True)
class MetricResult:
    """A faithfulness metric of an explanation: `values` [N, T] (one figure per input and
    target), the `parameters` it ran with (defaults filled in), its `extras` (curves
    [N, T, steps + 1], perturbations [N, samples, *input]), and with `plot=` the curves drawn
    as PNG bytes."""

    values: np.ndarray
    parameters: dict[str, Any]
    extras: dict[str, np.ndarray]
    # The curves drawn (deletion, insertion) when the request asked for a figure.
    figure_png: bytes | None = None


@dataclass
class Explanation:
    """An explanation of N inputs for T targets each.

    `attributions[name]` is [N, T, *input] for model input `name` ([N, *input, T], shap's
    layout, when the request set shap_layout=True); `target_indices` [N, T] is the flat output
    index each target is; `base_values` [N, T] is absent (None) for methods without one.
    """

    attributions: dict[str, np.ndarray]
    target_indices: np.ndarray
    outputs: dict[str, np.ndarray]
    base_values: np.ndarray | None
    extras: dict[str, np.ndarray]
    info: dict[str, str]
    figure_png: bytes | None
    model: str
    model_version: str
    model_sha256: str
    explainer: str
    explainer_version: str
    explainer_sha256: str
    timing: Timing
    shap_layout: bool = False
    # The daemon that answered (its replica_id), when it names itself: in a fleet behind a
    # proxy, which replica served the request.
    replica: str | None = None
    # The faithfulness metrics asked for (`evaluate=`), by name, and the seed they drew from.
    evaluation: dict[str, MetricResult] = field(default_factory=dict)
    evaluation_seed: int = 0

    @property
    def values(self) -> np.ndarray:
        """The attributions of a model with one explained input."""
        if len(self.attributions) != 1:
            raise ValueError(f"attributions for {len(self.attributions)} inputs "
                             f"({', '.join(self.attributions)}): index `attributions` by name")
        return next(iter(self.attributions.values()))


def _pem(value: PemLike) -> bytes | None:
    """PEM bytes as given, or read from a path."""
    if value is None or isinstance(value, bytes):
        return value
    with open(value, "rb") as f:
        return f.read()


def _spec(info: pb.TensorInfo) -> TensorSpec:
    shape = []
    for d in info.shape:
        which = d.WhichOneof("value")
        shape.append(d.size if which == "size" else d.symbol if which == "symbol" else None)
    return TensorSpec(name=info.name, element_type=_convert.element_type_name(info.element_type),
                      dtype=_convert.DTYPES.get(info.element_type), shape=tuple(shape))


def _model_info(m: pb.ModelMetadata) -> ModelInfo:
    return ModelInfo(
        name=m.name, version=m.version, sha256=m.sha256, execution_provider=m.execution_provider,
        inputs=tuple(_spec(i) for i in m.inputs), outputs=tuple(_spec(o) for o in m.outputs),
        labels=tuple(m.labels), description=m.description,
        default_background_shape=(tuple(m.default_background_shape)
                                  if m.has_default_background else None),
        explainers=tuple(m.explainability.explainers),
    )


BACKGROUND_HEADER = "x-explaind-background"
REPLICA_HEADER = "x-explaind-replica"


def _background_digest(info: ModelInfo, tensors: Sequence[pb.NamedTensor]) -> str | None:
    """The id the daemon gives these rows (RegisterBackgroundResponse.background_id): SHA-256
    over each tensor, in the model's input order, of its rank, shape (little-endian u64 each)
    and little-endian float32 elements. None when a tensor is not float32, which the daemon
    refuses anyway."""
    by_name = {t.name: t.tensor for t in tensors}
    digest = hashlib.sha256()
    for spec in info.inputs:
        tensor = by_name.get(spec.name)
        if tensor is None:
            continue
        array = _convert.from_tensor(tensor)
        if array.dtype != np.float32:
            return None
        digest.update(np.uint64(array.ndim).tobytes())
        digest.update(np.asarray(array.shape, dtype="<u8").tobytes())
        digest.update(np.ascontiguousarray(array, dtype="<f4").tobytes())
    return digest.hexdigest()


def _named(tensors) -> dict[str, np.ndarray]:
    return {t.name: _convert.from_tensor(t.tensor) for t in tensors}


class Client:
    """A connection to an explaind daemon.

    >>> with Client("127.0.0.1:50051") as client:
    ...     e = client.explain("wine-mlp", x, "deep-shap", targets="all")

    TLS is used when `tls` is true or any certificate is given: `root_certificates` (the CA that
    signed the server's certificate; default: the system's roots), and for mutual TLS
    `private_key` and `certificate_chain`; each as PEM bytes or a file path. `token` is sent as
    `authorization: Bearer <token>`. `timeout` is every call's deadline in seconds (None: none).
    Arrays are sent in the element type the model declares (read once per model and cached).
    """

    def __init__(
        self,
        address: str,
        *,
        tls: bool = False,
        root_certificates: PemLike = None,
        private_key: PemLike = None,
        certificate_chain: PemLike = None,
        token: str | None = None,
        timeout: float | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ):
        # The daemon bounds what it sends; the client takes whatever size comes back.
        opts = [("grpc.max_receive_message_length", -1), *options]
        certs = (root_certificates, private_key, certificate_chain)
        if tls or any(c is not None for c in certs):
            creds = grpc.ssl_channel_credentials(*(_pem(c) for c in certs))
            self.channel = grpc.secure_channel(address, creds, options=opts)
        else:
            self.channel = grpc.insecure_channel(address, options=opts)
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),) if token is not None else None
        self._models = pb_grpc.ModelServiceStub(self.channel)
        self._explain = pb_grpc.ExplainServiceStub(self.channel)
        self._info: dict[tuple[str, str], ModelInfo] = {}
        self._registered: dict[str, pb.RegisterBackgroundRequest] = {}

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method, request, routing_key: str | None = None):
        return self._invoke(method, request, routing_key)[0]

    def _invoke(self, method, request, routing_key: str | None = None):
        """The response and the call (its metadata says which replica answered)."""
        metadata = self._metadata or ()
        if routing_key is not None:
            # What a fleet's proxy hashes on, so that one background lives on one replica.
            metadata = (*metadata, (BACKGROUND_HEADER, routing_key))
        try:
            return method.with_call(request, timeout=self.timeout, metadata=metadata or None)
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
            details = e.details() if hasattr(e, "details") else str(e)
            raise ExplaindError(code.name, details or "", code) from e

    # -- models -----------------------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        """Every loaded model (every version)."""
        resp = self._call(self._models.ListModels, pb.ListModelsRequest())
        return [_model_info(m) for m in resp.models]

    def model(self, name: str, version: str = "") -> ModelInfo:
        """One model's metadata ("" version: the highest loaded). Refreshes the cached copy."""
        m = self._call(self._models.GetModel,
                       pb.GetModelRequest(model=pb.ModelRef(name=name, version=version)))
        info = _model_info(m)
        self._info[(name, version)] = info
        return info

    def _model(self, name: str, version: str) -> ModelInfo:
        return self._info.get((name, version)) or self.model(name, version)

    def _tensors(self, info: ModelInfo, x: Inputs, what: str) -> list[pb.NamedTensor]:
        """`x` (one array for a one-input model, else {input name: array}) as NamedTensors,
        each cast to the element type its input declares."""
        names = ", ".join(s.name for s in info.inputs)
        if isinstance(x, Mapping):
            items = list(x.items())
        elif len(info.inputs) == 1:
            items = [(info.inputs[0].name, x)]
        else:
            raise ValueError(f"{what}: model {info.name} has inputs {names}; give a dict of "
                             f"arrays by input name")
        specs = {s.name: s for s in info.inputs}
        out = []
        for name, value in items:
            spec = specs.get(name)
            if spec is None:
                raise ValueError(f"{what}: {name!r} is not an input of {info.name} "
                                 f"(inputs: {names})")
            if spec.dtype is None:
                raise ValueError(f"{what}: input {name!r} of {info.name} takes "
                                 f"{spec.element_type}, which this client cannot send")
            where = f"{what}[{name!r}] (model input {name!r} takes {spec.element_type})"
            array = _convert.cast(value, spec.dtype, where)
            out.append(pb.NamedTensor(name=name, tensor=_convert.to_tensor(array)))
        return out

    def predict(self, model: str, inputs: Inputs, *, version: str = "") -> dict[str, np.ndarray]:
        """The model's outputs, {name: array}, for `inputs` (batch first): one array for a
        one-input model, else {input name: array}."""
        info = self._model(model, version)
        req = pb.PredictRequest(model=pb.ModelRef(name=model, version=version),
                                inputs=self._tensors(info, inputs, "inputs"))
        return _named(self._call(self._models.Predict, req).outputs)

    # -- explainers -------------------------------------------------------------------------

    def explainers(self) -> dict[str, ExplainerInfo]:
        """The loaded explainers by name, with their parameters."""
        resp = self._call(self._explain.ListExplainers, pb.ListExplainersRequest())
        out = {}
        for e in resp.explainers:
            params = tuple(
                ParameterInfo(
                    name=p.name, kind=p.kind, description=p.description, required=p.required,
                    default=(_convert.python_value(p.default_value)
                             if p.HasField("default_value") else None),
                    minimum=p.minimum if p.HasField("minimum") else None,
                    maximum=p.maximum if p.HasField("maximum") else None,
                    max_length=p.max_length if p.HasField("max_length") else None,
                )
                for p in e.parameters
            )
            out[e.name] = ExplainerInfo(
                name=e.name, version=e.version, description=e.description, parameters=params,
                requires=tuple(e.requires), typed_inputs=e.typed_inputs,
                file_sha256=e.file_sha256,
            )
        return out

    def register_background(self, model: str, rows: Inputs, *, version: str = "") -> str:
        """Registers a background set (rows on the first axis) for `model`; returns its id, for
        `explain(..., background_id=...)`."""
        info = self._model(model, version)
        tensors = self._tensors(info, rows, "rows")
        req = pb.RegisterBackgroundRequest(model=pb.ModelRef(name=model, version=version),
                                           rows=tensors)
        background_id = self._call(self._explain.RegisterBackground, req,
                                   routing_key=_background_digest(info, tensors))
        # Kept so that explain() can register it again on a replica that lacks it (the one a
        # fleet's proxy moves it to when its replica goes away).
        self._registered[background_id.background_id] = req
        return background_id.background_id

    def explain(
        self,
        model: str,
        x: Inputs,
        explainer: str,
        *,
        targets: TargetsLike = None,
        output: str = "",
        background: Inputs | None = None,
        background_id: str | None = None,
        explained_inputs: Sequence[str] | None = None,
        plot: bool | str = False,
        plot_top_k: int = 0,
        tokens: Sequence[Sequence[str]] | None = None,
        merge_wordpieces: bool = False,
        shap_layout: bool = False,
        version: str = "",
        params: Mapping[str, ParamLike] | None = None,
        evaluate: Sequence[str] | Mapping[str, Mapping[str, ParamLike]] | None = None,
        evaluation_seed: int | None = None,
        **kwargs: ParamLike,
    ) -> Explanation:
        """Explains the model's outputs for `x` (batch first) with `explainer`.

        targets: None (the predicted class), an output index, a list of them, "all" or
            ("top_k", k); they index `output` (default: the model's first), flattened.
        background / background_id: rows, or a registered background's id, for explainers that
            need one; neither: the model's default background. Either way the request carries
            the background's id in `x-explaind-background`, which a fleet's proxy hashes on
            (deploy/README.md); a background this client registered is registered again, once,
            when the replica that answers does not have it (the proxy moved it there).
        explained_inputs: the inputs to attribute; the others (an attention mask) are held.
        plot: True or a figure kind ("image", "bars", "waterfall", "text"): the daemon draws
            the explanation, returned as PNG bytes in `figure_png`. `plot_top_k`, `tokens` (one
            list of token strings per input row) and `merge_wordpieces` shape the figure.
        shap_layout: attributions as [N, *input, T] (shap's layout) instead of [N, T, *input].
        evaluate: faithfulness metrics to compute on the explanation: names
            (["completeness", "infidelity"]) or {name: {parameter: value}}; `evaluation_seed`
            fixes their random stream (default: the daemon draws one, returned in
            `evaluation_seed` of the result). Results in `Explanation.evaluation`.
        Explainer parameters come as keywords (or `params`, for a name that clashes with an
        argument here): bool -> flag, int -> integer, float -> number, str -> text, a list of
        ints -> integers, a list of numbers -> numbers.
        """
        info = self._model(model, version)
        parameters = {**(params or {}), **kwargs}
        req = pb.ExplainRequest(
            model=pb.ModelRef(name=model, version=version),
            explainer=explainer,
            inputs=self._tensors(info, x, "x"),
            output=output,
            parameters={k: _convert.param_value(k, v) for k, v in parameters.items()},
            explained_inputs=list(explained_inputs or ()),
        )
        if evaluate is not None:
            metrics = evaluate.items() if isinstance(evaluate, Mapping) else ((m, {}) for m in evaluate)
            for name, metric_params in metrics:
                req.evaluate.append(pb.MetricRequest(
                    name=name,
                    parameters={k: _convert.param_value(k, v) for k, v in metric_params.items()}))
        if evaluation_seed is not None:
            req.evaluation_seed = evaluation_seed
        t = _convert.targets(targets)
        if t is not None:
            req.targets.CopyFrom(t)
        if background is not None and background_id is not None:
            raise ValueError("give background or background_id, not both")
        routing_key = None
        if background is not None:
            req.background.extend(self._tensors(info, background, "background"))
            routing_key = _background_digest(info, req.background)
        if background_id is not None:
            req.background_id = routing_key = background_id
        if plot:
            req.plot.CopyFrom(pb.PlotOptions(
                png=True, kind=plot if isinstance(plot, str) else "", top_k=plot_top_k,
                tokens=[pb.TokenStrings(tokens=list(row)) for row in (tokens or ())],
                merge_wordpieces=merge_wordpieces,
            ))
        try:
            resp, call = self._invoke(self._explain.Explain, req, routing_key)
        except ExplaindError as e:
            registered = self._registered.get(background_id or "")
            if e.code != "NOT_FOUND" or registered is None or "background_id" not in e.message:
                raise
            self._call(self._explain.RegisterBackground, registered, routing_key)
            resp, call = self._invoke(self._explain.Explain, req, routing_key)
        replica = dict(call.initial_metadata() or ()).get(REPLICA_HEADER)

        attributions = {a.input_name: _convert.from_tensor(a.values) for a in resp.attributions}
        if shap_layout:
            attributions = {k: np.moveaxis(v, 1, -1) for k, v in attributions.items()}
        tm = resp.timing
        return Explanation(
            attributions=attributions,
            target_indices=_convert.from_tensor(resp.target_indices),
            outputs=_named(resp.outputs),
            base_values=(_convert.from_tensor(resp.base_values)
                         if resp.HasField("base_values") else None),
            extras=_named(resp.extras),
            info=dict(resp.info),
            figure_png=resp.plot_png or None,
            model=resp.model_name,
            model_version=resp.model_version,
            model_sha256=resp.model_sha256,
            explainer=resp.explainer_name,
            explainer_version=resp.explainer_version,
            explainer_sha256=resp.explainer_file_sha256,
            timing=Timing(tm.total_ms, tm.model_ms, tm.model_calls, tm.model_rows),
            shap_layout=shap_layout,
            replica=replica,
            evaluation={m.name: MetricResult(
                values=_convert.from_tensor(m.values),
                parameters={k: _convert.python_value(v) for k, v in m.parameters.items()},
                extras=_named(m.extras),
                figure_png=m.figure_png or None,
            ) for m in resp.evaluation},
            evaluation_seed=resp.evaluation_seed,
        )
