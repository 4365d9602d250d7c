//! The Open Inference Protocol over HTTP/JSON (`--http-listen`): the protocol's REST routes,
//! JSON tensors (flat or nested `data`) and its binary tensor data extension
//! (`Inference-Header-Content-Length`), as tritonclient.http and kserve's REST client send
//! them.
//!
//! Each route is translated into the gRPC call of the same meaning and sent, in process, through
//! the same service stack a gRPC client reaches (audit trail, access control, limits, replica
//! header): the HTTP front adds no behaviour of its own, only a codec. A gRPC status becomes
//! the protocol's HTTP error: a status code and `{"error": "<message>"}`.

use super::parameter::Parameters;
use super::tensor;
use crate::inference::{self as oip, grpc_inference_service_client::GrpcInferenceServiceClient};
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tonic::Status;
use tonic::transport::server::TcpConnectInfo;

/// The in-process gRPC stack the routes call.
pub type Stack =
    tower::util::BoxCloneSyncService<http::Request<tonic::body::Body>, http::Response<tonic::body::Body>, Infallible>;
type Client = GrpcInferenceServiceClient<Stack>;

/// Request headers that travel on as gRPC metadata: credentials, the request id, the routing key.
const FORWARDED: [&str; 3] = ["authorization", "x-request-id", "x-explaind-background"];
const HEADER_LENGTH: &str = "inference-header-content-length";

/// The HTTP front: the in-process stack, and what the daemon's state says about draining.
pub struct HttpFront {
    stack: Stack,
    state: Arc<crate::service::State>,
    in_flight: Arc<AtomicUsize>,
}

impl HttpFront {
    pub fn new(stack: Stack, state: Arc<crate::service::State>) -> HttpFront {
        HttpFront { stack, state, in_flight: Arc::default() }
    }

    /// Requests being answered, for the drain to wait on.
    pub fn in_flight(&self) -> Arc<AtomicUsize> {
        self.in_flight.clone()
    }

