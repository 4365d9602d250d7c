//! Property tests ("fuzzing") of request decoding and parameter validation: whatever bytes or
//! values a client sends, the answer is a status that names a field, never a panic, never
//! INTERNAL, and never an OK that carries a NaN or an infinity.
//!
//! Bounded for CI: a fixed number of cases per property (`PROPTEST_CASES` raises it for a longer
//! local run). The corpus is two-fold and committed: `HOSTILE_PAYLOADS` below (hand-made byte
//! strings that once broke decoders: truncations, huge length prefixes, wrong wire types), and
//! proptest's own regression file beside this one, which keeps the seed of any failing case
//! and replays it first.

mod common;

use common::*;
use explaind::convert;
use explaind::proto;
use proptest::prelude::*;
use prost::Message;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use tonic::Code;

/// Hand-made payloads: each is decoded as every request message.
const HOSTILE_PAYLOADS: &[&[u8]] = &[
    b"",
    b"\x0a",                                         // field 1, length-delimited, no length
    b"\x0a\xff\xff\xff\xff\x0f",                     // a 4 GiB length prefix
    b"\x0a\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", // an 11-byte varint
    b"\x12\x05abc",                                  // a string shorter than its length
    b"\x1a\x02\x0a\x00\x12\x00",                     // nested tensors with nothing in them
    b"\x08\x01",                                     // a varint where a message is declared
    b"\xff\xff\xff\xff",                             // field number 0x1fffffff with a bad wire type
    b"\x0b\x0c",                                     // deprecated groups
    b"\x22\x08\x0a\x02\x08\x03\x12\x02\x08\x03",     // nested length mismatch
];

fn repository() -> &'static explaind_runtime::ModelRepository {
    static REPOSITORY: OnceLock<explaind_runtime::ModelRepository> = OnceLock::new();
    REPOSITORY.get_or_init(|| {
        let repository = explaind_runtime::ModelRepository::new(repo_root().join("models"), runtime());
        repository.load_all().expect("the bundled models load");
        repository
    })
}

/// Runs every validation the service runs before an explainer is called; returns the first
/// refusal. Panics (the property's failure) are what this must never do.
fn validate(request: &proto::ExplainRequest) -> Result<(), tonic::Status> {
    for name in ["wine-mlp", "digits-cnn"] {
        let model = repository().get(name, "").expect("bundled model");
        convert::bind_inputs(&model, &request.inputs, "inputs", 4096)?;
        convert::bind_inputs(&model, &request.background, "background", 4096).ok();
    }
    convert::targets(request.targets.as_ref())?;
    convert::params(&request.parameters)?;
    Ok(())
}

/// A refusal must name what it refuses: a field path before a colon.
fn assert_names_a_field(status: &tonic::Status) {
    assert!(!matches!(status.code(), Code::Internal | Code::Unknown | Code::Ok), "{status:?}");
    let field = status.message().split(':').next().unwrap_or("");
    assert!(!field.is_empty() && !field.contains(' ') || status.message().starts_with("model "), "no field named: {status:?}");
}

#[test]
fn hostile_payloads_decode_or_fail_cleanly() {
    for payload in HOSTILE_PAYLOADS {
        if let Ok(request) = proto::ExplainRequest::decode(*payload)
            && let Err(status) = validate(&request)
        {
            assert_names_a_field(&status);
        }
        let _ = proto::PredictRequest::decode(*payload);
        let _ = proto::RegisterBackgroundRequest::decode(*payload);
    }
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(1000), source_file: Some(file!()), ..ProptestConfig::default() })]

    /// Arbitrary bytes: decoding never panics, and what decodes is validated without panics.
    #[test]
    fn arbitrary_bytes_never_panic_the_decoder_or_the_validation(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(request) = proto::ExplainRequest::decode(bytes.as_slice())
            && let Err(status) = validate(&request) {
                assert_names_a_field(&status);
            }
    }

    /// Tensors with arbitrary element types, shapes (negative, huge, overflowing) and byte
    /// lengths are refused naming the field, never with a panic or an overflow.
    #[test]
    fn arbitrary_tensors_are_refused_naming_the_field(
        element_type in prop_oneof![Just(1i32), -3i32..20],
        shape in proptest::collection::vec(prop_oneof![-2i64..40, Just(i64::MAX), Just(1i64 << 40), Just(-1i64 << 62)], 0..6),
        data in proptest::collection::vec(any::<u8>(), 0..64),
        name in prop_oneof![Just(String::new()), Just("features".to_string()), "[a-z]{0,6}"],
    ) {
        let tensor = proto::Tensor { element_type, shape, data, ..Default::default() };
        let request = proto::ExplainRequest {
            inputs: vec![proto::NamedTensor { name, tensor: Some(tensor) }],
            ..Default::default()
        };
        if let Err(status) = validate(&request) {
            assert_names_a_field(&status);
        }
    }
}

// ----- Parameters, through the real daemon -----------------------------------------------------

