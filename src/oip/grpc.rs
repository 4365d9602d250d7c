//! `inference.GRPCInferenceService`: each RPC decodes the protocol's message into explaind's,
//! calls the native service that owns the behaviour (so limits, roles, audit records and
//! metrics are the native API's own), and encodes the answer.

use super::explain::{self, BACKGROUND_PREFIX, Output};
use super::parameter::Parameters;
use super::tensor;
use crate::access::Caller;
use crate::convert::invalid;
use crate::inference::{self as oip, grpc_inference_service_server::GrpcInferenceService};
use crate::proto;
use crate::proto::admin_service_server::AdminService as _;
use crate::proto::explain_service_server::ExplainService as _;
use crate::proto::model_service_server::ModelService as _;
use crate::service::{AdminService, ExplainService, ModelService, State};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The platform name the protocol's model metadata gives ONNX models (Triton's).
const PLATFORM: &str = "onnxruntime_onnx";

/// The protocol's extensions explaind serves, as ServerMetadata lists them.
pub const EXTENSIONS: [&str; 4] = ["model_repository", "binary_tensor_data", "parameters", "explaind_explain"];

pub struct InferenceService {
    pub state: Arc<State>,
    /// The repository extension loads and unloads as AdminService does, health included.
    pub admin: Arc<AdminService>,
}

