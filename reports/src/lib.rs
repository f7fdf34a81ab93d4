//! Reports: will render results (tables, Markdown, CSV, HTML with SVG plots) for single runs and
//! design-space sweeps. Reads report types only.
