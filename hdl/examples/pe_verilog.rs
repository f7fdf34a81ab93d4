use tessera_hdl::{EngineOptions, EngineParams, MatrixEngine};
fn main() {
    let a = tessera_spec::accel::Accelerator::preset("tiny").unwrap();
    let p = EngineParams::from_accel(&a).unwrap();
    let mut e = MatrixEngine::new(&p, EngineOptions::default());
    println!("{}", tessera_hdl::verilog::emit(&mut e).unwrap());
}
