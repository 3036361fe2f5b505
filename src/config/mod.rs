//! Configuration: file → `raw` (serde mirror, unknown keys rejected) → `validate` (every
//! problem collected, each naming its key) → `types` (what the rest of portcullis receives).
//!
//! `Config::load(path)` and `Config::from_yaml(text, origin)` are the only entry points.

mod error;
pub(crate) mod known_keys;
mod raw;
mod redis_url;
mod types;
mod validate;

use std::path::Path;

pub use error::{ConfigError, Problem};
pub use types::*;
pub use validate::{
    is_loopback_name, listen_addresses_overlap, validate_log, validate_socket_addr,
};

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
        let raw = parse::<raw::RawConfig>(text).map_err(fail)?;
        validate::validate(raw, origin, read_file).map_err(fail)
    }
}

/// Parses YAML into a raw mirror (this file's or the webhook's). Every unknown key is reported
/// (not only the first), and a type error names the key path where it happened.
pub(crate) fn parse<T>(text: &str) -> Result<T, Vec<Problem>>
where
    T: serde::de::DeserializeOwned + known_keys::KnownKeys,
{
    if text.trim().is_empty() {
        return Err(vec![Problem::new(
            "(file)",
            "is empty (see the README for a complete example)",
        )]);
    }
    let mut unknown = Vec::new();
    let mut record_unknown = |path: serde_ignored::Path<'_>| unknown.push(key_path(&path));
    let de = serde_yaml::Deserializer::from_str(text);
    let tracked = serde_ignored::Deserializer::new(de, &mut record_unknown);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(tracked);
    let mut problems: Vec<Problem> = unknown
        .into_iter()
        .map(|key| {
            let message = unknown_key_message::<T>(&key);
            Problem::new(key, message)
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
            let message = yaml_message(e.inner(), &key);
            problems.push(Problem::new(key, message));
            Err(problems)
        }
    }
}

/// "Did you mean" the nearest key of the same section, when one is close; else a hint.
fn unknown_key_message<T: known_keys::KnownKeys>(path: &str) -> String {
    let (section, key) = known_keys::split_key(path);
    match crate::text::nearest(key, T::keys_of(&section)) {
        Some(meant) => format!("is not a known key (did you mean {meant:?}?)"),
        None => "is not a known key (check its spelling and indentation)".to_string(),
    }
}

/// `serde_ignored`'s path in the notation validation uses: `routes[0].kind`, with no marker
/// for optional values.
fn key_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", key_path(parent)),
        // Unknown keys come from the user: escape control characters so a key cannot fake
        // extra lines in `check`'s output.
        Path::Map { parent, key } => match key_path(parent) {
            p if p.is_empty() => crate::text::sanitize(key),
            p => format!("{p}.{}", crate::text::sanitize(key)),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => key_path(parent),
    }
}

fn yaml_message(e: &serde_yaml::Error, key: &str) -> String {
    // serde_yaml prefixes the path itself; the key is printed once, by `ConfigError`.
    let text = e.to_string();
    let text = text.strip_prefix(&format!("{key}: ")).unwrap_or(&text);
    match text.strip_prefix("invalid type: ") {
        Some(rest) => format!("wrong type: {rest}"),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests;
