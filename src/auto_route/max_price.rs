//! OpenRouter's `provider.max_price`: a price ceiling an auto request puts on the models the
//! router may choose (see [the module docs](super#providermax_price)).

use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::ModelProfile;
use crate::payload::{without_position, ChatRequest, Str};
use crate::ApiError;

/// The token ceilings of `provider.max_price`, in USD per million tokens, the unit of
/// OpenRouter's documentation and of [`ModelProfile`]'s prices.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct MaxPrice {
    prompt: Option<f64>,
    completion: Option<f64>,
}

/// Why a model is over a request's [`MaxPrice`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum OverPrice {
    /// The model's prices are not known (not valid numbers): OpenRouter's `max_price` "will
    /// prevent your request from running if the price is not available".
    Unknown,
    /// Its `which` price (`prompt` or `completion`) is over the ceiling.
    Over {
        which: &'static str,
        price: f64,
        ceiling: f64,
    },
}

impl fmt::Display for OverPrice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OverPrice::Unknown => f.pad("its price is not known, and the request sets provider.max_price"),
            OverPrice::Over {
                which,
                price,
                ceiling,
            } => write!(
                f,
                "its {which} price of ${price} per million tokens is over provider.max_price.{which} (${ceiling})"
            ),
        }
    }
}

impl MaxPrice {
    /// The ceiling `request` sets, `None` without one (no `provider`, no `max_price`, `null`):
    /// nothing is read or allocated for a request without `provider`. A malformed one is a
    /// 400: read as absent, it would let the request go to any model.
    pub(crate) fn of(request: &ChatRequest) -> Result<Option<Self>, ApiError> {
        let provider = request.provider().map_err(|_| {
            ApiError::bad_request("invalid_provider", "`provider` is given more than once")
                .with_param("provider")
        })?;
        let Some(provider) = provider else {
            return Ok(None);
        };
        let max_price = serde_json::from_str::<Option<ProviderView<'_>>>(provider)
            .map_err(|err| {
                let why = without_position(&err);
                ApiError::bad_request("invalid_provider", format!("invalid `provider`: {why}"))
                    .with_param("provider")
            })?
            .unwrap_or_default();
        let invalid = |why: String| {
            ApiError::bad_request(
                "invalid_max_price",
                format!("invalid `provider.max_price`: {why}"),
            )
            .with_param("provider.max_price")
        };
        if max_price.twice {
            return Err(invalid("given twice".into()));
        }
        let Some(max_price) = max_price.max_price else {
            return Ok(None);
        };
        // serde reads a struct from an array too (`[1]` as `{"prompt": 1}`).
        let raw = max_price.get();
        if !(raw.starts_with('{') || raw == "null") {
            return Err(invalid(format!("an object is needed, not `{raw:.40}`")));
        }
        let ceilings = serde_json::from_str::<Option<Ceilings>>(max_price.get())
            .map_err(|err| invalid(without_position(&err)))?;
        Ok(ceilings.map(|c| Self {
            prompt: c.prompt,
            completion: c.completion,
        }))
    }

    /// Whether `model` is within the ceilings: its prices must be known, and neither over its
    /// ceiling (a price equal to the ceiling is within it).
    pub(crate) fn admits(&self, model: &ModelProfile) -> Result<(), OverPrice> {
        if !model.has_valid_prices() {
            return Err(OverPrice::Unknown);
        }
        for (which, price, ceiling) in [
            ("prompt", model.input_price, self.prompt),
            ("completion", model.output_price, self.completion),
        ] {
            match ceiling {
                Some(ceiling) if price > ceiling => {
                    return Err(OverPrice::Over {
                        which,
                        price,
                        ceiling,
                    })
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// `provider`'s `max_price`, every other option skipped (OpenRouter's: `order`, `sort`, ...),
/// and whether it is given twice.
#[derive(Default)]
struct ProviderView<'a> {
    max_price: Option<&'a RawValue>,
    twice: bool,
}

impl<'de: 'a, 'a> Deserialize<'de> for ProviderView<'a> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ProviderVisitor)
    }
}

struct ProviderVisitor;

impl<'de> Visitor<'de> for ProviderVisitor {
    type Value = ProviderView<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut view = ProviderView::default();
        // Keys are borrowed from the body when they hold no escape.
        while let Some(Str(key)) = map.next_key::<Str<'de>>()? {
            if key != "max_price" {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let value = map.next_value::<&'de RawValue>()?;
            view.twice |= view.max_price.replace(value).is_some();
        }
        Ok(view)
    }
}

/// OpenRouter's `max_price`: the `prompt` and `completion` ceilings, the ones the catalog has
/// prices for. Every other member (`request`, `image`, `audio`, and the other keys of
/// OpenRouter's `pricing`: `web_search`, `internal_reasoning`, `input_cache_read`...) must be
/// a ceiling too (or `null`), but excludes no model: the catalog prices models by the token
/// only (images and audio counted as prompt tokens), with no fee per request, per image or
/// per search. OpenRouter accepts them, so a client that copies a model's `pricing` as its
/// ceiling is not refused here; a value that is no price is.
struct Ceilings {
    prompt: Option<f64>,
    completion: Option<f64>,
}

impl<'de> Deserialize<'de> for Ceilings {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(CeilingsVisitor)
    }
}

struct CeilingsVisitor;

