//! A client for the daemon's management API, over its Unix socket or over TCP with a token.
//! Every endpoint has a method returning its typed reply; [`Client::call`] is the raw
//! exchange (any path, JSON in and out) for callers that want the answer as it came.

use std::{path::PathBuf, time::Duration};

use http_body_util::{BodyExt, Full};
/// The HTTP method of [`Client::call`] (hyper's).
pub use hyper::Method;
use hyper::{body::Bytes, header, Request, StatusCode};
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

use crate::{
    capture::CaptureQuery,
    crowdsec::CrowdsecReply,
    endpoints,
    feeds::{FeedsReply, ImportReply, ImportRequest, RefreshReply},
    guard::GuardReply,
    journey::{JourneySummary, RecentQuery, RecentReply, TracingReply, TracingRequest},
    lists::{
        AddReply, AddRequest, EntriesQuery, EntriesReply, RemoveReply, RemoveRequest, Side,
        WhyReply,
    },
    status::{HealthReply, MonitorReply, MonitorRequest, StatsReply},
    ErrorBody,
};

/// Where the daemon listens.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// Its Unix socket (root only).
    Unix(PathBuf),
    /// `host:port`, with the bearer token.
    Tcp {
        /// `host:port`.
        address: String,
        /// The bearer token (`api.token_file`).
        token: String,
    },
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
            Endpoint::Tcp { address, .. } => write!(f, "http://{address}"),
        }
    }
}

/// What went wrong talking to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers at the endpoint.
    #[error("cannot reach the groundzero daemon at {endpoint}: {source} (is `groundzero run` running? use --socket or --api to point elsewhere)")]
    Connect {
        /// Where we tried.
        endpoint: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The daemon answered with an error status and message.
    #[error("{message} (HTTP {status})")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The daemon's message (`{"error": ...}`).
        message: String,
    },
    /// The exchange failed, or the answer is not what the API says it is.
    #[error("talking to the daemon at {endpoint}: {message}")]
    Protocol {
        /// Where.
        endpoint: String,
        /// What happened.
        message: String,
    },
}

/// A client of one daemon. Cheap to clone; every call opens its own connection.
#[derive(Clone, Debug)]
pub struct Client {
    endpoint: Endpoint,
}

/// What `POST /v1/block` answered, in short (see [`Client::block`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockOutcome {
    /// Entries that were not on the blocklist before.
    pub added: u64,
    /// Distinct entries in the request.
    pub entries: u64,
    /// Entries now held by the caller (added or already on the list).
    pub applied: u64,
    /// Entries the lockout guard refused, with why; the rest of the request was applied.
    pub refused: Vec<(IpNet, String)>,
    /// When the hold expires (Unix seconds), if it has a TTL.
    pub expires: Option<u64>,
}

impl From<AddReply> for BlockOutcome {
    fn from(reply: AddReply) -> Self {
        BlockOutcome {
            added: reply.added,
            entries: reply.entries,
            applied: reply.applied,
            refused: reply
                .refusals()
                .map(|(entry, why)| (entry, why.to_string()))
                .collect(),
            expires: reply.expires,
        }
    }
}

impl Client {
    /// A client of the daemon at `endpoint`.
    pub fn new(endpoint: Endpoint) -> Self {
        Self { endpoint }
    }

