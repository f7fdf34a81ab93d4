//! Verilog emission: the design is connected and checked by rust-hdl before any text is written.

use rust_hdl::prelude::*;

/// Why a design could not be emitted.
#[derive(Debug, thiserror::Error)]
#[error("the generated design failed rust-hdl's checks: {0}")]
pub struct DesignCheckError(pub String);

/// Connects `design`, runs rust-hdl's checks (undriven signals, logic loops, writes to inputs)
/// and returns its Verilog with the top module named `top`.
pub fn emit<B: Block>(design: &mut B) -> Result<String, DesignCheckError> {
    design.connect_all();
    check_all(design).map_err(|e| DesignCheckError(format!("{e:?}")))?;
    Ok(generate_verilog(design))
}