impl<'de> Visitor<'de> for CeilingsVisitor {
    type Value = Ceilings;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of price ceilings")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ceilings, A::Error> {
        // Each `Some` once read (`Some(None)`: `null`, absent).
        let (mut prompt, mut completion) = (None, None);
        // Keys are borrowed from the body when they hold no escape.
        while let Some(Str(key)) = map.next_key::<Str<'de>>()? {
            let ceiling = map.next_value::<Option<Ceiling>>()?.map(|Ceiling(v)| v);
            let slot = match &*key {
                "prompt" => &mut prompt,
                "completion" => &mut completion,
                _ => continue,
            };
            // Given twice, the ceiling would be the last one here and perhaps the first one
            // upstream.
            if slot.replace(ceiling).is_some() {
                return Err(de::Error::custom(format_args!("`{key}` given twice")));
            }
        }
        Ok(Ceilings {
            prompt: prompt.flatten(),
            completion: completion.flatten(),
        })
    }
}

/// One ceiling: a finite number `>= 0`, as a JSON number or a string (OpenRouter's SDKs send
/// prices as decimal strings).
struct Ceiling(f64);

impl<'de> Deserialize<'de> for Ceiling {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CeilingVisitor)
    }
}

struct CeilingVisitor;

impl CeilingVisitor {
    fn price<E: de::Error>(v: f64) -> Result<Ceiling, E> {
        if v.is_finite() && v >= 0.0 {
            Ok(Ceiling(v))
        } else {
            Err(E::custom(format!(
                "a price ceiling must be a finite number >= 0 (USD per million tokens), not {v}"
            )))
        }
    }
}

impl Visitor<'_> for CeilingVisitor {
    type Value = Ceiling;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a price in USD per million tokens (a number or a numeric string)")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Ceiling, E> {
        Self::price(v as f64)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Ceiling, E> {
        Self::price(v as f64)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Ceiling, E> {
        Self::price(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Ceiling, E> {
        match v.parse::<f64>() {
            Ok(v) => Self::price(v),
            Err(_) => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn of(body: &str) -> Result<Option<MaxPrice>, ApiError> {
        let request = ChatRequest::parse(Bytes::from(body.to_owned())).unwrap();
        MaxPrice::of(&request)
    }

    #[test]
    fn ceilings_are_read_as_numbers_or_strings() {
        let both = MaxPrice {
            prompt: Some(1.0),
            completion: Some(2.5),
        };
        for body in [
            r#"{"provider":{"max_price":{"prompt":1,"completion":2.5}}}"#,
            r#"{"provider":{"order":["a"],"max_price":{"prompt":"1","completion":"2.5"}}}"#,
            r#"{"provider":{"max_price":{"prompt":1,"completion":2.5,"request":0,"image":3}}}"#,
            r#"{"provider":{"max_price":{"web_search":"0.01","prompt":1,"input_cache_read":null,"completion":"2.5"}}}"#,
        ] {
            assert_eq!(of(body).unwrap(), Some(both), "{body}");
        }
        for body in [
            r#"{"model":"auto"}"#,
            r#"{"provider":null}"#,
            r#"{"provider":{"max_price":null}}"#,
            r#"{"provider":{"sort":"price"}}"#,
        ] {
            assert_eq!(of(body).unwrap(), None, "{body}");
        }
    }

    #[test]
    fn a_malformed_ceiling_is_refused_with_its_param() {
        for (body, param) in [
            (r#"{"provider":1}"#, "provider"),
            (r#"{"provider":{},"provider":{}}"#, "provider"),
            (
                r#"{"provider":{"max_price":1,"max_price":1}}"#,
                "provider.max_price",
            ),
            (r#"{"provider":{"max_price":[1]}}"#, "provider.max_price"),
            (
                r#"{"provider":{"max_price":{"prompt":-0.5}}}"#,
                "provider.max_price",
            ),
            (
                r#"{"provider":{"max_price":{"prompt":"NaN"}}}"#,
                "provider.max_price",
            ),
            (
                r#"{"provider":{"max_price":{"prompt":"inf"}}}"#,
                "provider.max_price",
            ),
            (
                r#"{"provider":{"max_price":{"prompt":1e999}}}"#,
                "provider.max_price",
            ),
            (
                r#"{"provider":{"max_price":{"input":"one"}}}"#,
                "provider.max_price",
            ),
            (
                r#"{"provider":{"max_price":{"prompt":1,"prompt":null}}}"#,
                "provider.max_price",
            ),
        ] {
            let err = of(body).unwrap_err();
            assert_eq!(err.status(), 400, "{body}");
            assert_eq!(err.param(), Some(param), "{body}: {}", err.message());
        }
    }

    #[test]
    fn a_model_is_admitted_up_to_the_ceiling_and_only_with_known_prices() {
        let ceiling = MaxPrice {
            prompt: Some(1.0),
            completion: None,
        };
        let model = |input, output| ModelProfile::new("m", 0, input, output);
        assert_eq!(ceiling.admits(&model(1.0, 100.0)), Ok(()));
        assert!(matches!(
            ceiling.admits(&model(1.5, 0.0)),
            Err(OverPrice::Over {
                which: "prompt",
                ..
            })
        ));
        assert_eq!(
            ceiling.admits(&model(f64::NAN, 0.0)),
            Err(OverPrice::Unknown)
        );
        assert_eq!(ceiling.admits(&model(0.0, -1.0)), Err(OverPrice::Unknown));
        let completion = MaxPrice {
            prompt: None,
            completion: Some(2.0),
        };
        let over = completion.admits(&model(0.0, 3.0)).unwrap_err();
        assert_eq!(
            over.to_string(),
            "its completion price of $3 per million tokens is over provider.max_price.completion ($2)"
        );
    }
}
