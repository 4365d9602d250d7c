//! A plugin that misbehaves on request, for the host's failure tests. Its file name
//! (`libexplaind_testplugin_*`) keeps it out of the bundled plugins the daemon loads by default.
//!
//! `mode` selects the behaviour:
//! - `echo`: attributions = the input, for every target (a result the tests can predict), and
//!   `info["waiting"]` = how many `wait` calls are still running;
//! - `panic`: panics inside `explain`;
//! - `error`: returns INVALID_ARGUMENT naming `parameters.mode`;
//! - `wait`: checks for cancellation every 5 ms until the host says stop (at most 60 s);
//! - `alias`: asks the SDK for the same result slice twice (the SDK must refuse the second);
//! - `estimate_panic`: panics inside `estimate` (ABI 1.3);
//! - `estimate_error`: `estimate` returns INVALID_ARGUMENT naming `parameters.mode`;
//! - `expensive`: `estimate` says the call costs infinitely many model rows and bytes, driven by
//!   `mode` (the host must refuse it without calling `explain`, which would echo);
//! - `overspend`: `estimate` says the call costs nothing, then `explain` runs the inputs
//!   through the model again and again (at most 10000 times) until the host's row budget
//!   refuses a call, and returns that error.
//!
//! Every other mode's estimate is honest: no model rows and no scratch memory.

use explaind_plugin_sdk::{
    Context, Cost, Error, Explainer, ParamDefault, ParamKind, ParamValue, PluginInfo, Request, export_plugin,
};
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Misbehaving;

/// `wait` calls in progress, so tests can see that cancelled work really stopped.
static WAITING: AtomicUsize = AtomicUsize::new(0);

struct Waiting;
impl Waiting {
    fn enter() -> Self {
        WAITING.fetch_add(1, Ordering::SeqCst);
        Waiting
    }
}
impl Drop for Waiting {
    fn drop(&mut self) {
        WAITING.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Explainer for Misbehaving {
    fn info() -> PluginInfo {
        PluginInfo::new("misbehaving", env!("CARGO_PKG_VERSION"))
            .description(
                "Test plugin: echo, panic, error, wait, alias, estimate_panic, estimate_error, expensive or \
                 overspend, chosen by `mode`.",
            )
            .reentrant()
            .param(
                "mode",
                ParamKind::Text,
                ParamDefault::Text("echo".into()),
                "echo, panic, error, wait, alias, estimate_panic, estimate_error, expensive or overspend",
            )
            .max_len(32)
    }

    fn create() -> Result<Self, Error> {
        Ok(Misbehaving)
    }

    fn estimate(&self, request: &Request<'_>) -> Result<Cost, Error> {
        match mode(request) {
            "estimate_panic" => panic!("misbehaving plugin panics in estimate on purpose"),
            "estimate_error" => Err(Error::invalid_argument("parameters.mode: asked to fail in estimate")),
            "expensive" => Ok(Cost::new(f64::INFINITY, f64::INFINITY).driven_by("mode")),
            // `overspend` lies on purpose; the rest run no model and keep nothing.
            _ => Ok(Cost::nothing()),
        }
    }

    fn explain(&self, ctx: &Context<'_>, request: &Request<'_>) -> Result<(), Error> {
        match mode(request) {
            "echo" | "expensive" => {
                let input = request.inputs()[0];
                let out = ctx.attributions(0)?;
                let (t, len) = (request.num_targets(), input.row_len());
                for n in 0..request.batch_size() {
                    for k in 0..t {
                        out[(n * t + k) * len..(n * t + k + 1) * len].copy_from_slice(input.row(n));
                    }
                }
                ctx.info("waiting", &WAITING.load(Ordering::SeqCst).to_string())
            }
            "panic" => panic!("misbehaving plugin panics on purpose"),
            "error" => Err(Error::invalid_argument("parameters.mode: asked to fail")),
            "alias" => {
                let first = ctx.attributions(0)?;
                let second = ctx.attributions(0)?;
                // Unreachable when the SDK is right: two live `&mut` to one tensor.
                first[0] = 1.0;
                second[0] = 2.0;
                Ok(())
            }
            "wait" => {
                let _waiting = Waiting::enter();
                let began = std::time::Instant::now();
                while began.elapsed() < std::time::Duration::from_secs(60) {
                    ctx.check_cancelled()?;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(Error::internal("waited 60 s without being cancelled"))
            }
            "overspend" => {
                for _ in 0..10_000 {
                    ctx.check_cancelled()?;
                    ctx.forward(request.inputs())?;
                }
                Err(Error::internal("ran the inputs 10000 times without the host's budget refusing"))
            }
            other => Err(Error::invalid_argument(format!("parameters.mode: unknown mode {other:?}"))),
        }
    }
}

fn mode<'a>(request: &Request<'a>) -> &'a str {
    match request.param("mode") {
        ParamValue::Text(t) => t,
        _ => "echo",
    }
}

export_plugin!(Misbehaving);

#[cfg(test)]
mod tests {
    use explaind_plugin_sdk::testing::{FakeRequest, Value};

    #[test]
    fn estimates_are_honest_except_where_the_mode_says_otherwise() {
        let plugin = explaind_plugin_sdk::plugin_under_test!();
        plugin.assert_every_parameter_is_bounded();
        let with = |mode: &str| FakeRequest::zeros(&[2, 3], 1).param("mode", Value::Text(mode.into()));
        for mode in ["echo", "wait", "error", "alias", "panic", "overspend"] {
            let cost = plugin.estimate(&with(mode)).unwrap();
            assert_eq!((cost.model_rows, cost.scratch_bytes, cost.driver), (0.0, 0.0, None), "{mode}");
        }
        let cost = plugin.estimate(&with("expensive")).unwrap();
        assert_eq!((cost.model_rows, cost.scratch_bytes), (f64::INFINITY, f64::INFINITY));
        assert_eq!(cost.driver.as_deref(), Some("mode"));
        let err = plugin.estimate(&with("estimate_error")).unwrap_err();
        assert_eq!(err.code, explaind_plugin_sdk::EXD_INVALID_ARGUMENT);
        assert!(err.message.starts_with("parameters.mode:"));
    }

    #[test]
    fn a_panic_in_estimate_reaches_the_host_as_plugin_panicked() {
        // Its own plugin instance: the panic poisons it.
        let plugin = explaind_plugin_sdk::plugin_under_test!();
        let err =
            plugin.estimate(&FakeRequest::zeros(&[2, 3], 1).param("mode", Value::Text("estimate_panic".into()))).unwrap_err();
        assert_eq!(err.code, explaind_plugin_sdk::abi::EXD_PLUGIN_PANICKED);
        assert!(err.message.contains("panics in estimate on purpose"), "{}", err.message);
    }
}
