//! STUB (replaced by the real module on merge).
#![allow(
    missing_docs,
    missing_debug_implementations,
    dead_code,
    unreachable_pub
)]
use crate::body::Segments;
use crate::ApiError;
use bytes::Bytes;

#[derive(Clone, Debug)]
pub struct ChatRequest {
    bytes: Bytes,
    v: serde_json::Map<String, serde_json::Value>,
    models: Vec<String>,
}
#[derive(Debug)]
pub struct PayloadError(String);
impl std::fmt::Display for PayloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for PayloadError {}
impl PayloadError {
    pub fn to_api_error(&self) -> ApiError {
        ApiError::bad_request("invalid_json", self.0.clone())
    }
}
impl From<PayloadError> for ApiError {
    fn from(e: PayloadError) -> Self {
        e.to_api_error()
    }
}
impl ChatRequest {
    pub fn parse(body: Bytes) -> Result<Self, PayloadError> {
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| PayloadError(e.to_string()))?;
        let serde_json::Value::Object(v) = v else {
            return Err(PayloadError("not an object".into()));
        };
        if v.get("model").is_some_and(|m| !m.is_string()) {
            return Err(PayloadError("model".into()));
        }
        let models = match v.get("models") {
            None => vec![],
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|m| {
                    m.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| PayloadError("models".into()))
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(PayloadError("models".into())),
        };
        Ok(Self {
            bytes: body,
            v,
            models,
        })
    }
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
    pub fn model(&self) -> Option<&str> {
        self.v.get("model").and_then(|m| m.as_str())
    }
    pub fn models(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.models.iter().map(String::as_str)
    }
    pub fn has_models(&self) -> bool {
        self.v.contains_key("models")
    }
    pub fn stream(&self) -> bool {
        self.v
            .get("stream")
            .and_then(|s| s.as_bool())
            .unwrap_or(false)
    }
    pub fn splice(&self) -> Splice<'_> {
        Splice {
            req: self,
            model: None,
            remove_models: false,
        }
    }
}
pub struct Splice<'a> {
    req: &'a ChatRequest,
    model: Option<String>,
    remove_models: bool,
}
impl<'a> Splice<'a> {
    pub fn set_model(mut self, m: &str) -> Self {
        self.model = Some(m.to_owned());
        self
    }
    pub fn remove_models(mut self) -> Self {
        self.remove_models = true;
        self
    }
    pub fn is_noop(&self) -> bool {
        self.model.is_none() && !self.remove_models
    }
    pub fn to_bytes(&self) -> Bytes {
        if self.is_noop() {
            return self.req.bytes.clone();
        }
        let mut v = self.req.v.clone();
        if let Some(m) = &self.model {
            v.insert("model".into(), m.clone().into());
        }
        if self.remove_models {
            v.remove("models");
        }
        Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
    }
    pub fn to_segments(&self) -> Segments {
        Segments::from(self.to_bytes())
    }
}
