//! `tessera asm` and `tessera disasm`: between the ISA's text form and its binary program files.

use crate::{inputs, Verbosity};
use anyhow::{Context, Result};
use std::process::ExitCode;
use tessera_spec::isa::{assemble, decode_program, disassemble, encode_program};

/// Arguments of `tessera asm`.
#[derive(Debug, clap::Args)]
pub struct AsmArgs {
    /// Text program to assemble.
    pub input: String,
    /// Binary program to write.
    #[arg(short, long)]
    pub output: String,
}

/// Arguments of `tessera disasm`.
#[derive(Debug, clap::Args)]
pub struct DisasmArgs {
    /// Binary program to disassemble.
    pub input: String,
}

/// Assembles a text program into a binary program file.
pub fn asm(args: &AsmArgs, verbosity: Verbosity) -> Result<ExitCode> {
    let text = inputs::read(&args.input)?;
    let program = assemble(&text).with_context(|| format!("cannot assemble `{}`", args.input))?;
    let bytes =
        encode_program(&program).with_context(|| format!("cannot encode `{}`", args.input))?;
    std::fs::write(&args.output, &bytes)
        .with_context(|| format!("cannot write `{}`", args.output))?;
    if verbosity != Verbosity::Quiet {
        println!(
            "{}: {} instructions, {} bytes of instruction storage",
            args.output,
            program.instructions.len(),
            program.storage_bytes()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the text form of a binary program file.
pub fn disasm(args: &DisasmArgs, _verbosity: Verbosity) -> Result<ExitCode> {
    let bytes =
        std::fs::read(&args.input).with_context(|| format!("cannot read `{}`", args.input))?;
    let program =
        decode_program(&bytes).with_context(|| format!("cannot decode `{}`", args.input))?;
    print!("{}", disassemble(&program));
    Ok(ExitCode::SUCCESS)
}