    /// Where the daemon is.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn protocol(&self, message: String) -> ClientError {
        ClientError::Protocol {
            endpoint: self.endpoint.to_string(),
            message,
        }
    }

    /// Sends one request and returns the status and the body.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let response = self.send(method, path, body).await?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.protocol(e.to_string()))?
            .to_bytes();
        Ok((status, body))
    }

    /// Sends one request; the response with its body still to read.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let connect = |source| ClientError::Connect {
            endpoint: self.endpoint.to_string(),
            source,
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "groundzero")
            .header(header::CONTENT_TYPE, "application/json");
        let mut sender = match &self.endpoint {
            Endpoint::Unix(socket) => {
                let stream = tokio::net::UnixStream::connect(socket)
                    .await
                    .map_err(connect)?;
                handshake(stream)
                    .await
                    .map_err(|e| self.protocol(e.to_string()))?
            }
            Endpoint::Tcp { address, token } => {
                builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
                let stream = tokio::net::TcpStream::connect(address)
                    .await
                    .map_err(connect)?;
                handshake(stream)
                    .await
                    .map_err(|e| self.protocol(e.to_string()))?
            }
        };
        let request = builder
            .body(Full::new(body))
            .map_err(|e| self.protocol(e.to_string()))?;
        sender
            .send_request(request)
            .await
            .map_err(|e| self.protocol(e.to_string()))
    }

    /// `GET /v1/capture`: hands each piece of the pcapng stream to `sink` as it arrives, until
    /// the daemon ends the capture; returns the bytes received. A `sink` error ends the
    /// capture (the connection closes, and the daemon stops).
    pub async fn capture(
        &self,
        query: &CaptureQuery,
        mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<u64, ClientError> {
        let response = self.send(Method::GET, &query.path(), Bytes::new()).await?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let bytes = body
                .collect()
                .await
                .map_err(|e| self.protocol(e.to_string()))?
                .to_bytes();
            return Err(self.api_error(status, &bytes));
        }
        let mut total = 0;
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|e| self.protocol(format!("the capture stream broke: {e}")))?;
            if let Ok(data) = frame.into_data() {
                sink(&data).map_err(|e| self.protocol(format!("writing the capture: {e}")))?;
                total += data.len() as u64;
            }
        }
        Ok(total)
    }

    /// An error status's body as [`ClientError::Api`] (the body must be JSON, as every reply).
    fn api_error(&self, status: StatusCode, body: &[u8]) -> ClientError {
        match serde_json::from_slice::<Value>(body) {
            Err(e) => self.not_json(&e, body),
            Ok(value) => ClientError::Api {
                status: status.as_u16(),
                message: serde_json::from_value::<ErrorBody>(value)
                    .map(|b| b.error)
                    .unwrap_or_else(|_| "no message".into()),
            },
        }
    }

    fn not_json(&self, e: &serde_json::Error, body: &[u8]) -> ClientError {
        self.protocol(format!(
            "the answer is not JSON ({e}): {}",
            String::from_utf8_lossy(body)
        ))
    }

    /// Sends one request with any JSON body and returns the answer as it came; a non-2xx
    /// answer becomes [`ClientError::Api`] with the daemon's message.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let bytes = body.map(crate::to_json).unwrap_or_default();
        let (status, body) = self.exchange(method, path, Bytes::from(bytes)).await?;
        if !status.is_success() {
            return Err(self.api_error(status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| self.not_json(&e, &body))
    }

    /// Sends one typed request and reads the typed reply. A reply that does not match its
    /// type is a [`ClientError::Protocol`] naming what differs (a daemon of another version).
    pub async fn request<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let bytes = body.map(crate::to_json).unwrap_or_default();
        let (status, body) = self.exchange(method, path, Bytes::from(bytes)).await?;
        if !status.is_success() {
            return Err(self.api_error(status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| {
            self.protocol(format!(
                "the answer to {path} is not what the API says ({e}): {}",
                String::from_utf8_lossy(&body)
            ))
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.request::<(), T>(Method::GET, path, None).await
    }

    /// `GET /v1/health`: succeeds if a daemon answers.
    pub async fn health(&self) -> Result<HealthReply, ClientError> {
        self.get(endpoints::HEALTH).await
    }

    /// `GET /v1/stats`: counters, attachments, list sizes.
    pub async fn stats(&self) -> Result<StatsReply, ClientError> {
        self.get(endpoints::STATS).await
    }

    /// `GET /v1/entries`: entries with their holders and hits.
    pub async fn entries(&self, query: &EntriesQuery) -> Result<EntriesReply, ClientError> {
        self.get(&query.path()).await
    }

    /// `POST /v1/block` or `/v1/allow`. When the guard refuses every entry the daemon
    /// answers 409, which is a [`ClientError::Api`].
    pub async fn add(&self, list: Side, request: &AddRequest) -> Result<AddReply, ClientError> {
        let path = match list {
            Side::Block => endpoints::BLOCK,
            Side::Allow => endpoints::ALLOW,
        };
        self.request(Method::POST, path, Some(request)).await
    }

    /// `POST /v1/unblock` or `/v1/unallow`.
    pub async fn remove(
        &self,
        list: Side,
        request: &RemoveRequest,
    ) -> Result<RemoveReply, ClientError> {
        let path = match list {
            Side::Block => endpoints::UNBLOCK,
            Side::Allow => endpoints::UNALLOW,
        };
        self.request(Method::POST, path, Some(request)).await
    }

    /// `GET /v1/why/{address}`. `address` is sent as given: the daemon says what is wrong
    /// with it.
    pub async fn why(&self, address: &str) -> Result<WhyReply, ClientError> {
        self.get(&endpoints::why(address)).await
    }

    /// `GET /v1/guard`.
    pub async fn guard(&self) -> Result<GuardReply, ClientError> {
        self.get(endpoints::GUARD).await
    }

    /// `PUT /v1/monitor`.
    pub async fn set_monitor(&self, enabled: bool) -> Result<MonitorReply, ClientError> {
        let body = MonitorRequest { enabled };
        self.request(Method::PUT, endpoints::MONITOR, Some(&body))
            .await
    }

    /// `POST /v1/import`.
    pub async fn import(&self, request: &ImportRequest) -> Result<ImportReply, ClientError> {
        self.request(Method::POST, endpoints::IMPORT, Some(request))
            .await
    }

    /// `GET /v1/feeds`.
    pub async fn feeds(&self) -> Result<FeedsReply, ClientError> {
        self.get(endpoints::FEEDS).await
    }

    /// `GET /v1/crowdsec`: the CrowdSec bouncer's state.
    pub async fn crowdsec(&self) -> Result<CrowdsecReply, ClientError> {
        self.get(endpoints::CROWDSEC).await
    }

    /// `POST /v1/feeds/{name}/refresh`.
    pub async fn refresh_feed(&self, name: &str) -> Result<RefreshReply, ClientError> {
        let path = endpoints::feed_refresh(name);
        self.request::<(), _>(Method::POST, &path, None).await
    }

    /// `GET /v1/journey`.
    pub async fn journey(&self) -> Result<JourneySummary, ClientError> {
        self.get(endpoints::JOURNEY).await
    }

    /// `GET /v1/journey/recent`.
    pub async fn journey_recent(&self, query: &RecentQuery) -> Result<RecentReply, ClientError> {
        self.get(&query.path()).await
    }

    /// `PUT /v1/journey`: tracing on or off, sampling.
    pub async fn configure_journey(
        &self,
        request: &TracingRequest,
    ) -> Result<TracingReply, ClientError> {
        self.request(Method::PUT, endpoints::JOURNEY, Some(request))
            .await
    }

    /// Blocks `entries`, held by `source` (`api`, `manual`, `auto-ban` or `app:<name>`) with a
    /// reason and an optional time to live (whole seconds, at least 1): `POST /v1/block`.
    /// Blocking an entry again with the same source replaces that source's reason and TTL.
    /// Entries the daemon's lockout guard refuses are listed in the outcome; the others are
    /// applied (one protected address in a batch does not save the rest of it).
    pub async fn block(
        &self,
        entries: &[IpNet],
        source: &str,
        reason: &str,
        ttl: Option<Duration>,
    ) -> Result<BlockOutcome, ClientError> {
        let request = AddRequest {
            entries: entries.iter().map(ToString::to_string).collect(),
            reason: Some(reason.to_string()),
            ttl: ttl.map(|ttl| format!("{}s", ttl.as_secs().max(1))),
            source: Some(source.to_string()),
            ..AddRequest::default()
        };
        self.add(Side::Block, &request).await.map(Into::into)
    }

    /// Blocklist entries held by `source` (exactly, or by prefix: `feed` matches every
    /// `feed:<name>`): `GET /v1/entries?list=block&source=...`.
    pub async fn blocked_by(&self, source: &str) -> Result<Vec<IpNet>, ClientError> {
        let query = EntriesQuery {
            list: Some(Side::Block),
            source: Some(source.to_string()),
            limit: 100_000,
        };
        Ok(self
            .entries(&query)
            .await?
            .entries
            .into_iter()
            .map(|e| e.entry)
            .collect())
    }
}

async fn handshake<S>(
    stream: S,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}
