//! Reports: renders results for people. Landed so far: sweep results ([`sweep`]: record types,
//! Pareto front, Markdown and CSV). To come: HTML with SVG plots, roofline and breakdown plots,
//! GPU comparison tables. Reads report types only.

pub mod sweep;
