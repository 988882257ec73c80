//! A borrowed JSON tree for reading error bodies.
//!
//! serde_json's `Value` allocates a `String` for every key and string and a B-tree node for every
//! few members: about two thirds of classifying an error answer went into building and dropping
//! it. Here a string without escapes borrows the body, an object is a short vector of members,
//! and a number keeps only what the rules read of it (a non-negative integer: a status code).
//! The grammar and the nesting limit are serde_json's, which parses it.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON value borrowed from the text it was parsed from.
#[derive(Debug, PartialEq)]
pub(super) enum Json<'a> {
    Null,
    Bool(bool),
    /// A number: its value when it is a non-negative integer, else `None`.
    Number(Option<u64>),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Object<'a>),
}

/// A JSON object's members in the order they came.
#[derive(Debug, PartialEq)]
pub(super) struct Object<'a>(Vec<(Cow<'a, str>, Json<'a>)>);

impl<'a> Object<'a> {
    /// The member `key`; of duplicates, the last (as serde_json's `Map` keeps it).
    pub(super) fn get(&self, key: &str) -> Option<&Json<'a>> {
        self.0
            .iter()
            .rev()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value)
    }

    pub(super) fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The members in the order they came, duplicates included.
    pub(super) fn members(&self) -> impl Iterator<Item = (&str, &Json<'a>)> {
        self.0.iter().map(|(name, value)| (&**name, value))
    }
}

impl<'a> Json<'a> {
    /// The member `key` of an object; `None` for anything else.
    pub(super) fn get(&self, key: &str) -> Option<&Json<'a>> {
        self.as_object()?.get(key)
    }

    pub(super) fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    pub(super) fn as_array(&self) -> Option<&[Json<'a>]> {
        match self {
            Json::Array(items) => Some(items),
            _ => None,
        }
    }

    pub(super) fn as_object(&self) -> Option<&Object<'a>> {
        match self {
            Json::Object(object) => Some(object),
            _ => None,
        }
    }

    /// Parses `text`; `None` when it is not one JSON value. A leading byte order mark is
    /// ignored, as RFC 8259 allows.
    pub(super) fn parse(text: &'a [u8]) -> Option<Self> {
        let text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
        serde_json::from_slice(text).ok()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Json<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor(PhantomData))
    }
}

