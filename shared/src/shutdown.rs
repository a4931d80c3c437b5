//! The shutdown signal of a service binary.

/// Resolves on SIGTERM (what Kubernetes sends) or SIGINT (Ctrl-C).
/// `serve_with_shutdown(ctrl_c())` alone would ignore SIGTERM.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut terminate) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Like [`signal`], and arms a second one: while the service drains, another
/// SIGTERM or SIGINT exits the process at once.
pub async fn signal_then_force() {
    signal().await;
    tokio::spawn(async {
        signal().await;
        tracing::warn!("second signal received, exiting at once");
        std::process::exit(130);
    });
}
