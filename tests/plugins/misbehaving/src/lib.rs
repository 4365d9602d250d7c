//! A plugin that misbehaves on request, for the host's failure tests. Its file name
//! (`libexplaind_testplugin_*`) keeps it out of the bundled plugins the daemon loads by default.
//!
//! `mode` selects the behaviour:
//! - `echo`: attributions = the input, for every target (a result the tests can predict), and
//!   `info["waiting"]` = how many `wait` calls are still running;
//! - `panic`: panics inside `explain`;
//! - `error`: returns INVALID_ARGUMENT naming `parameters.mode`;
//! - `wait`: checks for cancellation every 5 ms until the host says stop (at most 60 s);
//! - `alias`: asks the SDK for the same result slice twice (the SDK must refuse the second).

use std::sync::atomic::{AtomicUsize, Ordering};
use explaind_plugin_sdk::{Context, Error, Explainer, ParamDefault, ParamKind, ParamValue, PluginInfo, Request, export_plugin};

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
            .description("Test plugin: echo, panic, error, wait or alias, chosen by `mode`.")
            .reentrant()
            .param("mode", ParamKind::Text, ParamDefault::Text("echo".into()), "echo, panic, error, wait or alias")
    }

    fn create() -> Result<Self, Error> {
        Ok(Misbehaving)
    }

    fn explain(&self, ctx: &Context<'_>, request: &Request<'_>) -> Result<(), Error> {
        let mode = match request.param("mode") {
            ParamValue::Text(t) => t,
            _ => "echo",
        };
        match mode {
            "echo" => {
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
            other => Err(Error::invalid_argument(format!("parameters.mode: unknown mode {other:?}"))),
        }
    }
}

export_plugin!(Misbehaving);
