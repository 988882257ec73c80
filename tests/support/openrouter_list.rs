//! A synthetic OpenRouter model list (`GET /api/v1/models`), in its documented JSON format,
//! for the catalog-scale benchmarks and tests: generated, not committed data.
//!
//! `openrouter_list(n)` writes `n` priced chat models and, besides them, one entry in fifty
//! without a price and one router with a variable price (`"-1"`), both of which
//! `Catalog::from_openrouter_models_json` leaves out: the catalog holds the `n`. What the real
//! list holds (about 350 models in 2025): windows from 4k to 2M tokens, prices from 0 (the
//! `:free` variants, about one model in eight) to $75 per million completion tokens, a mix of
//! vision, file, audio, video, tools and structured-output support, and an output limit on
//! most. The sequence is a fixed pseudo-random one: the same list on every run.
#![allow(dead_code)]

/// Context windows OpenRouter's list uses, smallest first.
const WINDOWS: [u64; 10] = [
    4_096, 8_192, 32_768, 65_536, 128_000, 131_072, 200_000, 262_144, 1_000_000, 2_000_000,
];
const VENDORS: [&str; 8] = [
    "openai",
    "anthropic",
    "google",
    "meta-llama",
    "mistralai",
    "qwen",
    "deepseek",
    "x-ai",
];

/// What a model may take or support besides text, and how often: an input modality (`true`)
/// or a supported parameter (`false`).
const OPTIONAL: [(bool, &str, f64); 8] = [
    (true, "image", 0.45),
    (true, "file", 0.15),
    (true, "audio", 0.05),
    (true, "video", 0.03),
    (false, "tools", 0.6),
    (false, "tool_choice", 0.6),
    (false, "structured_outputs", 0.4),
    (false, "response_format", 0.5),
];

/// A xorshift generator: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// The JSON of a list with `n` priced chat models (see the module docs).
pub fn openrouter_list(n: usize) -> String {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut data = Vec::with_capacity(n + n / 50 + 1);
    for i in 0..n {
        let vendor = VENDORS[i % VENDORS.len()];
        let free = rng.chance(0.125);
        let id = if free {
            format!("{vendor}/model-{i}:free")
        } else {
            format!("{vendor}/model-{i}")
        };
        // Completion price log-uniform over $0.04..$75 per million; prompt a quarter of it.
        let completion = if free {
            0.0
        } else {
            (0.04f64.ln() + rng.unit() * (75.0f64 / 0.04).ln()).exp()
        };
        let prompt = completion / 4.0;
        let window = WINDOWS[(rng.next() % WINDOWS.len() as u64) as usize];
        let mut inputs = vec!["text"];
        let mut params = vec!["max_tokens", "temperature", "top_p"];
        for &(input, name, p) in &OPTIONAL {
            if rng.chance(p) {
                if input { &mut inputs } else { &mut params }.push(name);
            }
        }
        let max_completion = match rng.next() % 4 {
            0 => serde_json::Value::Null,
            1 => 4_096.into(),
            2 => 16_384.into(),
            _ => 65_536.into(),
        };
        data.push(serde_json::json!({
            "id": id,
            "name": format!("{vendor}: model {i}"),
            "created": 1_700_000_000 + i as u64,
            "context_length": window,
            "architecture": {
                "modality": "text->text",
                "input_modalities": inputs,
                "output_modalities": ["text"],
                "tokenizer": "Other",
            },
            "pricing": {
                "prompt": format!("{:.10}", prompt / 1e6),
                "completion": format!("{:.10}", completion / 1e6),
                "request": "0",
                "image": "0",
            },
            "top_provider": {
                "context_length": window,
                "max_completion_tokens": max_completion,
                "is_moderated": false,
            },
            "supported_parameters": params,
        }));
        if i % 50 == 49 {
            // No price given: left out of the catalog.
            data.push(serde_json::json!({
                "id": format!("{vendor}/unpriced-{i}"),
                "context_length": 128_000,
                "architecture": {"input_modalities": ["text"], "output_modalities": ["text"]},
                "supported_parameters": ["tools"],
            }));
        }
    }
    data.push(serde_json::json!({
        "id": "openrouter/auto",
        "context_length": 2_000_000,
        "pricing": {"prompt": "-1", "completion": "-1"},
        "architecture": {"input_modalities": ["text", "image"], "output_modalities": ["text"]},
    }));
    serde_json::json!({ "data": data }).to_string()
}
