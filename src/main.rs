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

async fn serve(args: explaind::cli::ServeArgs) -> Result<(), String> {
    let config = explaind::config::Config::resolve(&args)?;
    let tls = explaind::server::tls_config(&config)?;
    let state = explaind::server::build_state(&config)?;
    let listen = &config.server.listen;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("--listen {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    // Scripts and tests wait for this exact line on stdout.
    println!("explaind listening on {addr}");
    std::io::stdout().flush().ok();
    tracing::info!(%addr, "serving");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    };
    explaind::server::serve(listener, state, tls, shutdown).await.map_err(|e| e.to_string())
}
