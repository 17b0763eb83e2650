//! An append-only, fsync'd log of list changes (JSON lines), so that no acknowledged entry is
//! lost to a crash or `kill -9`. Compacted to the live set at every start.
//!
//! Feed entries are not journaled one by one: each feed's last good copy is cached in a file
//! (see `Registry`), which is both smaller and what a refresh replaces anyway.

use std::{
    fs::{File, OpenOptions},
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::registry::{Holder, Side};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Record {
    Add {
        side: Side,
        net: ipnet::IpNet,
        #[serde(flatten)]
        holder: Holder,
    },
    Remove {
        side: Side,
        net: ipnet::IpNet,
        /// Only this source's hold; all non-feed holds if absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<String>,
    },
}

#[derive(Debug, thiserror::Error)]
#[error("journal {path}: {message}")]
pub struct JournalError {
    pub path: PathBuf,
    pub message: String,
}

pub struct Journal {
    path: PathBuf,
    file: File,
}

impl Journal {
    /// Reads every record of the journal at `path` (a missing file is an empty journal). A torn
    /// last line (a crash mid-write) is ignored; damage anywhere else is an error.
    pub fn read(path: &Path) -> Result<Vec<Record>, JournalError> {
        let err = |message: String| JournalError {
            path: path.to_path_buf(),
            message,
        };
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(err(e.to_string())),
        };
        let lines: Vec<String> = BufReader::new(file)
            .lines()
            .collect::<Result<_, _>>()
            .map_err(|e| err(e.to_string()))?;
        let mut records = Vec::with_capacity(lines.len());
        for (index, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(line) {
                Ok(record) => records.push(record),
                Err(_) if index + 1 == lines.len() => {
                    log::warn!(
                        "{}: ignoring a torn last line (a crash while writing it)",
                        path.display()
                    )
                }
                Err(e) => return Err(err(format!("line {}: {e}", index + 1))),
            }
        }
        Ok(records)
    }

    /// Replaces the journal with `records` (write to a temporary file, fsync, rename), then
    /// opens it for appending.
    pub fn rewrite(path: &Path, records: &[Record]) -> Result<Self, JournalError> {
        let err = |message: String| JournalError {
            path: path.to_path_buf(),
            message,
        };
        let tmp = path.with_extension("tmp");
        {
            let mut out =
                std::io::BufWriter::new(File::create(&tmp).map_err(|e| err(e.to_string()))?);
            for r in records {
                serde_json::to_writer(&mut out, r).map_err(|e| err(e.to_string()))?;
                out.write_all(b"\n").map_err(|e| err(e.to_string()))?;
            }
            out.into_inner()
                .map_err(|e| err(e.to_string()))?
                .sync_all()
                .map_err(|e| err(e.to_string()))?;
        }
        std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))?;
        if let Some(dir) = path.parent() {
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| err(e.to_string()))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends and fsyncs. Returns only once the records are on disk.
    pub fn append(&mut self, records: &[Record]) -> Result<(), JournalError> {
        if records.is_empty() {
            return Ok(());
        }
        let err = |message: String| JournalError {
            path: self.path.clone(),
            message,
        };
        let mut buf = Vec::with_capacity(records.len() * 128);
        for r in records {
            serde_json::to_writer(&mut buf, r).map_err(|e| err(e.to_string()))?;
            buf.push(b'\n');
        }
        self.file.write_all(&buf).map_err(|e| err(e.to_string()))?;
        self.file.sync_data().map_err(|e| err(e.to_string()))
    }
}
