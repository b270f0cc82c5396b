//! The model price table (L5): what a call costs, and the most it can cost
//! before it is made (what the budget reserves).
//!
//! Prices are USD per million tokens, held as integer nano-dollars per
//! million tokens so cost arithmetic is exact, like every amount in billing.
//! A model is matched by the longest known prefix of its name (without the
//! provider), so dated snapshots (`gpt-4o-mini-2024-07-18`) price like their
//! family. `CREWMESH_MODEL_PRICES` adds or overrides entries, e.g.
//! `ollama/llama3=0:0,openai/gpt-4o=2.5:10`; a model nobody priced is
//! charged the conservative default, never zero, so an unknown model cannot
//! bypass a budget.

use std::collections::HashMap;

use mesh_kit::wire::{InvalidAmount, parse_usd};

use crate::providers::{TokenUsage, split_model};

pub const PRICES_ENV: &str = "CREWMESH_MODEL_PRICES";

/// Nano-dollars per million input and output tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    pub input: i64,
    pub output: i64,
}

const fn usd(dollars_per_million: f64) -> i64 {
    (dollars_per_million * 1e9) as i64
}

/// Public list prices (USD per million tokens) of common models.
const BUILT_IN: &[(&str, f64, f64)] = &[
    ("gpt-4o-mini", 0.15, 0.60),
    ("gpt-4o", 2.50, 10.00),
    ("gpt-4.1-nano", 0.10, 0.40),
    ("gpt-4.1-mini", 0.40, 1.60),
    ("gpt-4.1", 2.00, 8.00),
    ("gpt-4-turbo", 10.00, 30.00),
    ("gpt-3.5-turbo", 0.50, 1.50),
    ("o3-mini", 1.10, 4.40),
    ("claude-3-5-haiku", 0.80, 4.00),
    ("claude-3-haiku", 0.25, 1.25),
    ("claude-3-5-sonnet", 3.00, 15.00),
    ("claude-3-7-sonnet", 3.00, 15.00),
    ("claude-sonnet-4", 3.00, 15.00),
    ("claude-3-opus", 15.00, 75.00),
    ("claude-opus-4", 15.00, 75.00),
    ("gemini-1.5-flash", 0.075, 0.30),
    ("gemini-1.5-pro", 1.25, 5.00),
    ("gemini-2.0-flash", 0.10, 0.40),
];

/// For models in no table: priced like a large frontier model.
pub const DEFAULT_PRICE: Price = Price {
    input: usd(15.0),
    output: usd(75.0),
};

#[derive(Debug, thiserror::Error)]
pub enum PriceError {
    #[error("{PRICES_ENV}: `{0}` is not `provider/model=input:output` (USD per million tokens)")]
    Malformed(String),
    #[error("{PRICES_ENV}: `{entry}`: {source}")]
    Amount {
        entry: String,
        source: InvalidAmount,
    },
}

#[derive(Debug, Clone)]
pub struct PriceTable {
    /// Model name (no provider) → price, from the built-in list.
    families: Vec<(String, Price)>,
    /// Exact `provider/model` overrides from configuration.
    overrides: HashMap<String, Price>,
}

impl Default for PriceTable {
    fn default() -> PriceTable {
        let mut families: Vec<(String, Price)> = BUILT_IN
            .iter()
            .map(|(name, input, output)| {
                (
                    (*name).to_owned(),
                    Price {
                        input: usd(*input),
                        output: usd(*output),
                    },
                )
            })
            .collect();
        // Longest first, so `gpt-4o-mini` wins over `gpt-4o`.
        families.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
        PriceTable {
            families,
            overrides: HashMap::new(),
        }
    }
}