fn model_ref(name: &str, version: &str) -> proto::ModelRef {
    proto::ModelRef { name: name.to_string(), version: version.to_string() }
}

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(&self, _: Request<oip::ServerLiveRequest>) -> Result<Response<oip::ServerLiveResponse>, Status> {
        Ok(Response::new(oip::ServerLiveResponse { live: true }))
    }

    async fn server_ready(&self, _: Request<oip::ServerReadyRequest>) -> Result<Response<oip::ServerReadyResponse>, Status> {
        Ok(Response::new(oip::ServerReadyResponse { ready: !self.state.is_draining() }))
    }

    async fn model_ready(&self, request: Request<oip::ModelReadyRequest>) -> Result<Response<oip::ModelReadyResponse>, Status> {
        let r = request.get_ref();
        let loaded = self.state.repository.get(&r.name, &r.version).is_ok();
        Ok(Response::new(oip::ModelReadyResponse { ready: loaded && !self.state.is_draining() }))
    }

    async fn server_metadata(
        &self,
        _: Request<oip::ServerMetadataRequest>,
    ) -> Result<Response<oip::ServerMetadataResponse>, Status> {
        Ok(Response::new(oip::ServerMetadataResponse {
            name: "explaind".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<oip::ModelMetadataRequest>,
    ) -> Result<Response<oip::ModelMetadataResponse>, Status> {
        let r = request.get_ref();
        let model = self.state.model(Some(&model_ref(&r.name, &r.version)))?;
        let versions = self.state.repository.list().iter().filter(|m| m.name == model.name).map(|m| m.version.clone()).collect();
        let tensors = |specs: &[explaind_runtime::TensorSpec]| {
            specs
                .iter()
                .map(|s| oip::model_metadata_response::TensorMetadata {
                    name: s.name.clone(),
                    datatype: tensor::datatype_name(s.element_type),
                    shape: s
                        .shape
                        .iter()
                        .map(|d| match d {
                            explaind_runtime::Dim::Fixed(n) => *n,
                            _ => -1,
                        })
                        .collect(),
                })
                .collect()
        };
        Ok(Response::new(oip::ModelMetadataResponse {
            name: model.name.clone(),
            versions,
            platform: PLATFORM.into(),
            inputs: tensors(&model.inputs),
            outputs: tensors(&model.outputs),
        }))
    }

    async fn model_infer(&self, request: Request<oip::ModelInferRequest>) -> Result<Response<oip::ModelInferResponse>, Status> {
        let (metadata, extensions, mut message) = request.into_parts();
        let parameters = Parameters::from_grpc(&message.parameters, "parameters")?;
        check_datatypes(&*self.state.model(Some(&model_ref(&message.model_name, &message.model_version)))?, &message)?;
        let (inputs, background) = decode_inputs(&mut message)?;
        let model = model_ref(&message.model_name, &message.model_version);
        let caller = extensions.get::<Caller>().cloned();
        let (model_name, model_version, outputs, response_parameters) = match explain::explainer(&parameters)? {
            Some(explainer) => {
                Caller::require(caller.as_ref(), "explain", "ModelInfer with parameters.explainer")?;
                let request = explain::explain_request(model, explainer, &parameters, inputs, background)?;
                let response = ExplainService(self.state.clone())
                    .explain(Request::from_parts(metadata, extensions, request))
                    .await?
                    .into_inner();
                let (name, version) = (response.model_name.clone(), response.model_version.clone());
                let (outputs, parameters) = explain::explain_outputs(response);
                (name, version, outputs, parameters)
            }
            None => {
                Caller::require(caller.as_ref(), "predict", "ModelInfer")?;
                if !background.is_empty() {
                    return Err(invalid(format!(
                        "inputs: {BACKGROUND_PREFIX}* inputs are background rows, which only an explanation \
                         (parameters.explainer) takes"
                    )));
                }
                let request = proto::PredictRequest { model: Some(model), inputs };
                let response = ModelService(self.state.clone())
                    .predict(Request::from_parts(metadata, extensions, request))
                    .await?
                    .into_inner();
                let outputs = response.outputs.into_iter().filter_map(|o| Some(Output::Tensor(o.name, o.tensor?))).collect();
                (response.model_name, response.model_version, outputs, Parameters::default())
            }
        };
        let requested: Vec<&str> = message.outputs.iter().map(|o| o.name.as_str()).collect();
        let (outputs, raw_output_contents) = encode_outputs(outputs, &requested)?;
        Ok(Response::new(oip::ModelInferResponse {
            model_name,
            model_version,
            id: message.id,
            parameters: response_parameters.to_grpc(),
            outputs,
            raw_output_contents,
        }))
    }

    async fn repository_index(
        &self,
        request: Request<oip::RepositoryIndexRequest>,
    ) -> Result<Response<oip::RepositoryIndexResponse>, Status> {
        let ready_only = request.get_ref().ready;
        let on_disk = self.state.repository.on_disk().map_err(|e| Status::failed_precondition(e.to_string()))?;
        let models = on_disk
            .into_iter()
            .map(|(name, version)| {
                let loaded = self.state.repository.get(&name, &version).is_ok();
                oip::repository_index_response::ModelIndex {
                    state: if loaded { "READY" } else { "UNAVAILABLE" }.into(),
                    reason: if loaded { String::new() } else { "not loaded".into() },
                    name,
                    version,
                }
            })
            .filter(|m| !ready_only || m.state == "READY")
            .collect();
        Ok(Response::new(oip::RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        request: Request<oip::RepositoryModelLoadRequest>,
    ) -> Result<Response<oip::RepositoryModelLoadResponse>, Status> {
        let (metadata, extensions, message) = request.into_parts();
        refuse_repository_parameters(&message.parameters)?;
        let load = proto::LoadModelRequest { name: message.model_name, version: String::new() };
        self.admin.load_model(Request::from_parts(metadata, extensions, load)).await?;
        Ok(Response::new(oip::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<oip::RepositoryModelUnloadRequest>,
    ) -> Result<Response<oip::RepositoryModelUnloadResponse>, Status> {
        let (metadata, extensions, message) = request.into_parts();
        refuse_repository_parameters(&message.parameters)?;
        let unload = proto::UnloadModelRequest { name: message.model_name, version: String::new() };
        self.admin.unload_model(Request::from_parts(metadata, extensions, unload)).await?;
        Ok(Response::new(oip::RepositoryModelUnloadResponse {}))
    }
}

/// Triton's load parameters (a config override, files sent with the request) have no meaning
/// here: explaind loads what its repository holds.
fn refuse_repository_parameters(
    parameters: &std::collections::HashMap<String, oip::ModelRepositoryParameter>,
) -> Result<(), Status> {
    match parameters.keys().next() {
        Some(name) => {
            Err(invalid(format!("parameters.{name}: explaind loads models from its repository as they are, with no parameters")))
        }
        None => Ok(()),
    }
}

/// Each input's datatype against the model's, in the protocol's words (the native service
/// would name its own fields).
fn check_datatypes(model: &explaind_runtime::Model, message: &oip::ModelInferRequest) -> Result<(), Status> {
    for (i, input) in message.inputs.iter().enumerate() {
        let name = input.name.strip_prefix(BACKGROUND_PREFIX).unwrap_or(&input.name);
        let spec = match model.inputs.as_slice() {
            [only] if name.is_empty() => Some(only),
            specs => specs.iter().find(|s| s.name == name),
        };
        if let Some(spec) = spec {
            let takes = tensor::datatype_name(spec.element_type);
            if takes != input.datatype {
                return Err(invalid(format!(
                    "inputs[{i}].datatype: {}, but model input {:?} takes {takes}",
                    input.datatype, spec.name
                )));
            }
        }
    }
    Ok(())
}

/// The request's inputs as explaind's tensors, split into model inputs and background rows.
fn decode_inputs(message: &mut oip::ModelInferRequest) -> Result<(Vec<proto::NamedTensor>, Vec<proto::NamedTensor>), Status> {
    // Taken, not copied: the inputs' bytes move into explaind's tensors.
    let mut raw = std::mem::take(&mut message.raw_input_contents).into_iter();
    if raw.len() != 0 && raw.len() != message.inputs.len() {
        return Err(invalid(format!(
            "raw_input_contents: {} entries for {} inputs (give one per input, or none)",
            raw.len(),
            message.inputs.len()
        )));
    }
    let (mut inputs, mut background) = (Vec::new(), Vec::new());
    for (i, input) in message.inputs.iter().enumerate() {
        let tensor = tensor::input_tensor(input, raw.next(), &format!("inputs[{i}]"))?;
        match input.name.strip_prefix(BACKGROUND_PREFIX) {
            Some(name) => background.push(proto::NamedTensor { name: name.to_string(), tensor: Some(tensor) }),
            None => inputs.push(proto::NamedTensor { name: input.name.clone(), tensor: Some(tensor) }),
        }
    }
    Ok((inputs, background))
}

/// The output tensors (only the `requested` ones, in that order, when any are named) with
/// their elements as raw contents; the figure as one BYTES element, which the protocol
/// serializes as a 4-byte little-endian length and the bytes.
pub fn encode_outputs(
    outputs: Vec<Output>,
    requested: &[&str],
) -> Result<(Vec<oip::model_infer_response::InferOutputTensor>, Vec<Vec<u8>>), Status> {
    let name_of = |o: &Output| o.name().to_string();
    let mut chosen: Vec<Output> = Vec::new();
    if requested.is_empty() {
        chosen = outputs;
    } else {
        let mut outputs: Vec<Option<Output>> = outputs.into_iter().map(Some).collect();
        for (i, name) in requested.iter().enumerate() {
            let found = outputs.iter().position(|o| o.as_ref().is_some_and(|o| name_of(o) == *name));
            match found {
                Some(at) => chosen.push(outputs[at].take().expect("found above")),
                None => {
                    let names: Vec<String> = outputs.iter().flatten().map(name_of).collect();
                    return Err(invalid(format!(
                        "outputs[{i}].name: {name:?} is not an output of this request (outputs: {})",
                        names.join(", ")
                    )));
                }
            }
        }
    }
    let mut tensors = Vec::with_capacity(chosen.len());
    let mut raw = Vec::with_capacity(chosen.len());
    for output in chosen {
        match output {
            Output::Tensor(name, t) => {
                let (datatype, shape) = tensor::output_header(&t);
                tensors.push(oip::model_infer_response::InferOutputTensor { name, datatype, shape, ..Default::default() });
                raw.push(t.data);
            }
            Output::Png(name, png) => {
                tensors.push(oip::model_infer_response::InferOutputTensor {
                    name,
                    datatype: "BYTES".into(),
                    shape: vec![1],
                    ..Default::default()
                });
                let mut bytes = (png.len() as u32).to_le_bytes().to_vec();
                bytes.extend(png);
                raw.push(bytes);
            }
        }
    }
    Ok((tensors, raw))
}
