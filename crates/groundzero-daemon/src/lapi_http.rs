//! What the CrowdSec bouncer (pull) and watcher (push) say about a LAPI answer that failed: the
//! same two shapes on both sides, so an operator reads one kind of message.
use std::io::Read as _;

/// The first 512 bytes of an error answer's body, made safe for a terminal (a LAPI error is
/// short JSON; anything longer is not worth a log line).
pub(crate) fn error_body(response: ureq::Response) -> String {
    let mut body = String::new();
    let _ = response.into_reader().take(512).read_to_string(&mut body);
    groundzero::text::for_terminal(body.trim()).into_owned()
}

/// A transport error's message without the URL ureq puts in front (the error names it once).
pub(crate) fn transport_message(url: &str, error: &ureq::Error) -> String {
    let message = error.to_string();
    message
        .strip_prefix(&format!("{url}: "))
        .unwrap_or(&message)
        .to_string()
}
