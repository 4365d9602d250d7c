use clap::Parser;
use explaind::cli::{Cli, Command};
use std::io::Write;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EXPLAIND_LOG")
                // ONNX Runtime's own INFO lines flood the log; keep them at warn.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,ort=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Audit(command) => explaind::cli::run_audit(command),
        client => runtime.block_on(explaind::cli::run_client(client)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("explaind: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The signals that drain the daemon: what systemd and Kubernetes send on every stop
/// (SIGTERM), Ctrl-C (SIGINT), and SIGQUIT. The first starts the drain; a second stops at once.
struct StopSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> Result<Self, String> {
        use tokio::signal::unix::{SignalKind, signal};
        let install = |kind: SignalKind| signal(kind).map_err(|e| format!("installing a signal handler: {e}"));
        Ok(StopSignals {
            terminate: install(SignalKind::terminate())?,
            interrupt: install(SignalKind::interrupt())?,
            quit: install(SignalKind::quit())?,
        })
    }

    /// The name of the next signal that arrives.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.quit.recv() => "SIGQUIT",
        }
    }
}

async fn serve(args: explaind::cli::ServeArgs) -> Result<(), String> {
    let config = explaind::config::Config::resolve(&args)?;
    let tls = explaind::server::tls_config(&config)?;
    // Before anything records a metric.
    let metrics = config.server.metrics_listen.as_ref().map(|_| explaind::server::install_metrics_recorder()).transpose()?;
    let (state, audit) = explaind::server::build_state(&config)?;
    let listen = &config.server.listen;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("--listen {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    // Scripts and tests wait for this exact line on stdout.
    println!("explaind listening on {addr}");
    let http = match &config.server.http_listen {
        None => None,
        Some(at) => {
            let http = tokio::net::TcpListener::bind(at).await.map_err(|e| format!("--http-listen {at}: {e}"))?;
            println!("explaind http on http://{}", http.local_addr().map_err(|e| e.to_string())?);
            Some(http)
        }
    };
    if let (Some(metrics_listen), Some(handle)) = (&config.server.metrics_listen, metrics) {
        let metrics =
            tokio::net::TcpListener::bind(metrics_listen).await.map_err(|e| format!("--metrics-listen {metrics_listen}: {e}"))?;
        println!("explaind metrics on http://{}/metrics", metrics.local_addr().map_err(|e| e.to_string())?);
        tokio::spawn(explaind::server::serve_metrics(metrics, handle));
    }
    std::io::stdout().flush().ok();
    tracing::info!(%addr, "serving");
    // The first signal drains: health NOT_SERVING, new requests refused, the requests in
    // flight given `drain_seconds` to finish. A second signal, or the end of that grace, stops
    // at once. The audit log is closed with its signed checkpoint either way.
    let mut signals = StopSignals::install()?;
    let grace = std::time::Duration::from_secs(config.server.drain_seconds);
    let (draining, drain) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = drain.await;
    };
    let listeners = explaind::server::Listeners { grpc: listener, http };
    let served = explaind::server::serve(listeners, state, tls, shutdown);
    tokio::pin!(served);
    let served = tokio::select! {
        served = &mut served => served.map_err(|e| e.to_string()),
        name = signals.next() => {
            tracing::info!(signal = name, grace_s = grace.as_secs(), "draining: no new requests; the ones in flight may finish");
            let _ = draining.send(());
            tokio::select! {
                served = &mut served => {
                    tracing::info!("drained");
                    served.map_err(|e| e.to_string())
                }
                _ = tokio::time::sleep(grace) => {
                    tracing::warn!("requests still in flight {} s after {name}; stopping anyway", grace.as_secs());
                    Ok(())
                }
                again = signals.next() => {
                    tracing::warn!(signal = again, "second signal: stopping at once");
                    Ok(())
                }
            }
        }
    };
    if let Some(audit) = audit {
        // Everything queued, then a final signed checkpoint.
        tokio::task::spawn_blocking(move || audit.shutdown())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("audit log: {e}"))?;
    }
    served
}