    /// Serves the routes on `listener` until the process ends (HTTP/1.1, no TLS: bind it where
    /// only trusted clients reach, or put a TLS-terminating proxy in front). A request body is
    /// bounded by `server.max_message_bytes`, as a gRPC message is. Once the daemon drains,
    /// new requests other than health get 503.
    pub async fn serve(self, listener: tokio::net::TcpListener) {
        let front = Arc::new(self);
        loop {
            let Ok((stream, peer)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            // Who called, as the access layer reads it from a gRPC connection (an open daemon
            // names callers by address).
            let connection = TcpConnectInfo { local_addr: stream.local_addr().ok(), remote_addr: Some(peer) };
            let front = front.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
                    let front = front.clone();
                    request.extensions_mut().insert(connection.clone());
                    async move { Ok::<_, Infallible>(front.answer(request).await) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    }

    async fn answer(&self, request: http::Request<hyper::body::Incoming>) -> HttpResponse {
        let health = request.uri().path().starts_with("/v2/health/");
        if self.state.is_draining() && !health {
            return error_response(Status::unavailable("the daemon is draining: send the request to another replica"));
        }
        // Counted until answered or dropped (a client that hangs up drops the future).
        struct Counted(Arc<AtomicUsize>);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let _counted = Counted(self.in_flight.clone());
        let client = GrpcInferenceServiceClient::new(self.stack.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        route(client, request, self.state.limits.max_message_bytes).await.unwrap_or_else(error_response)
    }
}

type HttpResponse = http::Response<Full<Bytes>>;

fn json_response(status: StatusCode, body: Value) -> HttpResponse {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("static response parts")
}

/// The protocol's error form for a gRPC status.
fn error_response(status: Status) -> HttpResponse {
    use tonic::Code;
    let code = match status.code() {
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange | Code::AlreadyExists => StatusCode::BAD_REQUEST,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Cancelled | Code::Aborted => StatusCode::CONFLICT,
        Code::Ok | Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json_response(code, json!({ "error": status.message() }))
}

fn not_found(what: &str) -> Status {
    Status::not_found(format!("{what}: no such route of the Open Inference Protocol (see README.md)"))
}

/// A gRPC request carrying the HTTP request's forwarded headers and connection.
fn grpc_request<T>(parts: &http::request::Parts, message: T) -> tonic::Request<T> {
    let headers = &parts.headers;
    let mut request = tonic::Request::new(message);
    if let Some(connection) = parts.extensions.get::<TcpConnectInfo>() {
        request.extensions_mut().insert(connection.clone());
    }
    for name in FORWARDED {
        if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()) {
            request.metadata_mut().insert(name, value);
        }
    }
    request
}

/// `/v2/models/{m}[/versions/{v}][/{action}]` split into its parts.
fn model_path(rest: &str) -> Option<(String, String, Option<&str>)> {
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [m] => Some((percent_decode(m)?, String::new(), None)),
        [m, action] => Some((percent_decode(m)?, String::new(), Some(*action))),
        [m, "versions", v] => Some((percent_decode(m)?, percent_decode(v)?, None)),
        [m, "versions", v, action] => Some((percent_decode(m)?, percent_decode(v)?, Some(*action))),
        _ => None,
    }
}

/// Percent-decoding of a path segment (model names are plain, but clients escape anyway); an
/// empty segment or one that is not UTF-8 names nothing.
fn percent_decode(segment: &str) -> Option<String> {
    let decoded = percent_encoding::percent_decode_str(segment).decode_utf8().ok()?;
    (!decoded.is_empty()).then(|| decoded.into_owned())
}

async fn route(
    mut client: Client,
    request: http::Request<hyper::body::Incoming>,
    max_body: usize,
) -> Result<HttpResponse, Status> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().trim_end_matches('/').to_string();
    let get = parts.method == Method::GET;
    let post = parts.method == Method::POST;
    match path.as_str() {
        "/v2/health/live" if get => {
            let live = client.server_live(grpc_request(&parts, oip::ServerLiveRequest {})).await?.into_inner().live;
            return Ok(json_response(StatusCode::OK, json!({ "live": live })));
        }
        "/v2/health/ready" if get => {
            let ready = client.server_ready(grpc_request(&parts, oip::ServerReadyRequest {})).await?.into_inner().ready;
            let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            return Ok(json_response(code, json!({ "ready": ready })));
        }
        "/v2" if get => {
            let m = client.server_metadata(grpc_request(&parts, oip::ServerMetadataRequest {})).await?.into_inner();
            return Ok(json_response(
                StatusCode::OK,
                json!({ "name": m.name, "version": m.version, "extensions": m.extensions }),
            ));
        }
        "/v2/repository/index" if post => {
            let body = read_json(body, max_body).await?;
            let ready = body.get("ready").and_then(Value::as_bool).unwrap_or(false);
            let request = oip::RepositoryIndexRequest { repository_name: String::new(), ready };
            let index = client.repository_index(grpc_request(&parts, request)).await?.into_inner();
            let models: Vec<Value> = index
                .models
                .into_iter()
                .map(|m| json!({ "name": m.name, "version": m.version, "state": m.state, "reason": m.reason }))
                .collect();
            return Ok(json_response(StatusCode::OK, Value::Array(models)));
        }
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("/v2/repository/models/") {
        let (name, action) = rest.rsplit_once('/').ok_or_else(|| not_found(&path))?;
        let name = percent_decode(name).ok_or_else(|| not_found(&path))?;
        return match (action, post) {
            ("load", true) => {
                let request = oip::RepositoryModelLoadRequest { model_name: name, ..Default::default() };
                client.repository_model_load(grpc_request(&parts, request)).await?;
                Ok(json_response(StatusCode::OK, json!({})))
            }
            ("unload", true) => {
                let request = oip::RepositoryModelUnloadRequest { model_name: name, ..Default::default() };
                client.repository_model_unload(grpc_request(&parts, request)).await?;
                Ok(json_response(StatusCode::OK, json!({})))
            }
            _ => Err(not_found(&path)),
        };
    }
    let Some((name, version, action)) = path.strip_prefix("/v2/models/").and_then(model_path) else {
        return Err(not_found(&path));
    };
    match (action, get, post) {
        (None, true, _) => {
            let request = oip::ModelMetadataRequest { name, version };
            let m = client.model_metadata(grpc_request(&parts, request)).await?.into_inner();
            let tensors = |ts: Vec<oip::model_metadata_response::TensorMetadata>| {
                ts.into_iter().map(|t| json!({ "name": t.name, "datatype": t.datatype, "shape": t.shape })).collect::<Vec<_>>()
            };
            Ok(json_response(
                StatusCode::OK,
                json!({ "name": m.name, "versions": m.versions, "platform": m.platform,
                        "inputs": tensors(m.inputs), "outputs": tensors(m.outputs) }),
            ))
        }
        (Some("ready"), true, _) => {
            let request = oip::ModelReadyRequest { name: name.clone(), version };
            let ready = client.model_ready(grpc_request(&parts, request)).await?.into_inner().ready;
            let code = if ready { StatusCode::OK } else { StatusCode::BAD_REQUEST };
            Ok(json_response(code, json!({ "name": name, "ready": ready })))
        }
        (Some(action @ ("infer" | "explain")), _, true) => {
            let body = read_body(body, max_body).await?;
            infer(client, &parts, name, version, action == "explain", body).await
        }
        _ => Err(not_found(&path)),
    }
}

async fn read_body(body: hyper::body::Incoming, max_body: usize) -> Result<Bytes, Status> {
    match Limited::new(body, max_body).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(Status::resource_exhausted(format!("request body: larger than the limit of {max_body} bytes")))
        }
        Err(e) => Err(Status::invalid_argument(format!("request body: {e}"))),
    }
}

async fn read_json(body: hyper::body::Incoming, max_body: usize) -> Result<Value, Status> {
    let bytes = read_body(body, max_body).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(&bytes).map_err(|e| Status::invalid_argument(format!("request body: not JSON ({e})")))
}

/// `.../infer` and `.../explain`: the JSON request (and any binary tensor data after it) as a
/// ModelInfer request, its answer as JSON (with binary outputs where asked for).
async fn infer(
    mut client: Client,
    parts: &http::request::Parts,
    model_name: String,
    model_version: String,
    explain: bool,
    body: Bytes,
) -> Result<HttpResponse, Status> {
    let header_length = match parts.headers.get(HEADER_LENGTH) {
        None => body.len(),
        Some(v) => v.to_str().ok().and_then(|v| v.parse::<usize>().ok()).filter(|&n| n <= body.len()).ok_or_else(|| {
            Status::invalid_argument(format!("{HEADER_LENGTH}: not a length within the body ({} bytes)", body.len()))
        })?,
    };
    let request: Value = serde_json::from_slice(&body[..header_length])
        .map_err(|e| Status::invalid_argument(format!("request body: not JSON ({e})")))?;
    let mut binary = body.slice(header_length..);
    let object = request.as_object().ok_or_else(|| Status::invalid_argument("request body: expected a JSON object"))?;
    let parameters = match object.get("parameters") {
        None => Parameters::default(),
        Some(Value::Object(map)) => Parameters::from_json(map, "parameters")?,
        Some(_) => return Err(Status::invalid_argument("parameters: expected an object")),
    };
    if explain && parameters.get("explainer").is_none() {
        return Err(Status::invalid_argument("parameters.explainer: the explain route needs the explainer to run"));
    }
    let binary_output = matches!(parameters.get("binary_data_output"), Some(super::parameter::Parameter::Bool(true)));
    let inputs_json = match object.get("inputs") {
        Some(Value::Array(inputs)) => inputs,
        _ => return Err(Status::invalid_argument("inputs: expected a list of tensors")),
    };
    let mut inputs = Vec::with_capacity(inputs_json.len());
    let mut raw = Vec::with_capacity(inputs_json.len());
    for (i, input) in inputs_json.iter().enumerate() {
        let (tensor, bytes) = json_input(input, &mut binary, &format!("inputs[{i}]"))?;
        inputs.push(tensor);
        raw.push(bytes);
    }
    if !binary.is_empty() {
        return Err(Status::invalid_argument(format!(
            "request body: {} bytes of binary data that no input's binary_data_size claims",
            binary.len()
        )));
    }
    // Per output: binary when its own parameters.binary_data says so, else as the request's
    // binary_data_output says.
    let mut binary_of = std::collections::HashMap::new();
    let mut outputs = Vec::new();
    if let Some(requested) = object.get("outputs") {
        let list = requested.as_array().ok_or_else(|| Status::invalid_argument("outputs: expected a list"))?;
        for (i, o) in list.iter().enumerate() {
            let name = o
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| Status::invalid_argument(format!("outputs[{i}].name: expected a string")))?;
            if let Some(binary) = o.pointer("/parameters/binary_data").and_then(Value::as_bool) {
                binary_of.insert(name.to_string(), binary);
            }
            outputs.push(oip::model_infer_request::InferRequestedOutputTensor { name: name.to_string(), ..Default::default() });
        }
    }
    let message = oip::ModelInferRequest {
        model_name,
        model_version,
        id: object.get("id").and_then(Value::as_str).unwrap_or_default().to_string(),
        parameters: parameters.to_grpc(),
        inputs,
        outputs,
        raw_input_contents: raw,
    };
    let response = client.model_infer(grpc_request(parts, message)).await?;
    let replica = response.metadata().get("x-explaind-replica").cloned();
    let response = response.into_inner();
    let mut appended: Vec<u8> = Vec::new();
    let mut outputs_json = Vec::with_capacity(response.outputs.len());
    for (output, bytes) in response.outputs.iter().zip(&response.raw_output_contents) {
        let binary = binary_of.get(&output.name).copied().unwrap_or(binary_output);
        let mut entry = json!({ "name": output.name, "datatype": output.datatype, "shape": output.shape });
        if binary {
            entry["parameters"] = json!({ "binary_data_size": bytes.len() });
            appended.extend_from_slice(bytes);
        } else {
            let (data, parameters) = json_data(&output.datatype, bytes)?;
            entry["data"] = data;
            if let Some(p) = parameters {
                entry["parameters"] = p;
            }
        }
        outputs_json.push(entry);
    }
    let mut body = json!({
        "model_name": response.model_name,
        "model_version": response.model_version,
        "outputs": outputs_json,
    });
    if !response.id.is_empty() {
        body["id"] = json!(response.id);
    }
    let response_parameters = Parameters::from_grpc(&response.parameters, "parameters")?;
    if response_parameters.iter().next().is_some() {
        body["parameters"] = Value::Object(response_parameters.to_json());
    }
    let text = body.to_string();
    let mut builder = http::Response::builder().status(StatusCode::OK);
    if let Some(replica) = replica.and_then(|r| http::HeaderValue::from_bytes(r.as_bytes()).ok()) {
        builder = builder.header("x-explaind-replica", replica);
    }
    let response = if appended.is_empty() {
        builder.header(http::header::CONTENT_TYPE, "application/json").body(Full::new(Bytes::from(text)))
    } else {
        let mut bytes = text.into_bytes();
        let length = bytes.len();
        bytes.extend(appended);
        builder
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .header(HEADER_LENGTH, length)
            .body(Full::new(Bytes::from(bytes)))
    };
    Ok(response.expect("valid response parts"))
}

