//! The workload: batch size, prefill (prompt) length and number of decoded tokens.

use crate::error::{Checker, SpecError};
use serde::{Deserialize, Serialize};

/// One inference request shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Sequences processed together.
    pub batch: u64,
    /// Prompt tokens per sequence.
    pub prefill: u64,
    /// Generated tokens per sequence.
    pub decode: u64,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            batch: 1,
            prefill: 512,
            decode: 512,
        }
    }
}

impl Scenario {
    /// Largest batch, prompt or decode length accepted.
    pub const MAX_LEN: u64 = 1 << 20;

    /// Checks ranges; `max_positions` is the model's context limit (`None` for no limit).
    pub fn validate(&self, file: &str, max_positions: Option<u64>) -> Result<(), SpecError> {
        let mut c = Checker::new();
        c.range_u64("scenario.batch", self.batch, 1, 4096);
        c.range_u64("scenario.prefill", self.prefill, 1, Self::MAX_LEN);
        c.range_u64("scenario.decode", self.decode, 0, Self::MAX_LEN);
        if let Some(max) = max_positions {
            let total = self.prefill + self.decode;
            if total > max {
                c.push(
                    "scenario.prefill",
                    format!(
                        "prefill {} + decode {} = {total} tokens exceeds the model's context of {max}",
                        self.prefill, self.decode
                    ),
                    format!("keep prefill + decode <= {max}"),
                );
            }
        }
        c.finish(file)
    }
}
