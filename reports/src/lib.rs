//! Reports: renders results for people. Sweep results ([`sweep`]: record types, Pareto front,
//! Markdown, CSV and HTML), one run's HTML page ([`run`]), and the SVG plots both use
//! ([`plots`]). Reads report types only.

pub mod html;
pub mod plots;
pub mod run;
pub mod sweep;

/// Decode tokens per second per 1,000 US dollars of price: the cost efficiency runs and sweeps
/// compare. `None` without a price or a decode phase.
pub fn tokens_per_s_per_kusd(tokens_per_s: Option<f64>, price_usd: Option<f64>) -> Option<f64> {
    Some(tokens_per_s? / price_usd? * 1000.0)
}
