//! A client for the daemon's management API, over its Unix socket or over TCP with a token.

use std::{path::PathBuf, time::Duration};

use http_body_util::{BodyExt, Full};
/// The HTTP method of [`Client::call`] (hyper's).
pub use hyper::Method;
use hyper::{body::Bytes, header, Request};
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use serde_json::{json, Value};

/// Where the daemon listens.
#[derive(Clone, Debug)]
pub enum Endpoint {
    Unix(PathBuf),
    /// `host:port`, with the bearer token.
    Tcp {
        address: String,
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

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the groundzero daemon at {endpoint}: {source} (is `groundzero run` running? use --socket or --api to point elsewhere)")]
    Connect {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{message} (HTTP {status})")]
    Api { status: u16, message: String },
    #[error("talking to the daemon at {endpoint}: {message}")]
    Protocol { endpoint: String, message: String },
}

#[derive(Clone, Debug)]
pub struct Client {
    endpoint: Endpoint,
}

impl Client {
    pub fn new(endpoint: Endpoint) -> Self {
        Self { endpoint }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Sends one request; a non-2xx answer becomes [`ClientError::Api`] with the daemon's message.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let endpoint = self.endpoint.to_string();
        let protocol = |message: String| ClientError::Protocol {
            endpoint: endpoint.clone(),
            message,
        };
        let connect = |source| ClientError::Connect {
            endpoint: endpoint.clone(),
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
                    .map_err(|e| protocol(e.to_string()))?
            }
            Endpoint::Tcp { address, token } => {
                builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
                let stream = tokio::net::TcpStream::connect(address)
                    .await
                    .map_err(connect)?;
                handshake(stream)
                    .await
                    .map_err(|e| protocol(e.to_string()))?
            }
        };
        let bytes = match body {
            Some(v) => Bytes::from(serde_json::to_vec(v).expect("JSON values serialise")),
            None => Bytes::new(),
        };
        let request = builder
            .body(Full::new(bytes))
            .map_err(|e| protocol(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| protocol(e.to_string()))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| protocol(e.to_string()))?
            .to_bytes();
        let value: Value = serde_json::from_slice(&body).map_err(|e| {
            protocol(format!(
                "the answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            ))
        })?;
        if status.is_success() {
            Ok(value)
        } else {
            let message = value
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("no message")
                .to_string();
            Err(ClientError::Api {
                status: status.as_u16(),
                message,
            })
        }
    }
}

/// What `POST /v1/block` answered.
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

impl Client {
    /// `GET /v1/health`: succeeds if a daemon answers.
    pub async fn health(&self) -> Result<(), ClientError> {
        self.call(Method::GET, "/v1/health", None).await.map(|_| ())
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
        let mut body = json!({
            "entries": entries.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "source": source,
            "reason": reason,
        });
        if let Some(ttl) = ttl {
            body["ttl"] = json!(format!("{}s", ttl.as_secs().max(1)));
        }
        let answer = self.call(Method::POST, "/v1/block", Some(&body)).await?;
        let bad = |message: String| ClientError::Protocol {
            endpoint: self.endpoint.to_string(),
            message,
        };
        let field = |name: &str| {
            answer
                .get(name)
                .and_then(Value::as_u64)
                .ok_or_else(|| bad(format!("no `{name}` count in {answer}")))
        };
        let mut refused = Vec::new();
        for r in answer
            .get("results")
            .and_then(Value::as_array)
            .ok_or_else(|| bad(format!("no `results` array in {answer}")))?
        {
            if r.get("status").and_then(Value::as_str) == Some("refused") {
                let entry = r
                    .get("entry")
                    .and_then(Value::as_str)
                    .and_then(|e| e.parse().ok())
                    .ok_or_else(|| bad(format!("not an entry: {r}")))?;
                let why = r.get("why").and_then(Value::as_str).unwrap_or("");
                refused.push((entry, why.to_string()));
            }
        }
        Ok(BlockOutcome {
            added: field("added")?,
            entries: field("entries")?,
            applied: field("applied")?,
            refused,
            expires: answer.get("expires").and_then(Value::as_u64),
        })
    }

    /// Blocklist entries held by `source` (exactly, or by prefix: `feed` matches every
    /// `feed:<name>`): `GET /v1/entries?list=block&source=...`.
    pub async fn blocked_by(&self, source: &str) -> Result<Vec<IpNet>, ClientError> {
        let path = format!("/v1/entries?list=block&source={source}&limit=100000");
        let answer = self.call(Method::GET, &path, None).await?;
        let bad = |message: String| ClientError::Protocol {
            endpoint: self.endpoint.to_string(),
            message,
        };
        answer
            .get("entries")
            .and_then(Value::as_array)
            .ok_or_else(|| bad(format!("no `entries` array in {answer}")))?
            .iter()
            .map(|e| {
                e.get("entry")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad(format!("not an entry: {e}")))
            })
            .collect()
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