/// One JSON input as the gRPC tensor header and its little-endian bytes: from the binary data
/// after the JSON when its `parameters.binary_data_size` says so, else from `data`.
fn json_input(
    input: &Value,
    binary: &mut Bytes,
    field: &str,
) -> Result<(oip::model_infer_request::InferInputTensor, Vec<u8>), Status> {
    let text = |key: &str| {
        input
            .get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| Status::invalid_argument(format!("{field}.{key}: expected a string")))
    };
    let name = text("name")?.to_string();
    let datatype = text("datatype")?.to_string();
    let shape = input
        .get("shape")
        .and_then(Value::as_array)
        .and_then(|dims| dims.iter().map(Value::as_i64).collect::<Option<Vec<i64>>>())
        .ok_or_else(|| Status::invalid_argument(format!("{field}.shape: expected a list of integers")))?;
    let mut header = oip::model_infer_request::InferInputTensor { name, datatype: datatype.clone(), shape, ..Default::default() };
    if let Some(size) = input.pointer("/parameters/binary_data_size") {
        let size = size.as_u64().filter(|&n| n as usize <= binary.len()).ok_or_else(|| {
            Status::invalid_argument(format!(
                "{field}.parameters.binary_data_size: {size} is more than the binary data left ({} bytes)",
                binary.len()
            ))
        })?;
        // Checked against shape and datatype by the gRPC service, like any raw contents.
        return Ok((header, binary.split_to(size as usize).to_vec()));
    }
    let data = input
        .get("data")
        .ok_or_else(|| Status::invalid_argument(format!("{field}.data: missing (or give parameters.binary_data_size)")))?;
    let mut flat = Vec::new();
    flatten(data, &mut flat);
    let elements = json_elements(&datatype, &flat, field)?;
    header.contents = elements.contents;
    let bytes = match elements.raw {
        Some(raw) => raw,
        None => tensor::input_tensor(&header, None, field)?.data,
    };
    header.contents = None;
    Ok((header, bytes))
}

fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        other => out.push(other),
    }
}

/// JSON elements as the protocol's typed contents, or as raw bytes for the half-precision
/// types, which have no contents list.
struct JsonElements {
    contents: Option<oip::InferTensorContents>,
    raw: Option<Vec<u8>>,
}

fn json_elements(datatype: &str, values: &[&Value], field: &str) -> Result<JsonElements, Status> {
    let wrong = |i: usize, what: &str| Status::invalid_argument(format!("{field}.data[{i}]: {} is not {what}", values[i]));
    let numbers = || -> Result<Vec<f64>, Status> {
        values.iter().enumerate().map(|(i, v)| v.as_f64().ok_or_else(|| wrong(i, "a number"))).collect()
    };
    let integers = || -> Result<Vec<i64>, Status> {
        values.iter().enumerate().map(|(i, v)| v.as_i64().ok_or_else(|| wrong(i, "an integer"))).collect()
    };
    let mut c = oip::InferTensorContents::default();
    match datatype {
        "BOOL" => {
            c.bool_contents = values
                .iter()
                .enumerate()
                .map(|(i, v)| v.as_bool().ok_or_else(|| wrong(i, "a boolean")))
                .collect::<Result<_, _>>()?
        }
        "INT8" | "INT16" | "INT32" => {
            c.int_contents = integers()?
                .into_iter()
                .enumerate()
                .map(|(i, v)| i32::try_from(v).map_err(|_| wrong(i, &format!("within {datatype}"))))
                .collect::<Result<_, _>>()?
        }
        "INT64" => c.int64_contents = integers()?,
        "UINT8" | "UINT16" | "UINT32" => {
            c.uint_contents = values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_u64().and_then(|u| u32::try_from(u).ok()).ok_or_else(|| wrong(i, &format!("within {datatype}")))
                })
                .collect::<Result<_, _>>()?
        }
        "UINT64" => {
            c.uint64_contents = values
                .iter()
                .enumerate()
                .map(|(i, v)| v.as_u64().ok_or_else(|| wrong(i, "an unsigned integer")))
                .collect::<Result<_, _>>()?
        }
        "FP32" => c.fp32_contents = numbers()?.into_iter().map(|v| v as f32).collect(),
        "FP64" => c.fp64_contents = numbers()?,
        "FP16" => {
            let raw = numbers()?.into_iter().flat_map(|v| half::f16::from_f64(v).to_le_bytes()).collect();
            return Ok(JsonElements { contents: None, raw: Some(raw) });
        }
        "BF16" => {
            let raw = numbers()?.into_iter().flat_map(|v| half::bf16::from_f64(v).to_le_bytes()).collect();
            return Ok(JsonElements { contents: None, raw: Some(raw) });
        }
        // Unknown and unsupported names: the tensor module's message lists what is accepted.
        other => {
            tensor::onnx_type(other, &format!("{field}.datatype"))?;
        }
    }
    Ok(JsonElements { contents: Some(c), raw: None })
}