struct JsonVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for JsonVisitor<'a> {
    type Value = Json<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json<'a>, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json<'a>, E> {
        Ok(Json::Bool(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json<'a>, E> {
        Ok(Json::Number(Some(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json<'a>, E> {
        Ok(Json::Number(u64::try_from(v).ok()))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Json<'a>, E> {
        Ok(Json::Number(None))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Json<'a>, E> {
        Ok(Json::String(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json<'a>, E> {
        Ok(Json::String(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Json<'a>, E> {
        Ok(Json::String(Cow::Owned(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'a>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'a>, A::Error> {
        let mut members = Vec::new();
        while let Some((Key(name), value)) = map.next_entry()? {
            members.push((name, value));
        }
        Ok(Json::Object(Object(members)))
    }
}

/// An object key, borrowed when it has no escape (serde's `Cow<str>` would always copy).
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // The value visitor's string methods, asked for a string.
        match deserializer.deserialize_str(JsonVisitor(PhantomData))? {
            Json::String(name) => Ok(Key(name)),
            _ => Err(serde::de::Error::custom(
                "an object key that is not a string",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    /// What the classifier reads of a `Value`, in this module's terms.
    fn from_value(value: &Value) -> Json<'static> {
        match value {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Number(n) => Json::Number(n.as_u64()),
            Value::String(s) => Json::String(Cow::Owned(s.clone())),
            Value::Array(items) => Json::Array(items.iter().map(from_value).collect()),
            // `Map` is ordered by key and keeps the last of duplicates: compare as such.
            Value::Object(map) => Json::Object(Object(
                map.iter()
                    .map(|(k, v)| (Cow::Owned(k.clone()), from_value(v)))
                    .collect(),
            )),
        }
    }

    /// Sorted by key, the last of duplicates kept: the shape `from_value` gives.
    fn canonical(json: Json<'_>) -> Json<'static> {
        match json {
            Json::Null => Json::Null,
            Json::Bool(b) => Json::Bool(b),
            Json::Number(n) => Json::Number(n),
            Json::String(s) => Json::String(Cow::Owned(s.into_owned())),
            Json::Array(items) => Json::Array(items.into_iter().map(canonical).collect()),
            Json::Object(Object(members)) => {
                let mut map = std::collections::BTreeMap::new();
                for (name, value) in members {
                    map.insert(name.into_owned(), canonical(value));
                }
                Json::Object(Object(
                    map.into_iter().map(|(k, v)| (Cow::Owned(k), v)).collect(),
                ))
            }
        }
    }

    #[test]
    fn strings_without_escapes_borrow_the_text() {
        let text = br#"{"error":{"message":"Rate limit","type":"a\"b"}}"#;
        let json = Json::parse(text).unwrap();
        let error = json.get("error").unwrap();
        assert!(matches!(
            error.get("message"),
            Some(Json::String(Cow::Borrowed("Rate limit")))
        ));
        assert!(matches!(error.get("type"), Some(Json::String(Cow::Owned(s))) if s == "a\"b"));
        assert!(matches!(
            json.as_object().unwrap().0[0].0,
            Cow::Borrowed("error")
        ));
    }

    #[test]
    fn numbers_keep_non_negative_integers_only() {
        let json = Json::parse(br#"[429, -1, 4.5, 1e3, 18446744073709551615]"#).unwrap();
        let numbers: Vec<_> = json.as_array().unwrap().iter().collect();
        assert_eq!(numbers[0], &Json::Number(Some(429)));
        assert_eq!(numbers[1], &Json::Number(None));
        assert_eq!(numbers[2], &Json::Number(None));
        assert_eq!(numbers[3], &Json::Number(None));
        assert_eq!(numbers[4], &Json::Number(Some(u64::MAX)));
    }

    #[test]
    fn the_last_of_duplicate_keys_wins_as_in_serde_json() {
        let json = Json::parse(br#"{"code":1,"code":2}"#).unwrap();
        assert_eq!(json.get("code"), Some(&Json::Number(Some(2))));
    }

    /// Any JSON value (keys and strings with quotes, backslashes and non-ASCII, which serde_json
    /// escapes when it writes them).
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            "[a-z\"\\\\\u{e9}\n ]{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[a-z\"\u{e9}]{0,6}", inner, 0..6)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Any JSON text serde_json writes reads back as the same tree.
        #[test]
        fn reads_what_serde_json_writes(value in any_json()) {
            let text = value.to_string();
            let ours = Json::parse(text.as_bytes());
            prop_assert!(ours.is_some(), "{}", text);
            prop_assert_eq!(canonical(ours.unwrap()), from_value(&value));
        }

        /// On JSON-like text, this tree accepts exactly what serde_json's `Value` accepts, and
        /// holds the same values.
        #[test]
        fn agrees_with_serde_json_value(tokens in prop::collection::vec(prop::sample::select(vec![
            "{", "}", "[", "]", ",", ":", " ", "\"error\"", "\"code\"", "\"a\\\"b\"",
            "\"\\u00e9\"", "\"x\"", "1", "-2", "3.5", "1e2", "true", "false", "null", "\"\"",
        ]), 0..40)) {
            let text = tokens.concat();
            let ours = Json::parse(text.as_bytes());
            let theirs = serde_json::from_str::<Value>(&text);
            match (ours, theirs) {
                (Some(ours), Ok(theirs)) => prop_assert_eq!(canonical(ours), from_value(&theirs)),
                (None, Err(_)) => {}
                (ours, theirs) => prop_assert!(false, "{text}: {ours:?} vs {theirs:?}"),
            }
        }
    }
}
