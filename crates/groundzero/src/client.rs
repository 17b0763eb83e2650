//! A client for the daemon's management API, over its Unix socket or over TCP with a token.

use std::path::PathBuf;

use http_body_util::{BodyExt, Full};
use hyper::{body::Bytes, header, Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;

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
