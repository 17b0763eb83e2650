//! The body of every error: `{"error": "<what is wrong, naming the field, index or input>"}`,
//! with a 4xx or 5xx status (see docs/api.md for which).

use serde::{Deserialize, Serialize};

/// An error reply's body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What is wrong.
    pub error: String,
}

impl ErrorBody {
    /// A body saying `error`.
    pub fn new(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
        }
    }
}
