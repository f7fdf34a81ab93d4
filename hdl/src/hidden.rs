//! [`Hidden`]: a block's plain data (sizes, memory contents) kept beside its signals, invisible
//! to rust-hdl's simulator, checks and Verilog generator.

use rust_hdl::prelude::*;
use std::ops::{Deref, DerefMut};

/// Plain data carried in a rust-hdl block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hidden<T>(pub T);

impl<T> Deref for Hidden<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for Hidden<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T> Logic for Hidden<T> {
    fn update(&mut self) {}
}

impl<T> Block for Hidden<T> {
    fn connect_all(&mut self) {}
    fn update_all(&mut self) {}
    fn has_changed(&self) -> bool {
        false
    }
    fn accept(&self, _name: &str, _probe: &mut dyn Probe) {}
}

/// `n` default values: the signal vectors of a block sized at run time.
pub(crate) fn vec_of<T: Default>(n: usize) -> Vec<T> {
    (0..n).map(|_| T::default()).collect()
}
