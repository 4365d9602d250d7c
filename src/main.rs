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

/// How long a shutdown waits for requests in flight.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

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
    if let (Some(metrics_listen), Some(handle)) = (&config.server.metrics_listen, metrics) {
        let metrics =
            tokio::net::TcpListener::bind(metrics_listen).await.map_err(|e| format!("--metrics-listen {metrics_listen}: {e}"))?;
        println!("explaind metrics on http://{}/metrics", metrics.local_addr().map_err(|e| e.to_string())?);
        tokio::spawn(explaind::server::serve_metrics(metrics, handle));
    }
    std::io::stdout().flush().ok();
    tracing::info!(%addr, "serving");
    // On SIGINT: stop accepting, give requests in flight (and idle client connections) a grace
    // period, then stop regardless; the audit log is closed properly either way.
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
        let _ = stopping.send(());
    };
    let grace = async move {
        if stopped.await.is_ok() {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let served = tokio::select! {
        served = explaind::server::serve(listener, state, tls, shutdown) => served.map_err(|e| e.to_string()),
        _ = grace => {
            tracing::warn!("connections still open {} s after the shutdown signal; stopping anyway", SHUTDOWN_GRACE.as_secs());
            Ok(())
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