impl PriceTable {
    /// The built-in table plus `spec` (the `CREWMESH_MODEL_PRICES` format).
    pub fn with_overrides(spec: &str) -> Result<PriceTable, PriceError> {
        let mut table = PriceTable::default();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let malformed = || PriceError::Malformed(entry.to_owned());
            let (model, prices) = entry.split_once('=').ok_or_else(malformed)?;
            let (input, output) = prices.split_once(':').ok_or_else(malformed)?;
            split_model(model.trim()).ok_or_else(malformed)?;
            let amount = |text: &str| {
                parse_usd(text.trim()).map_err(|source| PriceError::Amount {
                    entry: entry.to_owned(),
                    source,
                })
            };
            table.overrides.insert(
                model.trim().to_owned(),
                Price {
                    input: amount(input)?,
                    output: amount(output)?,
                },
            );
        }
        Ok(table)
    }

    /// The price of `model` (`provider/name`).
    pub fn price(&self, model: &str) -> Price {
        if let Some(price) = self.overrides.get(model) {
            return *price;
        }
        let name = split_model(model).map_or(model, |(_, name)| name);
        // OpenRouter-style names carry the vendor: `openai/gpt-4o`.
        let name = name.rsplit('/').next().unwrap_or(name);
        self.families
            .iter()
            .find(|(family, _)| name.starts_with(family.as_str()))
            .map_or(DEFAULT_PRICE, |(_, price)| *price)
    }

    /// What `usage` of `model` costs, in nano-dollars, rounded up so many
    /// small calls never add up to less than they cost.
    pub fn cost(&self, model: &str, usage: TokenUsage) -> i64 {
        let price = self.price(model);
        let nanos = i128::from(usage.prompt_tokens.max(0)) * i128::from(price.input)
            + i128::from(usage.completion_tokens.max(0)) * i128::from(price.output);
        i64::try_from((nanos + 999_999) / 1_000_000).unwrap_or(i64::MAX)
    }

    /// The most a call can cost: its prompt as estimated, plus every token
    /// it may generate. This is what the budget reserves before the call.
    pub fn max_cost(&self, model: &str, prompt_tokens: i64, max_output_tokens: u32) -> i64 {
        self.cost(
            model,
            TokenUsage {
                prompt_tokens,
                completion_tokens: i64::from(max_output_tokens),
            },
        )
    }
}

/// A safe over-estimate of a prompt's tokens before the provider counts them:
/// tokenizers average about four characters of English per token; three
/// leaves room for code, numbers and other languages.
pub fn estimate_tokens(text_chars: usize) -> i64 {
    i64::try_from(text_chars.div_ceil(3)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(prompt: i64, completion: i64) -> TokenUsage {
        TokenUsage {
            prompt_tokens: prompt,
            completion_tokens: completion,
        }
    }

    #[test]
    fn families_match_by_longest_prefix_with_or_without_vendor() {
        let table = PriceTable::default();
        assert_eq!(table.price("openai/gpt-4o-mini").input, 150_000_000);
        assert_eq!(
            table.price("openai/gpt-4o-mini-2024-07-18").output,
            600_000_000
        );
        assert_eq!(table.price("openai/gpt-4o").input, 2_500_000_000);
        assert_eq!(table.price("openrouter/openai/gpt-4o").input, 2_500_000_000);
        assert_eq!(
            table.price("anthropic/claude-3-5-haiku-20241022").output,
            4_000_000_000
        );
        // Nobody priced it: the conservative default, never free.
        assert_eq!(table.price("ollama/llama3"), DEFAULT_PRICE);
    }

    #[test]
    fn costs_are_exact_and_round_up() {
        let table = PriceTable::default();
        // 1,000 in + 500 out of gpt-4o-mini: $0.00015 + $0.0003.
        assert_eq!(table.cost("openai/gpt-4o-mini", usage(1_000, 500)), 450_000);
        assert_eq!(table.cost("openai/gpt-4o-mini", usage(1, 0)), 150);
        // A fraction of a nano-dollar is charged as a whole one.
        let tiny = PriceTable::with_overrides("local/tiny=0.000000001:0").unwrap();
        assert_eq!(tiny.cost("local/tiny", usage(1, 0)), 1);
        assert_eq!(tiny.cost("local/tiny", usage(1_000_001, 0)), 2);
        assert_eq!(table.cost("openai/gpt-4o-mini", usage(0, 0)), 0);
        assert_eq!(table.cost("openai/gpt-4o-mini", usage(-5, 0)), 0);
        assert_eq!(
            table.max_cost("anthropic/claude-3-5-haiku", 2_000, 1_000),
            1_600_000 + 4_000_000
        );
        assert!(table.cost("x/y", usage(i64::MAX, i64::MAX)) == i64::MAX);
    }

    #[test]
    fn configuration_adds_and_overrides_prices() {
        let table = PriceTable::with_overrides(" ollama/llama3=0:0 , openai/gpt-4o=2:8,").unwrap();
        assert_eq!(table.cost("ollama/llama3", usage(10_000, 10_000)), 0);
        assert_eq!(table.price("openai/gpt-4o").output, 8_000_000_000);
        // Overrides are exact: a sibling keeps the built-in price.
        assert_eq!(table.price("openai/gpt-4o-mini").input, 150_000_000);
        for bad in [
            "gpt-4o=1:2",
            "openai/gpt-4o=1",
            "openai/gpt-4o",
            "openai/x=a:1",
        ] {
            assert!(PriceTable::with_overrides(bad).is_err(), "{bad}");
        }
        assert_eq!(estimate_tokens(0), 0);
        assert_eq!(estimate_tokens(10), 4);
    }
}
