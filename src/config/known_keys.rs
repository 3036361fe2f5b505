//! The keys each section of a configuration file may hold, read from the raw mirror's own serde
//! field lists (so they cannot drift from what is accepted), for "did you mean" suggestions.

use serde::de::{Deserialize, Visitor};

/// A raw mirror whose sections can say which keys they hold.
pub trait KnownKeys {
    /// The keys of `section`, written without indices (`routes`, `ingress_auth.hosts.paths`;
    /// `""` for the top level); empty for a section that is not a struct.
    fn keys_of(section: &str) -> &'static [&'static str];
}

/// The field names serde's derive gives a struct: asked for them, it calls
/// `deserialize_struct` with the list, which this deserializer returns as its "error".
pub fn fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    match T::deserialize(FieldProbe) {
        Err(Fields(fields)) => fields,
        Ok(_) => &[],
    }
}

struct FieldProbe;

#[derive(Debug)]
struct Fields(&'static [&'static str]);

impl std::fmt::Display for Fields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::error::Error for Fields {}

impl serde::de::Error for Fields {
    fn custom<T: std::fmt::Display>(_: T) -> Fields {
        Fields(&[])
    }
}

impl<'de> serde::Deserializer<'de> for FieldProbe {
    type Error = Fields;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Fields> {
        Err(Fields(&[]))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Fields> {
        Err(Fields(fields))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// `routes[2].kind` → (`routes`, `kind`): the section without indices, and the key.
pub fn split_key(path: &str) -> (String, &str) {
    let (section, key) = path.rsplit_once('.').unwrap_or(("", path));
    let mut plain = String::with_capacity(section.len());
    let mut in_index = false;
    for c in section.chars() {
        match c {
            '[' => in_index = true,
            ']' => in_index = false,
            c if !in_index => plain.push(c),
            _ => {}
        }
    }
    let key = key.split('[').next().unwrap_or(key);
    (plain, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Sample {
        first: u8,
        #[serde(default)]
        second_key: bool,
    }

    #[test]
    fn fields_are_read_from_the_derive() {
        assert_eq!(fields::<Sample>(), ["first", "second_key"]);
        assert!(fields::<String>().is_empty());
    }

    #[test]
    fn paths_split_into_section_and_key() {
        assert_eq!(split_key("listen"), (String::new(), "listen"));
        assert_eq!(split_key("routes[2].kind"), ("routes".to_string(), "kind"));
        assert_eq!(
            split_key("ingress_auth.hosts[0].paths[1].kinds"),
            ("ingress_auth.hosts.paths".to_string(), "kinds")
        );
    }
}
