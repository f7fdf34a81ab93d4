use rust_hdl::prelude::*;
use tessera_hdl::{EngineParams, Pe};
fn main() {
    let a = tessera_spec::accel::Accelerator::preset("tiny").unwrap();
    let p = EngineParams::from_accel(&a);
    println!("// {:?}", p);
    let mut pe = Pe::new(&p.unwrap());
    pe.connect_all();
    println!("// check {:?}", check_all(&pe));
    println!("{}", generate_verilog(&pe));
}
