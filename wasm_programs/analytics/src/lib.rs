//! `analytics`: statistics over a text and a list of numbers, as JSON.
//!
//! Input `{"text":T?,"numbers":[f64]?,"top":k?,"compress":bool?}`; the output has a `text`,
//! `numbers` and `lz4` section for each input that asks for it (see README.md). Everything is
//! deterministic: ordered maps only, IEEE arithmetic in a fixed order, a pinned LZ4 encoder.
//! Invalid input yields `{"ok":false,"error":"bad_request","message":"…"}`.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

/// Number of top tokens reported when the request has no `top`.
pub const DEFAULT_TOP: u64 = 5;

onvm_sdk::entry!(handle);

/// The entrypoint's logic: JSON request in, JSON response out.
pub fn handle(input: &[u8]) -> Vec<u8> {
    match serde_json::from_slice::<Request>(input) {
        Ok(req) => to_json(&analyse(&req)),
        Err(e) => to_json(&Error {
            ok: false,
            error: "bad_request",
            message: format!("invalid request: {e}"),
        }),
    }
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|_| {
        br#"{"ok":false,"error":"internal","message":"cannot serialise the response"}"#.to_vec()
    })
}

/// The request.
#[derive(Debug, Default, Deserialize)]
pub struct Request {
    /// Text to analyse.
    pub text: Option<String>,
    /// Numbers to summarise.
    pub numbers: Option<Vec<f64>>,
    /// How many top tokens to report (default 5).
    pub top: Option<u64>,
    /// Whether to LZ4-compress the text (default false).
    pub compress: Option<bool>,
}

#[derive(Serialize)]
struct Error {
    ok: bool,
    error: &'static str,
    message: String,
}

/// The response: one section per input present.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Present when the request has `text`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<TextStats>,
    /// Present when the request has `numbers`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numbers: Option<NumberStats>,
    /// Present when the request has `text` and `"compress":true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lz4: Option<Lz4>,
}

/// Text statistics.
#[derive(Debug, Serialize)]
pub struct TextStats {
    /// UTF-8 length.
    pub bytes: usize,
    /// BLAKE3 of the UTF-8 bytes, lowercase hex.
    pub blake3: String,
    /// Number of tokens.
    pub tokens: u64,
    /// Number of distinct tokens.
    pub unique_tokens: usize,
    /// `[token, count]` pairs: count descending, then token ascending (bytewise).
    pub top_tokens: Vec<(String, u64)>,
}

/// Number statistics; `null` stands for "undefined" (and for a non-finite result).
#[derive(Debug, Serialize)]
pub struct NumberStats {
    /// How many numbers.
    pub count: usize,
    /// Arithmetic mean; `null` when there are no numbers.
    pub mean: Option<f64>,
    /// Sample variance (divides by `count - 1`); `null` when `count < 2`.
    pub variance: Option<f64>,
    /// Smallest number; `null` when there are no numbers.
    pub min: Option<f64>,
    /// Largest number; `null` when there are no numbers.
    pub max: Option<f64>,
}

/// The text compressed as one raw LZ4 block (no frame, no size prefix).
#[derive(Debug, Serialize)]
pub struct Lz4 {
    /// Length of the text, in bytes.
    pub original_size: usize,
    /// Length of the LZ4 block.
    pub compressed_size: usize,
    /// The LZ4 block, standard base64.
    pub compressed_base64: String,
}

/// Computes the report for `req`.
pub fn analyse(req: &Request) -> Report {
    let top = usize::try_from(req.top.unwrap_or(DEFAULT_TOP)).unwrap_or(usize::MAX);
    Report {
        text: req.text.as_deref().map(|t| text_stats(t, top)),
        numbers: req.numbers.as_deref().map(number_stats),
        lz4: match (&req.text, req.compress) {
            (Some(t), Some(true)) => Some(lz4(t)),
            _ => None,
        },
    }
}

/// The tokens of `text`: maximal runs of alphanumeric characters, lowercased.
pub fn tokens(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
}

/// Text statistics with the `top` most frequent tokens.
pub fn text_stats(text: &str, top: usize) -> TextStats {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut total = 0u64;
    for token in tokens(text) {
        *counts.entry(token).or_insert(0) += 1;
        total += 1;
    }
    let unique_tokens = counts.len();
    let mut ranked: Vec<(String, u64)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked.truncate(top);
    TextStats {
        bytes: text.len(),
        blake3: blake3::hash(text.as_bytes()).to_hex().to_string(),
        tokens: total,
        unique_tokens,
        top_tokens: ranked,
    }
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// Count, mean, sample variance, min and max, computed in input order.
pub fn number_stats(numbers: &[f64]) -> NumberStats {
    let count = numbers.len();
    if count == 0 {
        return NumberStats {
            count,
            mean: None,
            variance: None,
            min: None,
            max: None,
        };
    }
    let mut sum = 0.0f64;
    let mut min = numbers[0];
    let mut max = numbers[0];
    for &x in numbers {
        sum += x;
        // Explicit comparisons: the first of equal values (e.g. 0.0 and -0.0) wins on every
        // platform.
        if x < min {
            min = x;
        }
        if x > max {
            max = x;
        }
    }
    let mean = sum / count as f64;
    let variance = (count >= 2).then(|| {
        let squares: f64 = numbers.iter().map(|&x| (x - mean) * (x - mean)).sum();
        squares / (count - 1) as f64
    });
    NumberStats {
        count,
        mean: finite(mean),
        variance: variance.and_then(finite),
        min: Some(min),
        max: Some(max),
    }
}

/// Compresses `text` as one raw LZ4 block.
pub fn lz4(text: &str) -> Lz4 {
    let block = lz4_flex::block::compress(text.as_bytes());
    Lz4 {
        original_size: text.len(),
        compressed_size: block.len(),
        compressed_base64: BASE64.encode(&block),
    }
}

#[cfg(test)]
mod tests;
