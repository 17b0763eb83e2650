//! Daemon configs for the demo and the tests, built as a TOML table and written with the `toml`
//! crate: paths and names are quoted and escaped by the serializer, and a test's extra tables
//! merge into the generated ones instead of repeating a header.
use std::path::{Path, PathBuf};

use toml::{Table, Value};

/// Why a [`DaemonConfig`] could not be rendered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("the path {} is not UTF-8, so a TOML config cannot hold it", .0.display())]
    NonUtf8Path(PathBuf),
    #[error("`{key}`: `{part}` is already a value, not a table")]
    NotATable { key: String, part: String },
    #[error("the extra TOML does not parse: {message}\n{text}")]
    Extra { message: String, text: String },
    #[error("serializing the config: {0}")]
    Serialize(String),
    #[error("writing the config to {}: {message}", path.display())]
    Write { path: PathBuf, message: String },
}

/// A `groundzero run` config. Setters take dotted keys (`api.tcp_listen`); the first mistake is
/// kept and reported by [`DaemonConfig::render`], so a chain of setters needs no `?` each.
#[derive(Clone, Debug, Default)]
pub struct DaemonConfig {
    table: Table,
    header: String,
    error: Option<ConfigError>,
}

impl DaemonConfig {
    /// An empty config (every setting at the daemon's default).
    pub fn new() -> Self {
        Self::default()
    }

    /// The usual start: where the daemon pins its maps, keeps its state and listens.
    pub fn with_paths(pin_dir: &Path, state_dir: &Path, socket: &Path) -> Self {
        Self::new()
            .set_path("pin_dir", pin_dir)
            .set_path("state_dir", state_dir)
            .set_path("api.socket", socket)
    }

    /// A comment written above the settings (each line gets its `# `).
    pub fn header(mut self, comment: &str) -> Self {
        for line in comment.lines() {
            self.header.push_str("# ");
            self.header.push_str(line);
            self.header.push('\n');
        }
        self
    }

    /// The interfaces the daemon attaches to (`interfaces = [...]`; empty: none).
    pub fn interfaces<S: AsRef<str>>(self, names: &[S]) -> Self {
        let names: Vec<Value> = names.iter().map(|n| Value::from(n.as_ref())).collect();
        self.set("interfaces", names)
    }

    /// Sets `key` (dotted: `ratelimit.rate`) to `value`, making the tables on the way.
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        if self.error.is_some() {
            return self;
        }
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts.pop().unwrap_or(key);
        let mut table = &mut self.table;
        for part in parts {
            let entry = table
                .entry(part.to_string())
                .or_insert_with(|| Value::Table(Table::new()));
            match entry {
                Value::Table(t) => table = t,
                _ => {
                    self.error = Some(ConfigError::NotATable {
                        key: key.into(),
                        part: part.into(),
                    });
                    return self;
                }
            }
        }
        table.insert(last.to_string(), value.into());
        self
    }

    /// Sets `key` to a path (which must be UTF-8 to fit in TOML).
    pub fn set_path(mut self, key: &str, path: &Path) -> Self {
        match path.to_str() {
            Some(s) => self.set(key, s),
            None => {
                self.error
                    .get_or_insert(ConfigError::NonUtf8Path(path.into()));
                self
            }
        }
    }

    /// Merges a TOML document into this config: its tables merge with the ones already here
    /// (key by key, recursively), its other values (arrays of tables included) replace.
    pub fn merge_toml(mut self, text: &str) -> Self {
        if self.error.is_some() {
            return self;
        }
        match text.parse::<Table>() {
            Ok(extra) => merge(&mut self.table, extra),
            Err(e) => {
                self.error = Some(ConfigError::Extra {
                    message: e.to_string(),
                    text: text.into(),
                })
            }
        }
        self
    }

    /// The value at dotted `key`, if set.
    pub fn get(&self, key: &str) -> Option<&Value> {
        let mut parts = key.split('.');
        let mut value = self.table.get(parts.next()?)?;
        for part in parts {
            value = value.as_table()?.get(part)?;
        }
        Some(value)
    }

    /// The config file's text.
    pub fn render(&self) -> Result<String, ConfigError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let body =
            toml::to_string(&self.table).map_err(|e| ConfigError::Serialize(e.to_string()))?;
        Ok(format!("{}{body}", self.header))
    }

    /// Writes the config file to `path`.
    pub fn write(&self, path: &Path) -> Result<(), ConfigError> {
        std::fs::write(path, self.render()?).map_err(|e| ConfigError::Write {
            path: path.into(),
            message: e.to_string(),
        })
    }
}

fn merge(into: &mut Table, from: Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Table(mine)), Value::Table(theirs)) => merge(mine, theirs),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_extra_tables_merge_into_one_document() {
        let config = DaemonConfig::with_paths(
            Path::new("/sys/fs/bpf/x"),
            Path::new("/tmp/a \"quoted\" dir/state"),
            Path::new("/tmp/api.sock"),
        )
        .header("Written by a test.")
        .interfaces(&["veth0"])
        .set("ratelimit.rate", 20u32)
        .merge_toml("monitor = true\n[api]\ntoken_file = \"/tmp/t\"\n[[feed]]\nname = \"f\"\n");
        let text = config.render().unwrap();
        assert!(text.starts_with("# Written by a test.\n"), "{text}");
        let back: Table = text.parse().unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(
            back["state_dir"].as_str(),
            Some("/tmp/a \"quoted\" dir/state")
        );
        assert_eq!(back["api"]["socket"].as_str(), Some("/tmp/api.sock"));
        assert_eq!(back["api"]["token_file"].as_str(), Some("/tmp/t"));
        assert_eq!(back["ratelimit"]["rate"].as_integer(), Some(20));
        assert_eq!(back["monitor"].as_bool(), Some(true));
        assert_eq!(back["feed"][0]["name"].as_str(), Some("f"));
        assert_eq!(back["interfaces"][0].as_str(), Some("veth0"));
        assert_eq!(
            config.get("api.socket").and_then(Value::as_str),
            Some("/tmp/api.sock")
        );
    }

    #[test]
    fn mistakes_are_reported_when_rendering() {
        let bad = DaemonConfig::new().merge_toml("[guard\n");
        assert!(matches!(bad.render(), Err(ConfigError::Extra { .. })));
        let clash = DaemonConfig::new()
            .set("monitor", true)
            .set("monitor.x", 1u32);
        assert!(matches!(clash.render(), Err(ConfigError::NotATable { .. })));
        use std::os::unix::ffi::OsStrExt;
        let odd = Path::new(std::ffi::OsStr::from_bytes(b"/tmp/\xff"));
        let non_utf8 = DaemonConfig::new().set_path("state_dir", odd);
        assert!(matches!(
            non_utf8.render(),
            Err(ConfigError::NonUtf8Path(_))
        ));
    }
}
