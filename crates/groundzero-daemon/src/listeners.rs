//! The daemon's listeners: the API on TCP (bearer token, with the journey page), `/metrics`,
//! and the API on the Unix socket, bound last. Each is served by [`serve::serve`] within the
//! configured limits until the stop signal, then drained.

use std::{os::unix::fs::PermissionsExt, path::PathBuf, sync::Arc};

use tokio::task::JoinSet;

use crate::{
    config::Validated,
    error::{io, DaemonError},
    http, metrics, serve,
    state::Shared,
    stop::Stop,
    web,
};

/// Binds every configured listener and serves each in its own task of the returned set; also
/// returns the Unix socket's path (removed at shutdown). On an error nothing stays bound.
pub(crate) async fn serve_all(
    config: &Validated,
    shared: &Shared,
    stop: &Stop,
) -> Result<(JoinSet<()>, PathBuf), DaemonError> {
    let max_body = config.raw.api.max_body_bytes;
    let limits = config.listener_limits;
    let mut servers = JoinSet::new();

    if let (Some(addr), Some(token_file)) = (config.tcp_listen, &config.raw.api.token_file) {
        let token = std::fs::read_to_string(token_file)
            .map_err(io(format!(
                "reading api.token_file {}",
                token_file.display()
            )))?
            .trim()
            .to_string();
        if token.len() < 16 {
            return Err(DaemonError::Io {
                what: format!("api.token_file {}", token_file.display()),
                source: std::io::Error::other("the token must be at least 16 characters"),
            });
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(io(format!("binding {addr}")))?;
        // The journey page rides on the TCP listener; merged after the token layer, so its
        // static assets load without the token and the API it calls still needs it.
        let app =
            http::router(shared.clone(), Some(Arc::new(token)), max_body).merge(web::router());
        servers.spawn(serve::serve(
            "API on TCP",
            listener,
            app,
            limits,
            stop.clone().stopped(),
        ));
        log::info!("API and journey page on http://{addr}/ (bearer token required for the API)");
    }

    if let Some(addr) = config.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(io(format!("binding metrics.listen {addr}")))?;
        let provider: metrics::SnapshotProvider = {
            let shared = shared.clone();
            Arc::new(move || metrics::daemon_snapshot(&shared))
        };
        servers.spawn(serve::serve(
            "metrics",
            listener,
            metrics::router_with_cache(provider, config.metrics_cache),
            limits,
            stop.clone().stopped(),
        ));
        log::info!("metrics on http://{addr}/metrics");
    }

    // The Unix socket last: a daemon that answers there (what `groundzero` commands, tests and
    // scripts wait for) has every listener bound, and one that fails to bind TCP or metrics
    // never looked healthy for a moment.
    let socket = config.raw.api.socket.clone();
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    }
    // A socket left by a killed daemon is removed; one that answers belongs to a live daemon
    // (with other pin and state dirs, or the lock above would have said so) and is left alone.
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        return Err(DaemonError::Io {
            what: format!("binding {}", socket.display()),
            source: std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another daemon answers on this socket; give this one its own api.socket",
            ),
        });
    }
    let _ = std::fs::remove_file(&socket);
    let unix = tokio::net::UnixListener::bind(&socket)
        .map_err(io(format!("binding {}", socket.display())))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .map_err(io(format!("chmod {}", socket.display())))?;
    let app = http::router(shared.clone(), None, max_body);
    servers.spawn(serve::serve(
        "API on the unix socket",
        unix,
        app,
        limits,
        stop.clone().stopped(),
    ));
    log::info!("API on {}", socket.display());
    Ok((servers, socket))
}