/// An output's little-endian bytes as a JSON `data` list (and the parameters that say how to
/// read it: a BYTES element, the figure, is base64).
fn json_data(datatype: &str, bytes: &[u8]) -> Result<(Value, Option<Value>), Status> {
    fn chunks<const N: usize>(bytes: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
        bytes.chunks_exact(N).map(|c| c.try_into().expect("exact chunks"))
    }
    let data = match datatype {
        "BOOL" => json!(bytes.iter().map(|&b| b != 0).collect::<Vec<_>>()),
        "UINT8" => json!(bytes),
        "INT8" => json!(bytes.iter().map(|&b| b as i8).collect::<Vec<_>>()),
        "UINT16" => json!(chunks::<2>(bytes).map(u16::from_le_bytes).collect::<Vec<_>>()),
        "INT16" => json!(chunks::<2>(bytes).map(i16::from_le_bytes).collect::<Vec<_>>()),
        "UINT32" => json!(chunks::<4>(bytes).map(u32::from_le_bytes).collect::<Vec<_>>()),
        "INT32" => json!(chunks::<4>(bytes).map(i32::from_le_bytes).collect::<Vec<_>>()),
        "UINT64" => json!(chunks::<8>(bytes).map(u64::from_le_bytes).collect::<Vec<_>>()),
        "INT64" => json!(chunks::<8>(bytes).map(i64::from_le_bytes).collect::<Vec<_>>()),
        "FP16" => json!(chunks::<2>(bytes).map(|b| half::f16::from_le_bytes(b).to_f32()).collect::<Vec<_>>()),
        "BF16" => json!(chunks::<2>(bytes).map(|b| half::bf16::from_le_bytes(b).to_f32()).collect::<Vec<_>>()),
        "FP32" => json!(chunks::<4>(bytes).map(f32::from_le_bytes).collect::<Vec<_>>()),
        "FP64" => json!(chunks::<8>(bytes).map(f64::from_le_bytes).collect::<Vec<_>>()),
        "BYTES" => {
            // One element: a 4-byte length, then the bytes.
            use base64::Engine as _;
            let element = bytes.get(4..).unwrap_or_default();
            let encoded = base64::engine::general_purpose::STANDARD.encode(element);
            return Ok((json!([encoded]), Some(json!({ "content_encoding": "base64" }))));
        }
        other => return Err(Status::internal(format!("output datatype {other} has no JSON form"))),
    };
    Ok((data, None))
}