/// Values a hostile client tries for a parameter of any kind.
fn hostile_value() -> impl Strategy<Value = proto::ParamValue> {
    use proto::param_value::Kind;
    let number = prop_oneof![
        Just(0.0),
        Just(-1.0),
        Just(1e-300),
        Just(3e38),
        Just(1e300),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(-f64::MAX),
        -1e3f64..1e3,
    ];
    let integer =
        prop_oneof![Just(0i64), Just(-1), Just(1 << 62), Just(i64::MAX), Just(i64::MIN), Just(1_000_000_000_000), -5i64..100,];
    prop_oneof![
        number.clone().prop_map(Kind::Number),
        integer.clone().prop_map(Kind::Integer),
        any::<bool>().prop_map(Kind::Flag),
        prop_oneof![Just("\0".to_string()), Just("x".repeat(100_000)), "[a-z_]{0,12}"].prop_map(Kind::Text),
        proptest::collection::vec(number, 0..8).prop_map(|values| Kind::Numbers(proto::NumberList { values })),
        proptest::collection::vec(integer, 0..8).prop_map(|values| Kind::Integers(proto::IntegerList { values })),
    ]
    .prop_map(|kind| proto::ParamValue { kind: Some(kind) })
}

/// An explainer, and values for some of its parameters (and sometimes a name it does not take).
fn hostile_parameters(
    explainers: Arc<Vec<proto::ExplainerInfo>>,
) -> impl Strategy<Value = (String, HashMap<String, proto::ParamValue>)> {
    (0..explainers.len()).prop_flat_map(move |i| {
        let info = explainers[i].clone();
        let mut names: Vec<String> = info.parameters.iter().map(|p| p.name.clone()).collect();
        names.push("no_such_parameter".into());
        let entries = proptest::collection::vec((proptest::sample::select(names), hostile_value()), 0..4);
        (Just(info.name.clone()), entries.prop_map(|e| e.into_iter().collect()))
    })
}

#[test]
fn hostile_parameters_get_a_status_naming_them_and_ok_answers_are_finite() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // A small budget keeps every accepted case short; the properties are about the answers.
    let limits = explaind::service::Limits {
        budget: explaind_host::RequestBudget { model_rows: 200_000, scratch_bytes: 256 << 20 },
        ..Default::default()
    };
    let server = runtime.block_on(TestServer::start(limits, &[]));
    let client = runtime.block_on(server.explainer());
    let explainers = runtime
        .block_on(client.clone().list_explainers(proto::ListExplainersRequest::default()))
        .unwrap()
        .into_inner()
        .explainers;
    let explainers = Arc::new(explainers);
    let listed = explainers.clone();
    let x = read_npy("models/wine-mlp/1/samples.npy").slice_axis(ndarray::Axis(0), (0..2).into()).to_owned();

    let config = ProptestConfig { cases: cases(96), source_file: Some(file!()), ..ProptestConfig::default() };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    // Both kinds of answer must occur, or the property says nothing about one of them.
    let (answered, refused) = (std::sync::atomic::AtomicUsize::new(0), std::sync::atomic::AtomicUsize::new(0));
    runner
        .run(&hostile_parameters(listed), |(explainer, parameters)| {
            let mut request = tonic::Request::new(proto::ExplainRequest {
                model: model("wine-mlp"),
                explainer: explainer.clone(),
                inputs: vec![named("features", &x)],
                parameters: parameters.clone(),
                ..Default::default()
            });
            request.set_timeout(std::time::Duration::from_secs(5));
            // tonic clients are cheap clones of one channel; the runner's closure is `Fn`.
            match runtime.block_on(client.clone().explain(request)) {
                Ok(response) => {
                    answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let response = response.into_inner();
                    let tensors = response
                        .attributions
                        .iter()
                        .filter_map(|a| a.values.as_ref())
                        .chain(response.base_values.as_ref())
                        .chain(response.extras.iter().filter_map(|e| e.tensor.as_ref()));
                    for t in tensors {
                        prop_assert!(
                            floats(t).iter().all(|v| v.is_finite()),
                            "{explainer} {parameters:?}: OK with a non-finite value"
                        );
                    }
                }
                Err(status) => {
                    refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    prop_assert!(
                        !matches!(status.code(), Code::Internal | Code::Unknown | Code::Unavailable),
                        "{explainer} {parameters:?}: {status:?}"
                    );
                    // A refusal of a parameter names one the request gave, or a required one it
                    // left out; budget and deadline refusals may name the inputs instead.
                    if status.code() == Code::InvalidArgument && status.message().starts_with("parameters.") {
                        let info = explainers.iter().find(|e| e.name == explainer).expect("listed");
                        let declared = info.parameters.iter().map(|p| &p.name);
                        let named = parameters.keys().chain(declared).any(|k| {
                            let prefix = format!("parameters.{k}");
                            status.message().starts_with(&prefix) && status.message()[prefix.len()..].starts_with([':', '['])
                        });
                        prop_assert!(named, "{explainer} {parameters:?}: {}", status.message());
                    }
                }
            }
            Ok(())
        })
        .unwrap();
    let (answered, refused) = (answered.into_inner(), refused.into_inner());
    assert!(answered > 0 && refused > 0, "{answered} answered, {refused} refused: the cases miss one kind");
}
