//! Configuration: file → `raw` (serde mirror, unknown keys rejected) → `validate` (every
//! problem collected, each naming its key) → `types` (what the rest of portcullis receives).
//!
//! `Config::load(path)` and `Config::from_yaml(text, origin)` are the only entry points.

mod error;
mod raw;
mod types;
mod validate;

use std::path::Path;

pub use error::{ConfigError, Problem};
pub use types::*;

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            problems: vec![Problem::new("(file)", format!("cannot read the file: {e}"))],
        })?;
        Config::from_yaml_with(&text, path, &|p| std::fs::read_to_string(p))
    }

    pub fn from_yaml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        Config::from_yaml_with(text, origin, &|p| std::fs::read_to_string(p))
    }

    pub fn from_yaml_with(
        text: &str,
        origin: &Path,
        read_file: validate::ReadFile<'_>,
    ) -> Result<Config, ConfigError> {
        let fail = |problems| ConfigError {
            file: origin.to_path_buf(),
            problems,
        };
        let raw = parse(text).map_err(fail)?;
        validate::validate(raw, origin, read_file).map_err(fail)
    }
}

/// Parses YAML into the raw mirror. Every unknown key is reported (not only the first), and a
/// type error names the key path where it happened.
fn parse(text: &str) -> Result<raw::RawConfig, Vec<Problem>> {
    if text.trim().is_empty() {
        return Err(vec![Problem::new(
            "(file)",
            "is empty (see the README for a complete example)",
        )]);
    }
    let mut unknown = Vec::new();
    let mut record_unknown = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let de = serde_yaml::Deserializer::from_str(text);
    let tracked = serde_ignored::Deserializer::new(de, &mut record_unknown);
    let parsed: Result<raw::RawConfig, _> = serde_path_to_error::deserialize(tracked);
    let mut problems: Vec<Problem> = unknown
        .into_iter()
        .map(|key| {
            Problem::new(
                key,
                "is not a known key (check its spelling and indentation)",
            )
        })
        .collect();
    match parsed {
        Ok(raw) if problems.is_empty() => Ok(raw),
        Ok(_) => Err(problems),
        Err(e) => {
            let key = match e.path().to_string() {
                p if p == "." => "(file)".to_string(),
                p => p,
            };
            problems.push(Problem::new(key, yaml_message(e.inner())));
            Err(problems)
        }
    }
}

fn yaml_message(e: &serde_yaml::Error) -> String {
    let mut msg = e.to_string();
    // serde_yaml appends " at line N column M"; keep it, it points the user at the spot.
    if let Some(stripped) = msg.strip_prefix("invalid type: ") {
        msg = format!("wrong type: {stripped}");
    }
    msg
}

#[cfg(test)]
mod tests;
