//! The lab's tiny peer protocol, shared by the traffic generator's clients and the example
//! validator node (`crates/validator-node`).
//!
//! One request per UDP datagram, or one per line on TCP; ASCII, at most [`MAX_MESSAGE`] bytes:
//!
//! | request        | response                    |
//! |----------------|-----------------------------|
//! | `PING <n>`     | `PONG <n>`                  |
//! | `GET <height>` | `BLOCK <height> <hash hex>` |
//!
//! Anything else is an invalid message, which a node counts against the sender. `GET` is the
//! expensive request: answering it costs [`block_hash`] rounds of hashing, a stand-in for the
//! signature checks and storage reads a real node pays per request. That cost is what makes a
//! request flood hurt the node when nothing drops the flood before it.

use std::hash::{DefaultHasher, Hash, Hasher};

/// The port the node serves on, UDP and TCP.
pub const PORT: u16 = 7000;

/// Longest valid message, in bytes (without the TCP newline).
pub const MAX_MESSAGE: usize = 64;

/// A request a peer sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    Ping(u64),
    Get(u64),
}

/// A node's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Response {
    Pong(u64),
    Block { height: u64, hash: u64 },
}

/// Why a message is not a valid request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMessage {
    #[error("message longer than {MAX_MESSAGE} bytes ({0})")]
    TooLong(usize),
    #[error("message is not UTF-8")]
    NotText,
    #[error("unknown verb in {0:?}")]
    UnknownVerb(String),
    #[error("bad number in {0:?}")]
    BadNumber(String),
}

impl Request {
    /// The bytes on the wire (no newline).
    pub fn encode(&self) -> String {
        match self {
            Request::Ping(n) => format!("PING {n}"),
            Request::Get(h) => format!("GET {h}"),
        }
    }

    /// Parses one message; surrounding whitespace (a TCP line's `\r\n`) is ignored.
    pub fn parse(bytes: &[u8]) -> Result<Self, InvalidMessage> {
        if bytes.len() > MAX_MESSAGE + 2 {
            return Err(InvalidMessage::TooLong(bytes.len()));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| InvalidMessage::NotText)?;
        let text = text.trim();
        let (verb, arg) = text
            .split_once(' ')
            .ok_or_else(|| InvalidMessage::UnknownVerb(text.into()))?;
        let number = || {
            arg.parse::<u64>()
                .map_err(|_| InvalidMessage::BadNumber(text.into()))
        };
        match verb {
            "PING" => Ok(Request::Ping(number()?)),
            "GET" => Ok(Request::Get(number()?)),
            _ => Err(InvalidMessage::UnknownVerb(text.into())),
        }
    }

    /// The answer a correct node gives, spending `rounds` of hashing on a `GET`.
    pub fn answer(&self, rounds: u32) -> Response {
        match *self {
            Request::Ping(n) => Response::Pong(n),
            Request::Get(height) => Response::Block {
                height,
                hash: block_hash(height, rounds),
            },
        }
    }

    /// True if `response` answers this request (the hash is not checked: clients measure
    /// delivery, not the node's arithmetic).
    pub fn is_answered_by(&self, response: &Response) -> bool {
        match (self, response) {
            (Request::Ping(a), Response::Pong(b)) => a == b,
            (Request::Get(a), Response::Block { height, .. }) => a == height,
            _ => false,
        }
    }
}

impl Response {
    pub fn encode(&self) -> String {
        match self {
            Response::Pong(n) => format!("PONG {n}"),
            Response::Block { height, hash } => format!("BLOCK {height} {hash:016x}"),
        }
    }

    /// Parses a node's answer; `None` if it is not one.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?.trim();
        let mut words = text.split(' ');
        match (words.next()?, words.next(), words.next()) {
            ("PONG", Some(n), None) => Some(Response::Pong(n.parse().ok()?)),
            ("BLOCK", Some(h), Some(hash)) => Some(Response::Block {
                height: h.parse().ok()?,
                hash: u64::from_str_radix(hash, 16).ok()?,
            }),
            _ => None,
        }
    }
}

/// The deterministic "work" of serving a block: `rounds` chained SipHash rounds over the height.
/// About 15–30 ns per round on current CPUs, so 1000 rounds is tens of microseconds.
pub fn block_hash(height: u64, rounds: u32) -> u64 {
    let mut value = height;
    for round in 0..rounds.max(1) {
        let mut hasher = DefaultHasher::new();
        (value, round).hash(&mut hasher);
        value = hasher.finish();
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for r in [Request::Ping(7), Request::Get(123_456)] {
            assert_eq!(Request::parse(r.encode().as_bytes()), Ok(r));
            assert!(r.is_answered_by(&Response::parse(r.answer(3).encode().as_bytes()).unwrap()));
        }
        assert_eq!(Request::parse(b"GET 5\r\n"), Ok(Request::Get(5)));
    }

    #[test]
    fn anything_else_is_invalid() {
        for bad in [
            &b""[..],
            b"PING",
            b"PING x",
            b"HELLO 1",
            b"\xff\xfe",
            &[b'A'; 100],
        ] {
            assert!(Request::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Response::parse(b"PONG"), None);
    }

    #[test]
    fn block_hash_is_deterministic() {
        assert_eq!(block_hash(9, 10), block_hash(9, 10));
        assert_ne!(block_hash(9, 10), block_hash(10, 10));
    }
}
