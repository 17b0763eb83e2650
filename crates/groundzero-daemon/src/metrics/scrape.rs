//! `GET /metrics`: a [`SnapshotProvider`] read at scrape time, one read at a time and cached
//! briefly, encoded as OpenMetrics text.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};

use groundzero::error::Error;

use super::{
    encode::{encode, CONTENT_TYPE},
    snapshot::MetricsSnapshot,
};

/// Reads the BPF maps (and whatever else the owner of the [`Shield`] knows) at scrape time. Called
/// on a blocking thread, once per scrape.
pub type SnapshotProvider = Arc<dyn Fn() -> Result<MetricsSnapshot, Error> + Send + Sync>;

/// How long one scrape's result answers later scrapes, unless the owner says otherwise
/// ([`router_with_cache`]).
pub const DEFAULT_CACHE_FOR: Duration = Duration::from_secs(1);

/// `GET /metrics`: reads a snapshot from `provider` (on a blocking thread: it makes syscalls and
/// may wait for a lock) and returns it in the OpenMetrics text format. A failed read is a 500
/// with the error, so Prometheus marks the scrape as failed rather than recording zeros.
/// Results are reused for [`DEFAULT_CACHE_FOR`] (see [`router_with_cache`]).
pub fn router(provider: SnapshotProvider) -> Router {
    router_with_cache(provider, DEFAULT_CACHE_FOR)
}

/// [`router`], with results (failures too) reused for `cache_for` after each read. Reads run
/// one at a time: scrapes that come while one runs wait for it and share its result. So however
/// many clients scrape, the maps are read at most once per `cache_for` plus one read's time: the
/// endpoint is unauthenticated, and reading a million entries takes about a second.
pub fn router_with_cache(provider: SnapshotProvider, cache_for: Duration) -> Router {
    let scraper = Arc::new(Scraper {
        provider,
        cache_for,
        last: tokio::sync::Mutex::new(None),
    });
    Router::new().route(
        "/metrics",
        get(move || {
            let scraper = scraper.clone();
            async move { respond(scraper.scrape().await) }
        }),
    )
}

/// The encoded text, or what went wrong.
pub(super) type Scraped = Result<Bytes, String>;

/// Single flight and a short cache around a [`SnapshotProvider`].
pub(super) struct Scraper {
    pub(super) provider: SnapshotProvider,
    pub(super) cache_for: Duration,
    /// When the last read finished, and its result. The lock is held through a read: that is
    /// what makes scrapes wait for the one in progress.
    pub(super) last: tokio::sync::Mutex<Option<(Instant, Scraped)>>,
}

impl Scraper {
    pub(super) async fn scrape(self: Arc<Self>) -> Scraped {
        // In a task of its own: a client that hangs up (or times out) mid-read drops only its
        // wait, not the lock holder, so the next scraper shares the read still running on the
        // blocking thread instead of starting a second one beside it.
        match tokio::spawn(async move { self.fresh().await }).await {
            Ok(scraped) => scraped,
            Err(join) => Err(format!("the scrape task failed: {join}")),
        }
    }

    async fn fresh(&self) -> Scraped {
        let mut last = self.last.lock().await;
        if let Some((at, scraped)) = &*last {
            if at.elapsed() < self.cache_for {
                return scraped.clone();
            }
        }
        let provider = self.provider.clone();
        // Encoding is CPU work in proportion to the snapshot: on the blocking thread as well.
        let scraped = match tokio::task::spawn_blocking(move || {
            provider().map(|snapshot| Bytes::from(encode(&snapshot)))
        })
        .await
        {
            Ok(Ok(text)) => Ok(text),
            Ok(Err(error)) => {
                let message = groundzero::error::error_chain(&error);
                log::warn!("metrics scrape failed: {message}");
                Err(format!("reading metrics failed: {message}"))
            }
            Err(join) => {
                log::error!("metrics snapshot panicked: {join}");
                Err("reading metrics panicked".to_string())
            }
        };
        // Measured from the end of the read: under a stream of scrapes, the maps rest at least
        // `cache_for` between reads however long a read takes.
        *last = Some((Instant::now(), scraped.clone()));
        scraped
    }
}

fn respond(scraped: Scraped) -> Response {
    match scraped {
        Ok(text) => (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(message) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{message}\n")).into_response(),
    }
}

/// Serves [`router`] on `listener` with the daemon's listener limits
/// ([`crate::serve::Limits`]) until the future is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    provider: SnapshotProvider,
) -> std::io::Result<()> {
    crate::serve::serve(
        "metrics",
        listener,
        router(provider),
        crate::serve::Limits::default(),
        std::future::pending(),
    )
    .await;
    Ok(())
}
