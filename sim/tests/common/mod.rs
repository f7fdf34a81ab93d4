//! Helpers shared by the simulator's integration tests.

use std::ops::Range;

/// Each KV head's visible key positions (as `tessera_compiler::kv::visible_keys` gives them, in
/// runs) one by one.
pub fn positions(runs: &[Vec<Range<u64>>]) -> Vec<Vec<usize>> {
    runs.iter()
        .map(|head| {
            head.iter()
                .flat_map(|r| r.clone())
                .map(|p| p as usize)
                .collect()
        })
        .collect()
}
