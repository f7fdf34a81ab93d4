//! Reports: renders results for people. Sweep results ([`sweep`]: record types, Pareto front,
//! Markdown, CSV and HTML), one run's HTML page ([`run`]), and the SVG plots both use
//! ([`plots`]). Reads report types only.

pub mod html;
pub mod plots;
pub mod run;
pub mod sweep;
